// libFuzzer target: the event path. Each input is one JSON event of the demo
// registry's source (conf/features.yaml): decoded, planned for every view,
// and applied to a store, then every feature of the touched entities is
// read back through the store's state. Nothing may crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ingest/event_path.h"
#include "ingest/registry.h"
#include "storage/key_table.h"
#include "storage/shard_store.h"

namespace {
const fkv::Registry& Reg() {
  static auto reg = fkv::Registry::LoadFile(FKV_SOURCE_DIR "/conf/features.yaml");
  return *reg;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Fresh state per input: libFuzzer's leak check compares allocations
  // before and after each run.
  fkv::EventPlanner planner;
  fkv::ShardStore store;
  int64_t now = 1'795'680'000'000;
  const fkv::Registry& reg = Reg();
  std::string_view json(reinterpret_cast<const char*>(data), size);
  fkv::UpdateBatch updates;
  fkv::IngestStats stats;
  planner.Plan(reg, 0, json, now, 60'000, &updates, &stats);
  for (size_t i = 0; i < updates.size(); i++) {
    fkv::ViewUpdate& u = updates[i];
    u.key_hash = fkv::HashKey(updates.key(i));
    fkv::ApplyViewUpdate(store, updates, i, now, nullptr);
    if (fkv::Record* r = store.Find(updates.key(i), u.key_hash, now); r && r->type == fkv::ValueType::kFeature) {
      const fkv::EntityRecord* e = r->entity();
      e->ForEachView([&](const fkv::EntityRecord::View& v) {
        for (size_t i = 0; i < v.layout->aggs.size(); i++)
          if (fkv::IsWindowed(v.layout->aggs[i].kind))
            (void)fkv::MergeTiles(v.layout->aggs[i].kind, e->Section(v, i), INT64_MIN / 2, INT64_MAX / 2);
      });
    }
  }
  store.SweepExpired(now + 86'400'000LL * 30, 64);  // the sweep and Trim on what was applied
  return 0;
}
