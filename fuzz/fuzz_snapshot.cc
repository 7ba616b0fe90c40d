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

#include "storage/key_table.h"
#include "storage/shard_store.h"
#include "storage/snapshot.h"

namespace {
void Store(fkv::ShardStore& st, fkv::snap::DecodedRecord& rec) {
  uint64_t h = fkv::HashKey(rec.key);
  if (st.Find(rec.key, h, 0) != nullptr) return;
  switch (rec.type) {
    case fkv::ValueType::kString: st.AdoptString(rec.key, h, rec.string_value, rec.expire_at); break;
    case fkv::ValueType::kHash: st.AdoptObject(rec.key, h, rec.type, rec.hash.release(), rec.expire_at); break;
    case fkv::ValueType::kFeature: st.AdoptObject(rec.key, h, rec.type, rec.entity.release(), rec.expire_at); break;
  }
  fkv::Record* r = st.Find(rec.key, h, 0);
  std::string again;
  fkv::snap::EncodeRecord(*r, &again);
  if (r->type == fkv::ValueType::kFeature) r->entity()->Trim(1'795'680'000'000);
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
      if (!fkv::snap::DecodeRecord(d, &rec, &err)) break;
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
  v.records = [&](uint16_t, std::string_view payload, uint32_t count) -> std::string {
    fkv::snap::Dec d(payload);
    for (uint32_t i = 0; i < count; i++) {
      fkv::snap::DecodedRecord rec;
      std::string err;
      if (!fkv::snap::DecodeRecord(d, &rec, &err)) return err;
      Store(st, rec);
    }
    return "";
  };
  (void)fkv::snap::ReadFile(path, v);
  return 0;
}
