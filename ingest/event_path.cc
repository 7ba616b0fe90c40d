// EventPlanner and ApplyViewUpdate: see event_path.h. The rules (docs/architecture.md, "The event path"):
// a bad timestamp rejects the whole event; a bad key or aggregated field
// makes only the views that need it skip the event; an aggregation drops an
// event whose tile can no longer be inside its largest window; an event
// further ahead than max-event-skew is rejected as `future`.
#include "ingest/event_path.h"

#include <algorithm>
#include <cmath>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "storage/shard_store.h"

namespace fkv {

namespace {
void Extract(simdjson::dom::element root, const std::string& path, FieldValue* out) {
  using simdjson::dom::element_type;
  *out = FieldValue{};
  simdjson::dom::element e = root;
  size_t start = 0;
  for (;;) {
    size_t dot = path.find('.', start);
    std::string_view comp(path.data() + start, (dot == std::string::npos ? path.size() : dot) - start);
    simdjson::dom::object obj;
    if (e.get_object().get(obj) != simdjson::SUCCESS) return;  // missing
    if (obj.at_key(comp).get(e) != simdjson::SUCCESS) return;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  switch (e.type()) {
    case element_type::INT64:
      out->kind = ValueKind::kInt;
      out->i = e.get_int64().value_unsafe();
      break;
    case element_type::UINT64:
      out->kind = ValueKind::kDouble;
      out->d = static_cast<double>(e.get_uint64().value_unsafe());
      break;
    case element_type::DOUBLE:
      out->kind = ValueKind::kDouble;
      out->d = e.get_double().value_unsafe();
      break;
    case element_type::STRING:
      out->kind = ValueKind::kString;
      out->s = e.get_string().value_unsafe();
      break;
    case element_type::BOOL:
      out->kind = ValueKind::kBool;
      out->b = e.get_bool().value_unsafe();
      break;
    case element_type::NULL_VALUE:
      out->kind = ValueKind::kNull;
      break;
    default:
      out->kind = ValueKind::kOther;
      break;
  }
}
}  // namespace

void IngestStats::Reject(const std::string& source, const std::string& reason) {
  events_rejected.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lk(mu_);
  reasons_[reason]++;
  by_source_[{source, reason}]++;
}

std::map<std::pair<std::string, std::string>, uint64_t> IngestStats::rejected_by_source() const {
  std::lock_guard lk(mu_);
  return by_source_;
}

void IngestStats::ViewSkip(const std::string& view, const std::string& reason) {
  std::lock_guard lk(mu_);
  view_skips_[view + "_" + reason]++;
}

void IngestStats::Sample(RejectSample s) {
  std::lock_guard lk(mu_);
  if (samples_.size() >= kMaxSamples) return;
  if (s.payload.size() > 512) s.payload.resize(512);
  samples_.push_back(std::move(s));
}

std::vector<RejectSample> IngestStats::samples() const {
  std::lock_guard lk(mu_);
  return samples_;
}

std::map<std::string, uint64_t> IngestStats::rejected_by_reason() const {
  std::lock_guard lk(mu_);
  return reasons_;
}

void IngestStats::ViewsApplied(const std::vector<ViewCount>& counts) {
  if (counts.empty()) return;
  std::lock_guard lk(mu_);
  for (const ViewCount& c : counts) {
    ViewFigures& f = applied_[*c.view];
    f.applied += c.updates;
    f.newest_ts_ms = std::max(f.newest_ts_ms, c.newest_ts_ms);
  }
}

std::map<std::string, IngestStats::ViewFigures> IngestStats::applied_by_view() const {
  std::lock_guard lk(mu_);
  return applied_;
}

std::vector<IngestStatsViewCount> UpdateBatch::CountByView() const {
  std::vector<IngestStatsViewCount> out;
  CountByView(&out);
  return out;
}

void UpdateBatch::CountByView(std::vector<IngestStatsViewCount>* counts) const {
  std::vector<IngestStatsViewCount>& out = *counts;  // a handful of views: a linear search beats a map
  out.clear();
  for (const ViewUpdate& u : updates_) {
    if (u.agg_count == 0) continue;  // a tombstone: no event applied, the view is not fresher
    auto it = std::find_if(out.begin(), out.end(), [&](const IngestStatsViewCount& c) { return c.view == u.view_name; });
    if (it == out.end()) {
      out.push_back({u.view_name, 0, u.ts});
      it = out.end() - 1;
    }
    it->updates++;
    it->newest_ts_ms = std::max(it->newest_ts_ms, u.ts);
  }
}

void IngestStats::JoinMissing(const std::string& view) {
  std::lock_guard lk(mu_);
  join_missing_[view]++;
}

std::map<std::string, uint64_t> IngestStats::join_missing_by_view() const {
  std::lock_guard lk(mu_);
  return join_missing_;
}

std::map<std::string, uint64_t> IngestStats::skipped_by_view() const {
  std::lock_guard lk(mu_);
  return view_skips_;
}

std::string EventPlanner::Plan(const Registry& reg, int src_index, std::string_view json, int64_t now_ms,
                               int64_t max_skew_ms, UpdateBatch* out, IngestStats* stats, const std::vector<char>* views,
                               JoinResolver* joins, const MessageMeta* msg) {
  const SourceDef& src = reg.sources()[static_cast<size_t>(src_index)];
  uncounted_ = false;
  const bool by_message_key = src.table && msg != nullptr && msg->has_key;
  if (src.table && msg != nullptr && msg->tombstone) {
    if (!by_message_key) return "missing_key";
    if (stats) stats->tombstones.fetch_add(1, std::memory_order_relaxed);
    return PlanTombstone(reg, src, msg->key, now_ms, out, views);
  }
  simdjson::dom::element root;
  if (parser_.parse(json.data(), json.size()).get(root) != simdjson::SUCCESS) return "invalid_json";
  if (root.type() != simdjson::dom::element_type::OBJECT) return "not_object";
  slots_.resize(src.slots.size());
  if (joins != nullptr) joins->BeginEvent();
  for (size_t i = 0; i < src.slots.size(); i++) {
    if (src.slots[i][0] == kJoinedSlot) slots_[i] = FieldValue{};  // the view's join fills it
    else Extract(root, src.slots[i], &slots_[i]);
  }
  for (const FieldCheck& c : src.checks) {
    const FieldValue& f = slots_[static_cast<size_t>(c.slot)];
    if (f.kind == ValueKind::kMissing || f.kind == ValueKind::kNull) {
      if (c.required) return "missing_field";
      continue;
    }
    switch (c.type) {
      case FieldType::kInt:
        if (f.kind != ValueKind::kInt) return "bad_type";
        break;
      case FieldType::kFloat:
        if (!f.is_number()) return "bad_type";
        break;
      case FieldType::kString:
        if (f.kind != ValueKind::kString) return "bad_type";
        break;
      case FieldType::kBool:
        if (f.kind != ValueKind::kBool) return "bad_type";
        break;
      case FieldType::kEnum:
        if (f.kind != ValueKind::kString) return "bad_type";
        if (!std::binary_search(c.values.begin(), c.values.end(), f.s)) return "bad_enum";
        break;
    }
  }

  int64_t ts = now_ms;
  if (src.ts_slot >= 0) {
    const FieldValue& t = slots_[static_cast<size_t>(src.ts_slot)];
    if (t.kind == ValueKind::kMissing || t.kind == ValueKind::kNull) return "missing_timestamp";
    if (!t.is_number()) return "bad_timestamp";
    double v = t.as_double();
    double ms = src.ts_unit == TsUnit::kSeconds ? v * 1000 : src.ts_unit == TsUnit::kMicros ? v / 1000 : v;
    if (!std::isfinite(ms) || ms < -9.2e15 || ms > 9.2e15) return "bad_timestamp";
    ts = t.kind == ValueKind::kInt && src.ts_unit == TsUnit::kSeconds ? t.i * 1000
         : t.kind == ValueKind::kInt && src.ts_unit == TsUnit::kMillis ? t.i
                                                                         : static_cast<int64_t>(std::floor(ms));
  }
  if (ts > now_ms + max_skew_ms) {
    if (stats) stats->events_future.fetch_add(1, std::memory_order_relaxed);
    uncounted_ = stats == nullptr;
    return "future";
  }
  if (src.views.empty()) return "";
  std::string first_reason;
  int accepted = 0, taking = 0;
  for (int vi : src.views) {
    if (views != nullptr && !(*views)[static_cast<size_t>(vi)]) continue;
    taking++;
    const ViewDef& v = reg.views()[static_cast<size_t>(vi)];
    const EntityDef* ent = &reg.entities()[static_cast<size_t>(v.entity_index)];
    FieldValue message_key;
    message_key.kind = ValueKind::kString;
    if (by_message_key) message_key.s = msg->key;
    const FieldValue& k = by_message_key ? message_key : slots_[static_cast<size_t>(v.entity_key_slot)];
    std::string reason;
    if (k.kind == ValueKind::kMissing || k.kind == ValueKind::kNull) reason = "missing_key";
    else if (k.kind != ValueKind::kString && k.kind != ValueKind::kInt) reason = "bad_key";
    // This view's inputs go straight into the batch, taken back if it skips the event.
    const size_t agg_mark = out->aggs_.size(), byte_mark = out->bytes_.size();
    uint64_t too_old = 0;
    if (reason.empty()) ResolveJoins(reg, v, joins, stats);
    if (reason.empty()) {
      for (size_t ai = 0; ai < v.aggs.size(); ai++) {
        const AggregationDef& a = v.aggs[ai];
        UpdateBatch::Agg au;
        au.index = static_cast<uint16_t>(ai);
        au.replace = src.table;
        if (a.where && !a.where->Eval(slots_.data())) {
          if (src.table) {  // a table's row is whole: this feature is null in it
            au.clear = true;
            out->aggs_.push_back(au);
          }
          continue;
        }
        const AggKind input = InputKind(a);
        if (a.field_slot >= 0) {
          const FieldValue& f = slots_[static_cast<size_t>(a.field_slot)];
          bool missing = f.kind == ValueKind::kMissing || f.kind == ValueKind::kNull;
          bool numeric = IsNumeric(input);
          if (missing && src.table) {  // a table's message is the whole row: what it lacks is null
            au.clear = true;
            out->aggs_.push_back(au);
            continue;
          }
          if (missing) {
            reason = "missing_field";
            break;
          }
          if (numeric ? !f.is_number() : !f.is_scalar()) {
            reason = "bad_field";
            break;
          }
          if (numeric) {
            au.x = f.as_double();
            if (!std::isfinite(au.x)) {  // (JSON has no infinities; a number past the double range)
              reason = "bad_field";
              break;
            }
          }
          if (input == AggKind::kCountDistinct) {
            std::string_view t = f.s;
            if (f.kind != ValueKind::kString) {
              scratch_.clear();
              f.AppendText(&scratch_);
              t = scratch_;
            }
            au.hash = DistinctHash(XXH3_64bits(t.data(), t.size()));
          }
          if (input == AggKind::kLast || input == AggKind::kLastN) {
            au.text_off = static_cast<uint32_t>(out->bytes_.size());
            f.AppendText(&out->bytes_);
            au.text_len = static_cast<uint32_t>(out->bytes_.size() - au.text_off);
          }
        }
        // (A session input is too old or not by the state it meets: its
        // apply decides. Only last, last_n and sessions have a text.)
        if (IsWindowed(a.kind)) {
          int64_t tile_start = FloorDiv(ts, a.resolution_ms) * a.resolution_ms;
          if (tile_start <= now_ms - a.max_window_ms) {
            too_old++;
            continue;
          }
        }
        out->aggs_.push_back(au);
      }
    }
    if (!reason.empty()) {
      out->aggs_.resize(agg_mark);
      out->bytes_.resize(byte_mark);
      if (stats) stats->ViewSkip(v.name, reason);
      else uncounted_ = true;
      if (first_reason.empty()) first_reason = reason;
      continue;
    }
    accepted++;
    if (too_old && stats) stats->events_too_old.fetch_add(too_old, std::memory_order_relaxed);
    if (too_old && !stats) uncounted_ = true;
    if (out->aggs_.size() == agg_mark) continue;
    ViewUpdate u;
    u.key_off = static_cast<uint32_t>(out->bytes_.size());
    out->bytes_ += ent->name;
    out->bytes_ += ':';
    k.AppendText(&out->bytes_);
    u.key_len = static_cast<uint32_t>(out->bytes_.size() - u.key_off);
    u.agg_begin = static_cast<uint32_t>(agg_mark);
    u.agg_count = static_cast<uint16_t>(out->aggs_.size() - agg_mark);
    u.layout = v.layout_id;
    u.ts = ts;
    u.view_name = &v.name;
    out->updates_.push_back(u);
  }
  if (accepted == 0 && taking > 0) return first_reason;
  return "";
}

std::string EventPlanner::PlanTombstone(const Registry& reg, const SourceDef& src, std::string_view key,
                                        int64_t now_ms, UpdateBatch* out, const std::vector<char>* views) {
  for (int vi : src.views) {
    if (views != nullptr && !(*views)[static_cast<size_t>(vi)]) continue;
    const ViewDef& v = reg.views()[static_cast<size_t>(vi)];
    ViewUpdate u;
    u.key_off = static_cast<uint32_t>(out->bytes_.size());
    out->bytes_ += reg.entities()[static_cast<size_t>(v.entity_index)].name;
    out->bytes_ += ':';
    out->bytes_ += key;
    u.key_len = static_cast<uint32_t>(out->bytes_.size() - u.key_off);
    u.agg_begin = static_cast<uint32_t>(out->aggs_.size());
    u.agg_count = 0;
    u.layout = v.layout_id;
    u.ts = now_ms;
    u.view_name = &v.name;
    out->updates_.push_back(u);
  }
  return "";
}

const JoinValues& BatchJoins::Lookup(const ViewDef&, const JoinDef& j, std::string_view key) {
  auto it = index_.find(std::make_pair(&j, std::string(key)));
  if (it != index_.end()) return collecting ? none_ : requests[it->second].values;
  if (!collecting) return none_;  // (a key the collecting pass did not see: none)
  index_.emplace(std::make_pair(&j, std::string(key)), requests.size());
  requests.push_back(JoinRequest{&j, std::string(key), {}});
  return none_;
}

void EventPlanner::ResolveJoins(const Registry& reg, const ViewDef& v, JoinResolver* joins, IngestStats* stats) {
  for (const JoinDef& j : v.joins) {
    const FieldValue& k = slots_[static_cast<size_t>(j.key_slot)];
    const JoinValues* got = nullptr;
    if (joins != nullptr && (k.kind == ValueKind::kString || k.kind == ValueKind::kInt)) {
      const ViewDef& jv = reg.views()[static_cast<size_t>(j.view)];
      join_key_ = reg.entities()[static_cast<size_t>(jv.entity_index)].name;
      join_key_ += ':';
      k.AppendText(&join_key_);
      got = &joins->Lookup(v, j, join_key_);
    }
    const bool found = got != nullptr && got->found && got->values.size() == j.refs.size();
    for (size_t r = 0; r < j.refs.size(); r++) {
      FieldValue& slot = slots_[static_cast<size_t>(j.refs[r].slot)];
      slot = FieldValue{};
      slot.kind = ValueKind::kNull;
      if (found) slot = got->values[r];
    }
    if (!found) {
      if (stats) stats->JoinMissing(v.name);
      else uncounted_ = true;
    }
  }
}

void UpdateBatch::clear() {
  updates_.clear();
  aggs_.clear();
  bytes_.clear();
}

ShardPlan UpdateBatch::PlanShards(int nshards) {
  ShardPlan plan;
  PlanShards(nshards, &plan);
  return plan;
}

void UpdateBatch::PlanShards(int nshards, ShardPlan* into) {
  into->Rebuild(nshards, size(), [&](size_t i) { return key(i); });
  for (size_t i = 0; i < size(); i++) updates_[i].key_hash = into->hash(i);
}

void UpdateBatch::AddText(std::string_view key, uint64_t key_hash, uint16_t layout, int64_t ts,
                          const std::string* view_name, uint16_t agg_index, std::string_view text, bool replace) {
  ViewUpdate u;
  u.key_hash = key_hash;
  u.ts = ts;
  u.layout = layout;
  u.view_name = view_name;
  u.key_off = static_cast<uint32_t>(bytes_.size());
  u.key_len = static_cast<uint32_t>(key.size());
  bytes_ += key;
  Agg a;
  a.index = agg_index;
  a.replace = replace;
  a.text_off = static_cast<uint32_t>(bytes_.size());
  a.text_len = static_cast<uint32_t>(text.size());
  bytes_ += text;
  u.agg_begin = static_cast<uint32_t>(aggs_.size());
  u.agg_count = 1;
  aggs_.push_back(a);
  updates_.push_back(u);
}

void PrefetchAhead(const ShardStore& store, const UpdateBatch& batch, std::span<const uint32_t> keys, size_t k) {
  store.PrefetchAhead(k, keys.size(), [&](size_t i) { return batch[keys[i]].key_hash; });
}

bool ApplyViewUpdate(ShardStore& store, const UpdateBatch& batch, size_t i, int64_t now_ms, IngestStats* stats) {
  const ViewUpdate& u = batch[i];
  if (u.agg_count == 0) {  // a tombstone
    Record* rec = store.Find(batch.key(i), u.key_hash, now_ms);
    if (rec == nullptr) return true;
    if (rec->type != ValueType::kFeature) return false;
    EntityRecord* e = rec->entity();
    EntityRecord::View v;
    if (!e->FindView(LayoutAt(u.layout).view_id, &v)) return true;
    EntityDropView(&e, v.offset);
    EntityShrink(&e);
    rec->set_object(e);
    store.SyncEntity(batch.key(i), u.key_hash, now_ms);
    return true;
  }
  Record* rec = store.GetOrCreateEntityRecord(batch.key(i), u.key_hash, now_ms, LayoutAt(u.layout).ttl_ms > 0);
  if (rec == nullptr) return false;
  thread_local std::vector<AggInput> in;
  auto aggs = batch.aggs(i);
  in.resize(aggs.size());
  for (size_t j = 0; j < aggs.size(); j++) {
    in[j].index = aggs[j].index;
    in[j].x = aggs[j].x;
    in[j].hash = aggs[j].hash;
    in[j].text = batch.text(aggs[j]);
    in[j].replace = aggs[j].replace;
    in[j].clear = aggs[j].clear;
  }
  EntityRecord* e = rec->entity();
  const size_t too_old = EntityApply(&e, u.layout, u.ts, now_ms, in.data(), in.size());
  if (too_old && stats) stats->events_too_old.fetch_add(too_old, std::memory_order_relaxed);
  // A table's row that cleared every feature is a deletion, at once (the
  // sweep would drop the empty view later, so reads would depend on when).
  const bool cleared = std::any_of(aggs.begin(), aggs.end(), [](const UpdateBatch::Agg& a) { return a.clear; });
  if (cleared && EntityDropViewIfEmpty(&e, LayoutAt(u.layout).view_id)) {
    rec->set_object(e);
    store.SyncEntity(batch.key(i), u.key_hash, now_ms);
    return true;
  }
  rec->set_object(e);
  store.UpdateEntityExpiry(rec, u.key_hash, now_ms);
  return true;
}

}  // namespace fkv
