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
#include "storage/shard_plan.h"

namespace fkv {

class ShardStore;

// How many updates of a batch went to one view, and their newest event time.
struct IngestStatsViewCount {
  const std::string* view = nullptr;
  uint64_t updates = 0;
  int64_t newest_ts_ms = 0;
};

// Everything one view does with one event, ready to apply on the key's
// shard: a header in an UpdateBatch, whose key bytes and aggregation inputs
// live in the batch's flat arrays.
// (An update without aggregation inputs is a table's tombstone: it deletes
// the view's state of the entity, docs/architecture.md "Table sources".)
struct ViewUpdate {
  uint64_t key_hash = 0;
  int64_t ts = 0;           // event time, ms
  uint32_t key_off = 0;     // the key ("user:42") in the batch's bytes
  uint32_t agg_begin = 0;   // aggregation inputs [agg_begin, agg_begin + agg_count) of the batch
  uint32_t key_len = 0;
  uint16_t agg_count = 0;
  uint16_t layout = 0;      // the view's layout (ViewDef::layout_id)
  const std::string* view_name = nullptr;  // in the registry, for per-view counters
};

// The updates of a batch of events (one FEVENT, one Kafka batch, one FSET)
// in three flat arrays, so planning allocates nothing per event and a batch
// is freed in three calls.
class UpdateBatch {
 public:
  size_t size() const { return updates_.size(); }
  // The bytes its buffers hold (capacity), for callers that reuse a batch.
  size_t footprint() const {
    return bytes_.capacity() + updates_.capacity() * sizeof(ViewUpdate) + aggs_.capacity() * sizeof(Agg);
  }
  bool empty() const { return updates_.empty(); }
  ViewUpdate& operator[](size_t i) { return updates_[i]; }
  const ViewUpdate& operator[](size_t i) const { return updates_[i]; }
  std::string_view key(size_t i) const { return Bytes(updates_[i].key_off, updates_[i].key_len); }
  // One aggregation's share of update i.
  struct Agg {
    uint16_t index = 0;    // the aggregation's place in its view (and in the view's layout)
    bool replace = false;  // a table's last: replaces the value whatever its time (latest by offset)
    bool clear = false;    // a table's last whose field is absent or null: the value goes
    uint32_t hash = 0;     // count_distinct: DistinctHash of the value's text
    double x = 0;          // sum, min, max, mean, stddev
    uint32_t text_off = 0; // last, last_n: the value's text in the bytes
    uint32_t text_len = 0;
  };
  std::span<const Agg> aggs(size_t i) const { return {aggs_.data() + updates_[i].agg_begin, updates_[i].agg_count}; }
  std::string_view text(const Agg& a) const { return Bytes(a.text_off, a.text_len); }
  void clear();
  // Keeps, of the updates from `from` on, those whose key `keep` says yes
  // to, in order (their bytes and inputs stay in the arrays, unused).
  template <class Keep>
  void KeepFrom(size_t from, Keep&& keep) {
    size_t out = from;
    for (size_t i = from; i < updates_.size(); i++)
      if (keep(key(i))) updates_[out++] = updates_[i];
    updates_.resize(out);
  }
  // Groups the updates by shard and sets each one's key_hash from the plan.
  ShardPlan PlanShards(int nshards);
  void PlanShards(int nshards, ShardPlan* into);  // the same into a plan kept for reuse
  // The updates by view (in order of first appearance), for IngestStats::ViewsApplied.
  std::vector<IngestStatsViewCount> CountByView() const;
  void CountByView(std::vector<IngestStatsViewCount>* out) const;  // into a vector kept for reuse
  // Appends an update of one aggregation with a text value (FSET;
  // `replace` for a table's view: the value wins whatever its time).
  void AddText(std::string_view key, uint64_t key_hash, uint16_t layout, int64_t ts, const std::string* view_name,
               uint16_t agg_index, std::string_view text, bool replace = false);

