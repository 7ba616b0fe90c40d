// libFuzzer target: the snapshot loader. The first byte picks the way in:
// even, the whole file reader (magic, version, frames, checksums, sections,
// footer) with every record decoded into a store, as the server loads;
// odd, the record decoder on its own, past the checksums that would
// otherwise stop almost every mutation before it. Nothing may crash, and a
// record that decodes must be storable and re-encodable.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "storage/entity.h"
#include "storage/key_table.h"
#include "storage/quantile.h"
#include "storage/shard_store.h"
#include "storage/snapshot.h"

namespace {
void Store(fkv::ShardStore& st, fkv::snap::DecodedRecord& rec) {
  uint64_t h = fkv::HashKey(rec.key);
  if (st.Find(rec.key, h, 0) != nullptr) return;
  fkv::snap::Adopt(st, rec, h);
  fkv::Record* r = st.Find(rec.key, h, 0);
  std::string again;
  fkv::snap::EncodeRecord(*r, &again);
  if (r->type != fkv::ValueType::kFeature) return;
  // Every read of every section, then an event on top and a trim.
  const fkv::EntityRecord* e = r->entity();
  e->ForEachView([&](const fkv::EntityRecord::View& v) {
    for (size_t i = 0; i < v.layout->aggs.size(); i++) {
      fkv::AggKind k = v.layout->aggs[i].kind;
      std::string_view sec = e->Section(v, i);
      if (k == fkv::AggKind::kCountDistinct) {
        (void)fkv::CountDistinct(sec, INT64_MIN / 4, INT64_MAX / 4);
      } else if (k == fkv::AggKind::kQuantile) {
        fkv::dds::Sketch sk;
        fkv::MergeQuantileTiles(sec, INT64_MIN / 4, INT64_MAX / 4, &sk);
        double q;
        for (double at : {0.0, 0.5, 0.99, 1.0}) (void)sk.Quantile(at, &q);
      } else if (k == fkv::AggKind::kSession) {
        fkv::ForEachSession(sec, [](const fkv::SessionView& s) {
          char buf[21];
          if (s.op == fkv::AggKind::kCountDistinct) (void)fkv::DistinctValueCount(s.value);
          if (s.op == fkv::AggKind::kLast) (void)fkv::LastValueText(s.value, buf);
          return true;
        });
      } else if (fkv::IsWindowed(k)) {
        (void)fkv::MergeTiles(k, sec, INT64_MIN / 4, INT64_MAX / 4);
      } else {
        fkv::ForEachLastItem(sec, [](int64_t, std::string_view) {});
      }
    }
  });
  // An event to every view, now and (the out-of-order paths) 5 hours back.
  fkv::EntityRecord* m = r->entity();
  std::vector<uint16_t> ids;
  m->ForEachView([&](const fkv::EntityRecord::View& v) { ids.push_back(v.layout_id); });
  const int64_t now = 1'795'680'000'000;
  for (uint16_t id : ids) {
    std::vector<fkv::AggInput> in(fkv::LayoutAt(id).aggs.size());
    for (size_t i = 0; i < in.size(); i++) {
      in[i].index = static_cast<uint16_t>(i);
      in[i].x = 1.5;
      in[i].hash = static_cast<uint32_t>(i * 2654435761u);
      in[i].text = "v";
    }
    for (int64_t ts : {now, now - 5 * 3'600'000})
      fkv::EntityApply(&m, id, ts, now, in.data(), in.size());
  }
  fkv::EntityTrim(&m, now);
  r->set_object(m);
}

// The layouts the record mode's blocks may name (ids 1..n map to themselves
// when this process interned them first, as it does here).
const fkv::snap::LayoutMap& Layouts() {
  static fkv::snap::LayoutMap map = [] {
    fkv::snap::LayoutMap m(fkv::kMaxLayouts + 1, 0);
    fkv::ViewLayout all;
    all.view_id = 1;
    all.ttl_ms = 3'600'000;
    uint64_t sig = 100;
    for (fkv::AggKind k : {fkv::AggKind::kCount, fkv::AggKind::kSum, fkv::AggKind::kMin, fkv::AggKind::kMax,
                           fkv::AggKind::kMean, fkv::AggKind::kStddev, fkv::AggKind::kCountDistinct,
                           fkv::AggKind::kLast, fkv::AggKind::kLastN, fkv::AggKind::kQuantile})
      all.aggs.push_back(fkv::AggSpec{k, sig++, fkv::IsWindowed(k) ? 1000 : 0, fkv::IsWindowed(k) ? 3'600'000 : 0,
                                      k == fkv::AggKind::kLastN ? 5 : 0});
    fkv::ViewLayout small{2, 0, {fkv::AggSpec{fkv::AggKind::kCount, 7, 60'000, 86'400'000, 0}}};
    // Session aggregations (layout 3): each operation, a 30 min gap,
    // sessions_24h.
    fkv::ViewLayout sessions{3, 0, {}};
    for (fkv::AggKind op : {fkv::AggKind::kCount, fkv::AggKind::kSum, fkv::AggKind::kMin, fkv::AggKind::kMax,
                            fkv::AggKind::kMean, fkv::AggKind::kCountDistinct, fkv::AggKind::kLast})
      sessions.aggs.push_back(fkv::AggSpec{fkv::AggKind::kSession, sig++, 1'800'000, 86'400'000, static_cast<int>(op)});
    for (const fkv::ViewLayout* l : {&all, &small, &sessions}) {
      uint16_t id = fkv::InternLayout(*l);
      m[id] = id;
    }
    return m;
  }();
  return map;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  fkv::ShardStore st;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    fkv::snap::Dec d(in);
    for (int i = 0; i < 64 && !d.done(); i++) {
      fkv::snap::DecodedRecord rec;
      std::string err;
      if (!fkv::snap::DecodeRecord(d, Layouts(), &rec, &err)) break;
      Store(st, rec);
    }
    return 0;
  }
  static std::string path = "/tmp/fkv-fuzz-snapshot-" + std::to_string(getpid());
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(in.data(), 1, in.size(), f);
  std::fclose(f);
  fkv::snap::Visitor v;
  v.records = [&](uint16_t, std::string_view payload, uint32_t count, const fkv::snap::LayoutMap& layouts) -> std::string {
    fkv::snap::Dec d(payload);
    for (uint32_t i = 0; i < count; i++) {
      fkv::snap::DecodedRecord rec;
      std::string err;
      if (!fkv::snap::DecodeRecord(d, layouts, &rec, &err)) return err;
      Store(st, rec);
    }
    return "";
  };
  (void)fkv::snap::ReadFile(path, v);
  return 0;
}
