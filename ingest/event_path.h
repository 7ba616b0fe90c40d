// The event path: one decoded event of a source -> the updates of every view
// it feeds (entity key, event time, values per aggregation), then applied on
// the shard owning each entity key. FEVENT uses it, and so will the Kafka
// ingest thread. EventPlanner is per thread (it owns a simdjson parser);
// ApplyViewUpdate runs on the owning shard's thread.
#pragma once

#include <simdjson.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/field_value.h"
#include "ingest/registry.h"

namespace fkv {

class ShardStore;

// One aggregation's share of an event: `index` is the aggregation's place
// in its view (and in the view's layout, storage/entity.h).
struct AggUpdate {
  uint16_t index = 0;
  double x = 0;        // numeric value (sum, min, max, mean, stddev)
  uint32_t hash = 0;   // value hash (count_distinct, DistinctHash)
  std::string text;    // value text (last, last_n)
};

// Everything one view does with one event, ready to apply on the key's shard.
struct ViewUpdate {
  std::string key;  // "user:42"
  uint64_t key_hash = 0;
  uint16_t layout = 0;  // the view's layout (ViewDef::layout_id)
  int64_t ts = 0;       // event time, ms
  std::vector<AggUpdate> aggs;
  const std::string* view_name = nullptr;  // in the registry, for per-view counters
};

// One rejected event kept for FINGEST ERRORS.
struct RejectSample {
  std::string reason, origin;  // origin: "FEVENT <source>" or "<topic>/<partition>@<offset>"
  int64_t time_ms = 0;
  std::string payload;  // the first 512 bytes
};

// Counters of the event path, shown by INFO ingest. Thread-safe.
class IngestStats {
 public:
  static constexpr size_t kMaxSamples = 32;  // the first rejected events are kept
  void Sample(RejectSample s);
  std::vector<RejectSample> samples() const;
  std::atomic<uint64_t> events_applied{0};
  std::atomic<uint64_t> events_rejected{0};
  std::atomic<uint64_t> events_too_old{0};   // (event, aggregation) pairs dropped as too old
  std::atomic<uint64_t> events_future{0};
  void Reject(const std::string& reason);          // whole event
  void ViewSkip(const std::string& view, const std::string& reason);  // one view skipped the event
  std::map<std::string, uint64_t> rejected_by_reason() const;
  std::map<std::string, uint64_t> skipped_by_view() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> reasons_, view_skips_;
  std::vector<RejectSample> samples_;
};

class EventPlanner {
 public:
  // Decodes one JSON event of source `src` and appends the updates of its
  // views to *out. Returns "" when at least one view accepted it (or the
  // source feeds no view), else the reason it was rejected: invalid_json,
  // not_object, missing_timestamp, bad_timestamp, future, missing_key,
  // bad_key, missing_field, bad_field.
  std::string Plan(const Registry& reg, int src, std::string_view json, int64_t now_ms, int64_t max_skew_ms,
                   std::vector<ViewUpdate>* out, IngestStats* stats);

 private:
  simdjson::dom::parser parser_;
  std::vector<FieldValue> slots_;
};

// Applies one view update to the shard's store. Returns false when the key
// holds a non-entity value (the update is dropped and counted `wrongtype`).
bool ApplyViewUpdate(ShardStore& store, const ViewUpdate& u, int64_t now_ms);
// Before applying updates[keys[k]] of a batch: prefetches the table slots,
// records and entity blocks of the updates a few places ahead, so the
// cache misses of a batch overlap instead of following one another.
void PrefetchAhead(const ShardStore& store, const std::vector<ViewUpdate>& updates, std::span<const uint32_t> keys,
                   size_t k);

}  // namespace fkv