 private:
  friend class EventPlanner;
  std::string_view Bytes(uint32_t off, uint32_t n) const { return {bytes_.data() + off, n}; }
  std::vector<ViewUpdate> updates_;
  std::vector<Agg> aggs_;
  std::string bytes_;
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
  std::atomic<uint64_t> tombstones{0};      // table tombstones taken (each deletes its entity's views)
  // Applied view updates by view: how many, and the newest event time
  // (the /metrics families events_applied_total{view} and view freshness).
  using ViewCount = IngestStatsViewCount;
  struct ViewFigures {
    uint64_t applied = 0;
    int64_t newest_ts_ms = 0;
  };
  void ViewsApplied(const std::vector<ViewCount>& counts);
  std::map<std::string, ViewFigures> applied_by_view() const;
  // A whole event rejected; `source` is the registry source (or, for a
  // message of a topic no source reads, the topic).
  void Reject(const std::string& source, const std::string& reason);
  std::map<std::pair<std::string, std::string>, uint64_t> rejected_by_source() const;  // (source, reason)
  void ViewSkip(const std::string& view, const std::string& reason);  // one view skipped the event
  // A view's join found no entity (or the event had no usable key): its
  // joined features were null for the event.
  void JoinMissing(const std::string& view);
  std::map<std::string, uint64_t> join_missing_by_view() const;
  std::map<std::string, uint64_t> rejected_by_reason() const;
  std::map<std::string, uint64_t> skipped_by_view() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> reasons_, view_skips_, join_missing_;
  std::map<std::string, ViewFigures> applied_;
  std::map<std::pair<std::string, std::string>, uint64_t> by_source_;
  std::vector<RejectSample> samples_;
};

// The values of one joined entity's features (JoinDef::refs order) for the
// planner; strings point into `text`.
struct JoinValues {
  bool found = false;  // false: the entity is missing (every value null)
  std::vector<FieldValue> values;
  std::vector<std::string> text;
  void Clear() {
    found = false;
    values.clear();
    text.clear();
  }
};

// Join lookups (docs/architecture.md, "Joins"): what the planner asks for
// the current values of a view's joined features. Per thread.
class JoinResolver {
 public:
  virtual ~JoinResolver() = default;
  // A new event: what earlier lookups returned may go.
  virtual void BeginEvent() {}
  // Join j of view v, for the joined entity `key` ("product:7"). The
  // result stays valid until the Plan call returns.
  virtual const JoinValues& Lookup(const ViewDef& v, const JoinDef& j, std::string_view key) = 0;
};

// One joined entity a batch of events needs (BatchJoins).
struct JoinRequest {
  const JoinDef* join = nullptr;
  std::string key;  // "product:7"
  JoinValues values;
};

// The lookups of a batch of events done in one round (the Kafka ingest,
// docs/architecture.md, "Joins"): planned once collecting, every distinct
// (join, key) goes in `requests`; once they hold the values, planned again
// answering from them.
class BatchJoins : public JoinResolver {
 public:
  bool collecting = true;
  std::vector<JoinRequest> requests;
  const JoinValues& Lookup(const ViewDef& v, const JoinDef& j, std::string_view key) override;
  void Clear() {
    collecting = true;
    requests.clear();
    index_.clear();
  }

 private:
  std::map<std::pair<const JoinDef*, std::string>, size_t, std::less<>> index_;
  JoinValues none_;
};

// What a Kafka message adds to its JSON value, for a table source: its key
// (the entity's id) and whether it is a tombstone (no value).
struct MessageMeta {
  std::string_view key;
  bool has_key = false;
  bool tombstone = false;
};

class EventPlanner {
 public:
  // Decodes one JSON event of source `src` and appends the updates of its
  // views to *out. Returns "" when at least one view accepted it (or the
  // source feeds no view), else the reason it was rejected: invalid_json,
  // not_object, a typed source's bad_type / bad_enum / missing_field,
  // missing_timestamp, bad_timestamp, future, missing_key, bad_key,
  // missing_field, bad_field.
  // `views`: when given, only the views i with views[i] != 0 take the event
  // (the others are as if absent: a held backfill view, or the views a
  // replay fills). `joins` looks up the joined features of views with
  // joins (null: every joined entity is missing). `msg`: the Kafka
  // message's key and tombstone flag, which only a table source reads
  // (its entity key is the message key when there is one; a tombstone
  // plans a deletion per view, or missing_key without a key).
  std::string Plan(const Registry& reg, int src, std::string_view json, int64_t now_ms, int64_t max_skew_ms,
                   UpdateBatch* out, IngestStats* stats, const std::vector<char>* views = nullptr,
                   JoinResolver* joins = nullptr, const MessageMeta* msg = nullptr);
  // After a Plan with stats == nullptr: true when it would have counted
  // something (a future event, a view that skipped it, too-old inputs).
  bool uncounted() const { return uncounted_; }

 private:
  // Fills the joined slots of view v (null where the entity is missing).
  void ResolveJoins(const Registry& reg, const ViewDef& v, JoinResolver* joins, IngestStats* stats);
  // A table's tombstone: a deletion of the entity `key` per view taking it.
  std::string PlanTombstone(const Registry& reg, const SourceDef& src, std::string_view key, int64_t now_ms,
                            UpdateBatch* out, const std::vector<char>* views);
  bool uncounted_ = false;
  simdjson::dom::parser parser_;
  std::vector<FieldValue> slots_;
  std::string join_key_;
  std::string scratch_;  // the text of a non-string distinct value
};

// Applies update i of the batch to the shard's store (a tombstone deletes
// the view's state, and the key when no view is left). Returns false when
// the key holds a non-entity value (the update is dropped and counted
// `wrongtype`).
// Session inputs too old for the sessions they meet count in
// stats->events_too_old (stats may be null: not counted).
bool ApplyViewUpdate(ShardStore& store, const UpdateBatch& batch, size_t i, int64_t now_ms, IngestStats* stats);
// Before applying batch[keys[k]]: prefetches the table slots, records and
// entity blocks of the updates a few places ahead, so the cache misses of
// a batch overlap instead of following one another.
void PrefetchAhead(const ShardStore& store, const UpdateBatch& batch, std::span<const uint32_t> keys, size_t k);

}  // namespace fkv
