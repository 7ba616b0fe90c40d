// Feature commands: FGET FMGET FWINDOW FSET FEVENT FVIEWS FINFO FREGISTRY.
// Reads run on the shard owning the entity key with that shard's registry;
// FMGET and FEVENT fan out to the shards of their keys in parallel. Window
// rule (docs/architecture.md, "Tiles and the window rule"): a window of length W at time T covers the tiles whose
// start s satisfies T - W < s <= T.
#include <strings.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>

#include "ingest/duration.h"
#include "ingest/event_path.h"
#include "ingest/kafka_ingest.h"
#include "ingest/registry.h"
#include "server/command.h"
#include "server/connection.h"
#include "server/feature_values.h"
#include "server/joins.h"
#include "server/cluster.h"
#include "server/cluster_log.h"
#include "server/peer_client.h"
#include "server/server.h"
#include "server/transaction.h"
#include "storage/entity.h"
#include "storage/key_table.h"
#include "storage/shard_store.h"

namespace fkv {

namespace {

std::shared_ptr<const Registry> RegOf(CommandContext& c) { return c.server->shards().shard(c.shard).registry; }


// Strips a trailing "<word> <integer>" option (AT ts, TS ts). Returns false
// with the error written when the value is not an integer.
bool TrailingInt(CommandContext& c, size_t* end, std::string_view word, size_t min_end, int64_t* value, bool* present) {
  *present = false;
  if (*end >= min_end + 2 && EqualsNoCase(c.args[*end - 2], word)) {
    if (!ParseI64(c.args[*end - 1], value)) {
      c.out.Error("ERR " + std::string(word) + " needs a Unix time in milliseconds");
      return false;
    }
    *present = true;
    *end -= 2;
  }
  return true;
}

// One status type on the request path: renders a failed OpStatus.
void WriteStatus(ReplyWriter& out, OpStatus s) {
  switch (s) {
    case OpStatus::kOk: return;
    case OpStatus::kWrongType: return out.Error(kErrWrongType);
  }
}

// FGET key [feature ...] [AT ts]
void FGet(CommandContext& c) {
  auto reg = RegOf(c);
  size_t end = c.args.size();
  int64_t at = 0;
  bool has_at;
  if (!TrailingInt(c, &end, "AT", 2, &at, &has_at)) return;
  int64_t t = has_at ? at : c.now_ms;
  std::string_view ent = EntityTypeOf(c.args[1]);
  thread_local std::vector<FeatureValue> values;
  if (end == 2) {  // every feature, as a map
    auto feats = reg->FeaturesOf(ent);
    const EntityRecord* e;
    if (OpStatus s = EntityAt(*c.store, c.args[1], c.key_hash, c.now_ms, &e); s != OpStatus::kOk) return WriteStatus(c.out, s);
    if (e == nullptr) return c.out.Map(0);
    std::vector<FeatureRef> all;
    for (auto& [name, f] : feats) all.push_back(f);
    ReadEntityFeatures(*reg, e, all, t, c.now_ms, has_at, &values);
    c.out.Map(feats.size());
    for (size_t i = 0; i < feats.size(); i++) {
      c.out.Bulk(feats[i].first);
      RenderFeatureValue(c.out, values[i]);
    }
    return;
  }
  // Clients repeat the same feature list: the last one resolved on this
  // thread is kept with its registry and reused when the names match.
  struct Resolved {
    std::shared_ptr<const Registry> reg;
    std::string ent;
    std::vector<std::string> names;
    std::vector<FeatureRef> refs;
  };
  thread_local Resolved last;
  bool same = last.reg == reg && last.ent == ent && last.names.size() == end - 2;
  for (size_t i = 2; same && i < end; i++) same = last.names[i - 2] == c.args[i];
  if (!same) {
    last.reg = nullptr;  // until every name resolved
    last.refs.clear();
    for (size_t i = 2; i < end; i++) {
      FeatureRef f;
      std::string err;
      if (!reg->ResolveFeature(ent, c.args[i], &f, &err)) return c.out.Error(err);
      last.refs.push_back(f);
    }
    last.names.assign(c.args.begin() + 2, c.args.begin() + static_cast<std::ptrdiff_t>(end));
    last.ent.assign(ent);
    last.reg = reg;
  }
  const std::vector<FeatureRef>& refs = last.refs;
  OpStatus s = ReadFeatures(*c.store, *reg, c.args[1], c.key_hash, refs, t, c.now_ms, has_at, &values);
  if (s != OpStatus::kOk) return WriteStatus(c.out, s);
  c.out.Array(refs.size());
  for (size_t i = 0; i < refs.size(); i++) RenderFeatureValue(c.out, values[i]);
}

// FMGET's keys: args[1, the first FEATURES after the first key), or -1.
int FmgetKeysEnd(const ArgList& args) {
  for (size_t i = 2; i < args.size(); i++)
    if (EqualsNoCase(args[i], "FEATURES")) return static_cast<int>(i);
  return -1;
}

// FMGET's request: each key's reply is rendered on its shard (or comes
// from its owner node, cluster mode) and the replies are joined in order.
struct FmgetItem {
  std::string_view key;
  const std::vector<FeatureRef>* feats;  // in FmgetRequest::by_entity
  std::string reply;
};
struct FmgetRequest {
  std::map<std::string, std::vector<FeatureRef>, std::less<>> by_entity;
  std::vector<FmgetItem> items;
  std::shared_ptr<const Registry> reg;
  int proto = 2;
  int64_t now = 0, t = 0;
  bool has_at = false;
  // Cluster mode's fan-out: what is still due, and the first error.
  std::atomic<size_t> pending{0};
  std::string error;  // on the origin shard's thread only
};

// On a shard: the replies of the items the plan puts there (plan index k is
// item items_of[k], or k without items_of).
void ReadFmgetItems(FmgetRequest& req, const ShardPlan& plan, const std::vector<size_t>* items_of, ShardStore& st,
                    std::span<const uint32_t> keys) {
  for (size_t k = 0; k < keys.size(); k++) {
    st.PrefetchAhead(k, keys.size(), [&](size_t j) { return plan.hash(keys[j]); });
    FmgetItem& it = req.items[items_of != nullptr ? (*items_of)[keys[k]] : keys[k]];
    ReplyWriter w(&it.reply, req.proto);
    thread_local std::vector<FeatureValue> values;
    OpStatus s = ReadFeatures(st, *req.reg, it.key, plan.hash(keys[k]), *it.feats, req.t, req.now, req.has_at, &values);
    if (s != OpStatus::kOk) {
      WriteStatus(w, s);
      continue;
    }
    w.Array(it.feats->size());
    for (size_t f = 0; f < it.feats->size(); f++) RenderFeatureValue(w, values[f]);
  }
}

void WriteFmgetReply(const FmgetRequest& req, ReplyWriter& out) {
  if (!req.error.empty()) return out.Error(req.error);
  out.Array(req.items.size());
  for (const FmgetItem& it : req.items) out.buffer()->append(it.reply);
}

// Cluster mode (docs/architecture.md, "Cluster mode"): the keys other nodes
// own go to them, one FMGET per node over this shard's peer connections,
// while this node's keys are read on its shards; one reply, in order. A
// node's error (its map moved on: TRYAGAIN, MOVED) or an unreachable node
// fails the whole command with that error, and the client retries.
void FMGetFanOut(CommandContext& c, std::shared_ptr<FmgetRequest> req, std::vector<size_t> local,
                 std::map<const ClusterNode*, std::vector<size_t>> remote, std::span<const std::string_view> features) {
  if (ShardSet::inline_posts()) return c.out.Error("ERR FMGET inside MULTI reads this node's slots only");
  ShardSet& set = c.server->shards();
  auto local_of = std::make_shared<const std::vector<size_t>>(std::move(local));
  auto plan = std::make_shared<const ShardPlan>(ShardPlan::Build(
      set.size(), local_of->size(), [&](size_t k) { return req->items[(*local_of)[k]].key; }));
  req->pending.store(plan->shards().size() + remote.size());
  auto reply = c.Defer();
  auto one_done = [req, reply] {
    if (req->pending.fetch_sub(1, std::memory_order_acq_rel) == 1)
      reply([req](ReplyWriter& out) { WriteFmgetReply(*req, out); });
  };
  PeerClients& peers = *set.shard(c.shard).peers;
  for (auto& [node, idx] : remote) {
    std::vector<std::string_view> args{"FMGET"};
    for (size_t i : idx) args.push_back(req->items[i].key);
    args.push_back("FEATURES");
    args.insert(args.end(), features.begin(), features.end());
    const std::string at = std::to_string(req->t);
    if (req->has_at) args.insert(args.end(), {"AT", at});
    auto node_addr = node->ip + ":" + std::to_string(node->port);
    peers.Call(node->ip, node->port, req->proto, RespCommand(args),
               [req, idx = std::move(idx), one_done, node_addr](std::string_view r, const std::string& err) {
                 std::vector<std::string_view> elems;
                 if (!err.empty()) {
                   if (req->error.empty()) req->error = "TRYAGAIN " + err + " (" + node_addr + ")";
                 } else if (!r.empty() && (r[0] == '-' || r[0] == '!')) {  // (a RESP3 blob error: its first line)
                   if (req->error.empty()) req->error = std::string(r.substr(1, r.size() - 3));
                 } else if (!SplitRespArray(r, &elems) || elems.size() != idx.size()) {
                   if (req->error.empty()) req->error = "ERR unexpected FMGET reply from " + node_addr;
                 } else {
                   for (size_t j = 0; j < idx.size(); j++) req->items[idx[j]].reply.assign(elems[j]);
                 }
                 one_done();
               });
  }
  for (int s : plan->shards())
    set.Post(s, [req, plan, local_of, s, &set, one_done] {
      ReadFmgetItems(*req, *plan, local_of.get(), set.shard(s).store, plan->indexes(s));
      // The last part done, on whichever thread, posts the reply to the origin.
      one_done();
    });
}

// FMGET key [key ...] FEATURES feature [feature ...] [AT ts]
void FMGet(CommandContext& c) {
  auto reg = RegOf(c);
  size_t end = c.args.size();
  int64_t at = 0;
  bool has_at;
  if (!TrailingInt(c, &end, "AT", 4, &at, &has_at)) return;
  const int keys_end = FmgetKeysEnd(c.args);
  const size_t fpos = keys_end < 0 || static_cast<size_t>(keys_end) >= end ? 0 : static_cast<size_t>(keys_end);
  if (fpos == 0 || fpos + 1 >= end) return c.out.Error("ERR syntax error: FMGET key [key ...] FEATURES feature [feature ...] [AT ts]");
  auto req = std::make_shared<FmgetRequest>();
  req->items.reserve(fpos - 1);
  for (size_t k = 1; k < fpos; k++) {
    std::string_view ent = EntityTypeOf(c.args[k]);
    auto it = req->by_entity.find(ent);
    if (it == req->by_entity.end()) {
      std::vector<FeatureRef> refs;
      for (size_t i = fpos + 1; i < end; i++) {
        FeatureRef f;
        std::string err;
        if (!reg->ResolveFeature(ent, c.args[i], &f, &err)) return c.out.Error(err);
        refs.push_back(f);
      }
      it = req->by_entity.emplace(std::string(ent), std::move(refs)).first;
    }
    req->items.push_back(FmgetItem{c.args[k], &it->second, {}});
  }
  req->reg = reg;
  req->proto = c.conn->protocol();
  req->now = c.now_ms;
  req->t = has_at ? at : c.now_ms;
  req->has_at = has_at;
  if (const ClusterMap* map = c.server->shards().shard(c.shard).cluster.get()) {
    // Cluster mode: which keys are whose. A peer's FMGET reads here only.
    const bool peer = c.conn->name() == kPeerClientName;
    const std::atomic<PartitionHeld>* held = c.server->cluster_held();
    std::vector<size_t> local;
    std::map<const ClusterNode*, std::vector<size_t>> remote;
    for (size_t i = 0; i < req->items.size(); i++) {
      const int slot = KeySlot(req->items[i].key);
      const ClusterNode* owner = map->OwnerOfSlot(slot);
      if (owner == nullptr) return c.out.Error("CLUSTERDOWN Hash slot not served");
      if (owner->myself) {
        if (held != nullptr && held[PartitionOfSlot(slot, map->partitions())].load() != PartitionHeld::kServing)
          return c.out.Error("TRYAGAIN Slot " + std::to_string(slot) + " is being restored or moved");
        local.push_back(i);
      } else if (peer) {
        return c.out.Error("TRYAGAIN Slot " + std::to_string(slot) + " is moving");
      } else {
        remote[owner].push_back(i);
      }
    }
    if (!remote.empty())
      return FMGetFanOut(c, req, std::move(local), std::move(remote),
                         std::span<const std::string_view>(c.args.data() + fpos + 1, end - fpos - 1));
  }
  auto plan = std::make_shared<const ShardPlan>(
      ShardPlan::Build(c.server->shards().size(), req->items.size(), [&](size_t i) { return req->items[i].key; }));
  c.FanOut(
      plan, [req, plan](ShardStore& st, std::span<const uint32_t> keys) { ReadFmgetItems(*req, *plan, nullptr, st, keys); },
      [req](ReplyWriter& out) { WriteFmgetReply(*req, out); });
}

// FWINDOW over a session aggregation: the sessions that overlap the window
// (t - w, t], newest first, each [start_ms, duration_ms, events, value].
void FWindowSessions(CommandContext& c, const Registry& reg, const FeatureRef& f, int64_t w, bool buckets, int64_t t) {
  const ViewDef& v = reg.views()[static_cast<size_t>(f.view)];
  const AggregationDef& a = v.aggs[static_cast<size_t>(f.agg)];
  if (buckets) return c.out.Error("ERR BUCKETS is for windowed aggregations: FWINDOW lists the sessions of '" + a.name + "'");
  const int64_t kept = SessionHorizon(a);
  if (w > kept)
    return c.out.Error("ERR window " + std::string(c.args[3]) + " is larger than the " + std::to_string(kept) +
                       " ms retained for '" + v.name + "." + a.name + "'");
  const EntityRecord* e;
  if (OpStatus s = EntityAt(*c.store, c.args[1], c.key_hash, c.now_ms, &e); s != OpStatus::kOk) return WriteStatus(c.out, s);
  if (e == nullptr) return c.out.Array(0);
  std::string_view sec = SectionOf(reg, f, e, c.now_ms);
  const AggKind op = SessionOp(a);
  std::vector<SessionView> hits;
  ForEachSession(sec, [&](const SessionView& s) {
    // This one and every older one ended before the window, or are closed.
    if (s.end <= t - w || s.end <= c.now_ms - kept || s.op != op) return false;
    if (s.start <= t) hits.push_back(s);
    return true;
  });
  c.out.Array(hits.size());
  for (const SessionView& s : hits) {
    c.out.Array(4);
    c.out.Integer(s.start);
    c.out.Integer(s.end - s.start);
    c.out.Integer(static_cast<int64_t>(s.events));
    switch (op) {
      case AggKind::kCount: c.out.Integer(static_cast<int64_t>(s.events)); break;
      case AggKind::kCountDistinct: c.out.Integer(static_cast<int64_t>(DistinctValueCount(s.value))); break;
      case AggKind::kMean: c.out.Double(s.x / static_cast<double>(s.events)); break;
      case AggKind::kLast: {
        char buf[21];
        c.out.Bulk(LastValueText(s.value, buf));
        break;
      }
      default: c.out.Double(s.x + 0.0); break;
    }
  }
}

// FWINDOW key aggregation window [AT ts] [BUCKETS size]
void FWindow(CommandContext& c) {
  auto reg = RegOf(c);
  int64_t at = 0, bucket = 0;
  bool has_at = false, has_buckets = false;
  for (size_t i = 4; i < c.args.size(); i += 2) {
    if (i + 1 >= c.args.size()) return c.out.Error(kErrSyntax);
    if (EqualsNoCase(c.args[i], "AT")) {
      if (!ParseI64(c.args[i + 1], &at)) return c.out.Error("ERR AT needs a Unix time in milliseconds");
      has_at = true;
    } else if (EqualsNoCase(c.args[i], "BUCKETS")) {
      if (!ParseDurationMs(c.args[i + 1], &bucket) || bucket <= 0)
        return c.out.Error("ERR bad BUCKETS size '" + std::string(c.args[i + 1]) + "' (use e.g. 30s, 1m, 1h)");
      has_buckets = true;
    } else {
      return c.out.Error(kErrSyntax);
    }
  }
  FeatureRef f;
  std::string err;
  if (!reg->ResolveAggregation(EntityTypeOf(c.args[1]), c.args[2], &f, &err)) return c.out.Error(err);
  const ViewDef& v = reg->views()[static_cast<size_t>(f.view)];
  const AggregationDef& a = v.aggs[static_cast<size_t>(f.agg)];
  int64_t w;
  if (!ParseDurationMs(c.args[3], &w) || w <= 0)
    return c.out.Error("ERR bad duration '" + std::string(c.args[3]) + "' (use e.g. 500ms, 30s, 5m, 1h, 7d)");
  if (a.kind == AggKind::kSession) return FWindowSessions(c, *reg, f, w, has_buckets, has_at ? at : c.now_ms);
  if (w > a.max_window_ms)
    return c.out.Error("ERR window " + std::string(c.args[3]) + " is larger than the " + std::to_string(a.max_window_ms) +
                       " ms retained for '" + v.name + "." + a.name + "'");
  if (has_buckets && bucket % a.resolution_ms != 0)
    return c.out.Error("ERR BUCKETS size must be a multiple of the resolution of '" + v.name + "." + a.name + "' (" +
                       std::to_string(a.resolution_ms) + " ms)");
  int64_t t = has_at ? at : c.now_ms;
  int64_t lo, hi;
  CoveredTiles(t, w, a.resolution_ms, &lo, &hi);
  if (has_buckets && (hi - lo) / (bucket / a.resolution_ms) > 100'000)
    return c.out.Error("ERR more than 100000 buckets requested; use a larger BUCKETS size");
  const EntityRecord* e;
  if (OpStatus s = EntityAt(*c.store, c.args[1], c.key_hash, c.now_ms, &e); s != OpStatus::kOk) return WriteStatus(c.out, s);
  if (e == nullptr) return has_buckets ? c.out.Array(0) : c.out.Null();
  std::string_view sec = SectionOf(*reg, f, e, c.now_ms);
  FeatureValue value;
  if (!has_buckets) {
    WindowValue(a, sec, lo, hi, &value, f.q);
    return RenderFeatureValue(c.out, value);
  }
  // Buckets aligned to the epoch; every bucket overlapping the covered tiles.
  int64_t per = bucket / a.resolution_ms;  // tiles per bucket
  int64_t b0 = FloorDiv(lo, per), b1 = FloorDiv(hi, per);
  if (lo > hi) b0 = b1 = FloorDiv(t, bucket);  // no tile starts inside a window shorter than a tile: T's bucket, empty
  c.out.Array(static_cast<size_t>(b1 - b0 + 1));
  for (int64_t b = b0; b <= b1; b++) {
    c.out.Array(2);
    c.out.Integer(b * bucket);
    WindowValue(a, sec, std::max(lo, b * per), std::min(hi, b * per + per - 1), &value, f.q);
    RenderFeatureValue(c.out, value);
  }
}

// FSET key feature value [feature value ...] [TS ts]
void FSet(CommandContext& c) {
  auto reg = RegOf(c);
  size_t end = c.args.size();
  int64_t ts = 0;
  bool has_ts;
  if (!TrailingInt(c, &end, "TS", 4, &ts, &has_ts)) return;
  if (!has_ts) ts = c.now_ms;
  if ((end - 2) % 2 != 0 || end < 4) return c.out.Error(ErrWrongArgs("fset"));
  if (ts > c.now_ms + c.server->config().max_event_skew_ms())
    return c.out.Error("ERR TS is further ahead than max-event-skew");
  std::string_view ent = EntityTypeOf(c.args[1]);
  std::vector<std::pair<FeatureRef, std::string_view>> sets;
  for (size_t i = 2; i + 1 < end; i += 2) {
    FeatureRef f;
    std::string err;
    if (!reg->ResolveFeature(ent, c.args[i], &f, &err)) return c.out.Error(err);
    AggKind k = reg->views()[static_cast<size_t>(f.view)].aggs[static_cast<size_t>(f.agg)].kind;
    if (k != AggKind::kLast && k != AggKind::kLastN)
      return c.out.Error("ERR FSET sets only last and last_n features; '" + std::string(c.args[i]) + "' is a " + AggName(k) + " aggregate");
    sets.emplace_back(f, c.args[i + 1]);
  }
  // Each value is one view update through the event path's apply (in
  // order: a feature set twice in one FSET keeps the later value).
  UpdateBatch batch;
  for (auto& [f, value] : sets) {
    const ViewDef& v = reg->views()[static_cast<size_t>(f.view)];
    batch.AddText(c.args[1], c.key_hash, v.layout_id, ts, &v.name, static_cast<uint16_t>(f.agg), value,
                  reg->sources()[static_cast<size_t>(v.source_index)].table);
  }
  for (size_t i = 0; i < batch.size(); i++)
    if (!ApplyViewUpdate(*c.store, batch, i, c.now_ms, nullptr)) return c.out.Error(kErrWrongType);  // the first: nothing changed
  c.out.Ok();
}

// Planning a pipeline ahead (docs/architecture.md, "Planning a pipeline
// ahead"). While one FEVENT runs, the FEVENTs already read after it are
// planned (up to kDepth of them) and the table slots, records and entity
// blocks of their keys on this shard prefetched in three stages, so a
// pipeline's cache misses overlap with the work of the commands before
// them instead of stalling each apply. A plan is taken only by the command
// it was made from (same connection, same read of its buffer, the same
// argument bytes, registry and max-event-skew) in the millisecond it was
// made (the command's clock is the plan's), and kept only when planning it
// counted nothing (no rejection, skip or too-old input, which go to INFO
// when the command runs); anything else plans again.
class FeventLookahead {
 public:
  static constexpr size_t kDepth = 8;

  // The plan of the command now running, if it is the oldest one planned
  // (its batch swapped into *out, its clock into *now); else forgets all.
  bool Take(const CommandContext& c, const std::shared_ptr<const Registry>& reg, int64_t skew, UpdateBatch* out,
            int64_t* now) {
    if (count_ == 0) return false;
    Ahead& a = ring_[head_];
    bool same = c.conn != nullptr && c.conn->id() == conn_id_ && c.conn->read_generation() == read_gen_ &&
                a.reg == reg && a.skew == skew && a.now_ms == c.now_ms && a.args.size() == c.args.size();
    for (size_t i = 0; same && i < a.args.size(); i++)
      same = a.args[i].data() == c.args[i].data() && a.args[i].size() == c.args[i].size();
    if (!same) {
      Forget();
      return false;
    }
    std::swap(*out, a.batch);
    a.batch.clear();
    a.reg.reset();
    *now = a.now_ms;
    head_ = (head_ + 1) % kDepth;
    count_--;
    return true;
  }

  // After the running command took or made its plan: plans the FEVENTs
  // that follow it in the buffer until kDepth are ahead, then issues each
  // plan's prefetch stage by its distance from the running command.
  void TopUp(CommandContext& c, const std::shared_ptr<const Registry>& reg, int64_t skew, EventPlanner& planner) {
    if (c.conn == nullptr) return;
    std::string_view rest = c.conn->Unparsed();
    const bool fresh = count_ == 0 || c.conn->id() != conn_id_ || c.conn->read_generation() != read_gen_;
    if (fresh) {
      Forget();
      conn_id_ = c.conn->id();
      read_gen_ = c.conn->read_generation();
      next_ = rest.data();
    }
    while (count_ < kDepth && !rest.empty()) {
      Ahead& a = ring_[(head_ + count_) % kDepth];
      if (a.batch.footprint() > (1u << 20)) a.batch = UpdateBatch();  // a huge FEVENT's buffers are not kept
      const char* end = c.conn->PeekCommand(next_, &a.args);
      if (end == nullptr || a.args.size() < 3 || a.args.size() > 2 + kMaxEvents || !EqualsFevent(a.args[0])) break;
      int src = reg->FindSource(a.args[1]);
      if (src < 0 || reg->sources()[static_cast<size_t>(src)].has_joins) break;  // joins look up when the command runs
      a.batch.clear();
      bool clean = true;
      for (size_t i = 2; clean && i < a.args.size(); i++)
        clean = planner.Plan(*reg, src, a.args[i], c.now_ms, skew, &a.batch, nullptr).empty() && !planner.uncounted();
      if (!clean) break;
      for (size_t i = 0; i < a.batch.size(); i++) a.batch[i].key_hash = HashKey(a.batch.key(i));
      a.reg = reg;
      a.skew = skew;
      a.now_ms = c.now_ms;
      next_ = end;
      count_++;
      Prefetch(c, a.batch, 0);
    }
    if (fresh) {
      // A new run: the commands nearest get their records, then their
      // blocks, now, each stage a pass so the misses overlap.
      for (int stage = 1; stage <= 2; stage++)
        for (size_t d = 0; d < std::min<size_t>(count_, 4); d++) Prefetch(c, ring_[(head_ + d) % kDepth].batch, stage);
      return;
    }
    // In a run: the blocks two commands ahead, the records four ahead
    // (their slots were fetched when they were planned, further ahead).
    if (count_ > 1) Prefetch(c, ring_[(head_ + 1) % kDepth].batch, 2);
    if (count_ > 3) Prefetch(c, ring_[(head_ + 3) % kDepth].batch, 1);
  }

  void Forget() {
    for (size_t i = 0; i < count_; i++) ring_[(head_ + i) % kDepth].reg.reset();
    count_ = 0;
  }

 private:
  static constexpr size_t kMaxEvents = 16;  // longer FEVENTs are planned when they run
  struct Ahead {
    ArgList args;
    std::shared_ptr<const Registry> reg;  // held: a reload cannot free it, nor reuse its address
    int64_t skew = 0, now_ms = 0;
    UpdateBatch batch;
  };
  static bool EqualsFevent(std::string_view name) {
    return name.size() == 6 && strncasecmp(name.data(), "fevent", 6) == 0;
  }
  static void Prefetch(CommandContext& c, const UpdateBatch& b, int stage) {
    const ShardSet& shards = c.server->shards();
    for (size_t i = 0; i < b.size(); i++)
      if (shards.ShardOf(b[i].key_hash) == c.shard) c.store->Prefetch(b[i].key_hash, stage);
  }
  std::array<Ahead, kDepth> ring_;
  size_t head_ = 0, count_ = 0;
  uint64_t conn_id_ = 0, read_gen_ = 0;
  const char* next_ = nullptr;  // the first byte after the last command planned
};

// FEVENT's shared parts: a rejected event is counted, sampled and listed;
// the error naming every rejected one; the ACL's key patterns over the
// entities the events write (one outside them refuses the whole command,
// docs/commands.md "ACL").
using Rejections = std::vector<std::pair<size_t, std::string>>;
void RejectEvent(CommandContext& c, IngestStats& stats, size_t i, const std::string& why, Rejections* rejected) {
  stats.Reject(std::string(c.args[1]), why);
  stats.Sample(RejectSample{why, "FEVENT " + std::string(c.args[1]) + " #" + std::to_string(i + 1), c.now_ms,
                            std::string(c.args[i + 2])});
  rejected->emplace_back(i + 1, why);
}
std::string RejectionError(const Rejections& rejected, size_t n) {
  if (rejected.empty()) return "";
  std::string err = "ERR " + std::to_string(rejected.size()) + " of " + std::to_string(n) + " events rejected: ";
  for (size_t i = 0; i < rejected.size(); i++)
    err += (i ? "; #" : "#") + std::to_string(rejected[i].first) + ": " + rejected[i].second;
  return err;
}
bool EventKeysDenied(CommandContext& c, const UpdateBatch& updates) {
  const AclUser& u = c.conn->user();
  if (u.allkeys) return false;
  for (size_t i = 0; i < updates.size(); i++) {
    if (u.KeyAllowed(updates.key(i))) continue;
    c.conn->LogDenied("key", updates.key(i));
    c.out.Error(kAclKeyDenied);
    return true;
  }
  return false;
}

// FEVENT in cluster mode (docs/architecture.md, "Cluster mode"): any node
// takes it; each accepted event goes to the repartition partitions owning
// its entity keys, and their owners apply it as a source's message. The
// reply waits for Kafka's acknowledgement of every record (durable then,
// applied by the owners an instant later).
void FEventCluster(CommandContext& c, const Registry& reg, int src) {
  if (ShardSet::inline_posts()) return c.out.Error("ERR FEVENT inside MULTI is not available in cluster mode");
  if (c.server->cluster_log() == nullptr) return c.out.Error("TRYAGAIN cluster mode is starting");
  thread_local EventPlanner planner;
  UpdateBatch updates;
  IngestStats& stats = c.server->ingest_stats;
  const size_t n = c.args.size() - 2;
  const int64_t skew = c.server->config().max_event_skew_ms();
  const int nparts = c.server->shards().shard(c.shard).cluster->partitions();
  Rejections rejected;
  std::vector<ClusterLog::Event> events;
  for (size_t i = 0; i < n; i++) {
    const size_t before = updates.size();
    // Planned here for the keys only: the owners count what their views skip.
    std::string why = planner.Plan(reg, src, c.args[i + 2], c.now_ms, skew, &updates, nullptr);
    if (!why.empty()) {
      RejectEvent(c, stats, i, why, &rejected);
      continue;
    }
    ClusterLog::Event e{std::string(c.args[1]), c.args[i + 2], {}};
    for (size_t u = before; u < updates.size(); u++) e.partitions.push_back(PartitionOfKey(updates.key(u), nparts));
    std::sort(e.partitions.begin(), e.partitions.end());
    e.partitions.erase(std::unique(e.partitions.begin(), e.partitions.end()), e.partitions.end());
    events.push_back(std::move(e));
  }
  if (EventKeysDenied(c, updates)) return;
  auto reply = c.Defer();
  const auto applied = static_cast<int64_t>(n - rejected.size());
  c.server->cluster_log()->Send(events, c.now_ms, [reply, applied, err = RejectionError(rejected, n)](std::string e) {
    reply([applied, err, e](ReplyWriter& out) {
      if (!e.empty()) return out.Error("ERR " + e);
      if (!err.empty()) return out.Error(err);
      out.Integer(applied);
    });
  });
}

// FEVENT of a source whose views join (docs/architecture.md, "Joins"): the
// lookups read the joined entities' stores inline, so it runs with one
// shard, or with every shard parked; the append-only file gets each event
// with what its lookups returned.
void FEventJoined(CommandContext& c, const Registry& reg, int src) {
  ShardSet& set = c.server->shards();
  if (set.size() > 1 && !ShardSet::inline_posts()) return RunExclusive(c);
  thread_local EventPlanner planner;
  StoreJoins joins(set, reg, c.now_ms);
  UpdateBatch updates;
  IngestStats& stats = c.server->ingest_stats;
  const size_t n = c.args.size() - 2;
  std::vector<std::string> logged{std::string(c.args[0]), std::string(c.args[1])};
  std::vector<std::pair<size_t, std::string>> rejected;
  const int64_t skew = c.server->config().max_event_skew_ms();
  for (size_t i = 0; i < n; i++) {
    std::string why = planner.Plan(reg, src, c.args[i + 2], c.now_ms, skew, &updates, &stats, nullptr, &joins);
    logged.push_back(joins.EnrichEvent(c.args[i + 2]));
    if (!why.empty()) RejectEvent(c, stats, i, why, &rejected);
  }
  if (EventKeysDenied(c, updates)) return;
  ShardPlan plan = updates.PlanShards(set.size());
  for (int s : plan.shards()) {
    ShardStore& st = set.shard(s).store;
    for (uint32_t k : plan.indexes(s))
      if (!ApplyViewUpdate(st, updates, k, c.now_ms, &stats)) stats.ViewSkip(*updates[k].view_name, "wrongtype");
    std::vector<std::string_view> args(logged.begin(), logged.end());
    aof::LogWrite(st, aof::Kind::kEvents, c.now_ms, args);
  }
  const uint64_t applied = n - rejected.size();
  stats.events_applied.fetch_add(applied, std::memory_order_relaxed);
  stats.ViewsApplied(updates.CountByView());
  if (rejected.empty()) return c.out.Integer(static_cast<int64_t>(applied));
  c.out.Error(RejectionError(rejected, n));
}

// FEVENT source json [json ...]
void FEvent(CommandContext& c) {
  // The shard's registry, by reference: it is swapped only on this thread,
  // never while a handler runs; the fan-out below takes a counted copy.
  const std::shared_ptr<const Registry>& reg = c.server->shards().shard(c.shard).registry;
  int src = reg->FindSource(c.args[1]);
  if (src < 0) return c.out.Error("ERR unknown source '" + std::string(c.args[1]) + "'");
  if (c.server->cluster() != nullptr) return FEventCluster(c, *reg, src);
  if (reg->sources()[static_cast<size_t>(src)].has_joins) return FEventJoined(c, *reg, src);
  thread_local EventPlanner planner;
  thread_local FeventLookahead ahead;
  // Planned into a batch this thread reuses; moved out only for a fan-out.
  thread_local UpdateBatch local;
  local.clear();
  UpdateBatch* updates = &local;
  IngestStats& stats = c.server->ingest_stats;
  size_t n = c.args.size() - 2;
  Rejections rejected;
  int64_t skew = c.server->config().max_event_skew_ms();
  int64_t now = c.now_ms;
  if (!ahead.Take(c, reg, skew, &local, &now)) {
    for (size_t i = 0; i < n; i++) {
      std::string why = planner.Plan(*reg, src, c.args[i + 2], c.now_ms, skew, updates, &stats);
      if (!why.empty()) RejectEvent(c, stats, i, why, &rejected);
    }
  }
  uint64_t applied = n - rejected.size();  // counted once the shards applied them
  std::string err = RejectionError(rejected, n);
  if (EventKeysDenied(c, *updates)) return;
  // Kept by the thread (rebuilt in place); moved out only for a fan-out.
  thread_local ShardPlan local_plan;
  thread_local std::vector<IngestStatsViewCount> by_view;
  updates->PlanShards(c.server->shards().size(), &local_plan);
  IngestStats* sp = &stats;
  updates->CountByView(&by_view);
  const std::vector<int>& targets = local_plan.shards();
  if (!ShardSet::inline_posts() && (targets.empty() || (targets.size() == 1 && targets[0] == c.shard))) {
    // Every update is on this shard (always so with one shard): applied
    // here, without the fan-out's shared state and closures.
    ahead.TopUp(c, reg, skew, planner);
    if (!targets.empty()) {
      std::span<const uint32_t> keys = local_plan.indexes(c.shard);
      for (size_t k = 0; k < keys.size(); k++) {
        PrefetchAhead(*c.store, *updates, keys, k);
        if (!ApplyViewUpdate(*c.store, *updates, keys[k], now, sp)) sp->ViewSkip(*(*updates)[keys[k]].view_name, "wrongtype");
      }
      aof::LogWrite(*c.store, aof::Kind::kEvents, now, c.args);
    }
    if (local.footprint() > (1u << 20)) {  // a huge FEVENT does not keep its memory
      local = UpdateBatch();
      local_plan = ShardPlan();
    }
    sp->events_applied.fetch_add(applied, std::memory_order_relaxed);
    sp->ViewsApplied(by_view);
    if (!err.empty()) return c.out.Error(err);
    return c.out.Integer(static_cast<int64_t>(applied));
  }
  // Updates on other shards: the next FEVENTs are planned all the same
  // (a plan does not depend on the shard), but not inside EXEC.
  if (!ShardSet::inline_posts()) ahead.TopUp(c, reg, skew, planner);
  auto shared = std::make_shared<UpdateBatch>(std::move(local));
  local = UpdateBatch();
  auto plan = std::make_shared<const ShardPlan>(std::move(local_plan));
  local_plan = ShardPlan();
  c.FanOut(
      plan,
      [updates = std::move(shared), now, sp, reg, &args = c.args](ShardStore& st, std::span<const uint32_t> keys) {  // reg: the updates point into it
        for (size_t k = 0; k < keys.size(); k++) {
          PrefetchAhead(st, *updates, keys, k);
          if (!ApplyViewUpdate(st, *updates, keys[k], now, sp)) sp->ViewSkip(*(*updates)[keys[k]].view_name, "wrongtype");
        }
        // The events again in this shard's append-only file: a replay plans
        // them and applies this shard's updates only.
        aof::LogWrite(st, aof::Kind::kEvents, now, args);
      },
      [applied, err, sp, by_view = std::move(by_view), reg](ReplyWriter& out) {  // reg: by_view names its views
        sp->events_applied.fetch_add(applied, std::memory_order_relaxed);
        sp->ViewsApplied(by_view);
        if (!err.empty()) return out.Error(err);
        out.Integer(static_cast<int64_t>(applied));
      });
}

// The head shared by FVIEWS and FINFO: a map whose first seven entries
// are name, entity, source, ttl_ms, version, versions (every version of
// the view's name) and default (the version unqualified names read); the
// caller writes the `more` others.
void WriteViewHead(ReplyWriter& out, const Registry& reg, const ViewDef& v, size_t more) {
  out.Map(7 + more);
  out.Bulk("name");
  out.Bulk(v.name);
  out.Bulk("entity");
  out.Bulk(v.entity);
  out.Bulk("source");
  out.Bulk(v.source);
  out.Bulk("ttl_ms");
  out.Integer(v.ttl_ms);
  out.Bulk("version");
  out.Integer(v.version);
  out.Bulk("versions");
  std::vector<int> versions = reg.VersionsOf(v.base);
  out.Array(versions.size());
  for (int n : versions) out.Integer(n);
  out.Bulk("default");
  out.Integer(reg.DefaultVersion(v.base));
}

void WriteViewSummary(ReplyWriter& out, const Registry& reg, const ViewDef& v) {
  WriteViewHead(out, reg, v, 1);
  auto feats = reg.FeaturesOfView(static_cast<int>(&v - reg.views().data()));
  out.Bulk("features");
  out.Array(feats.size());
  for (auto& [name, f] : feats) out.Bulk(name);
}

void FViews(CommandContext& c) {
  auto reg = RegOf(c);
  c.out.Array(reg->views().size());
  for (const auto& v : reg->views()) WriteViewSummary(c.out, *reg, v);
}

void FInfo(CommandContext& c) {
  auto reg = RegOf(c);
  int vi = reg->FindView(c.args[1]);
  if (vi < 0) return c.out.Error("ERR unknown view '" + std::string(c.args[1]) + "'");
  const ViewDef& v = reg->views()[static_cast<size_t>(vi)];
  WriteViewHead(c.out, *reg, v, 3);
  c.out.Bulk("source_kind");
  c.out.Bulk(reg->sources()[static_cast<size_t>(v.source_index)].table ? "table" : "stream");
  c.out.Bulk("joins");  // alias, the joined view, the event field of its key, the features read
  c.out.Array(v.joins.size());
  for (const JoinDef& j : v.joins) {
    c.out.Map(4);
    c.out.Bulk("alias");
    c.out.Bulk(j.alias);
    c.out.Bulk("view");
    c.out.Bulk(j.view_name);
    c.out.Bulk("key");
    c.out.Bulk(j.key_field);
    c.out.Bulk("features");
    c.out.Array(j.refs.size());
    for (const JoinDef::Ref& ref : j.refs) c.out.Bulk(ref.feature);
  }
  c.out.Bulk("aggregations");
  c.out.Array(v.aggs.size());
  for (const auto& a : v.aggs) {
    const bool quantile = a.kind == AggKind::kQuantile, session = a.kind == AggKind::kSession;
    c.out.Map(quantile || session ? 8 : 7);
    c.out.Bulk("name");
    c.out.Bulk(a.name);
    c.out.Bulk("agg");
    c.out.Bulk(AggName(InputKind(a)));
    c.out.Bulk("field");
    c.out.Bulk(a.field);
    c.out.Bulk("where");
    c.out.Bulk(a.where_text);
    c.out.Bulk("windows");
    c.out.Array(a.window_texts.size());
    for (auto& t : a.window_texts) c.out.Bulk(t);
    c.out.Bulk("resolution_ms");
    c.out.Integer(a.resolution_ms);
    c.out.Bulk("n");
    c.out.Integer(session ? 0 : a.n);
    if (session) {  // resolution_ms is its gap; windows those of sessions_<W>
      c.out.Bulk("session_gap_ms");
      c.out.Integer(a.resolution_ms);
    }
    if (quantile) {
      c.out.Bulk("q");
      c.out.Array(a.quantiles.size());
      for (double q : a.quantiles) c.out.Double(q);
    }
  }
}

void FRegistry(CommandContext& c) {
  if (EqualsNoCase(c.args[1], "VERSION") && c.args.size() == 2) return c.out.Bulk(RegOf(c)->version());
  if (EqualsNoCase(c.args[1], "RELOAD") && c.args.size() == 2) {
    std::string version;
    auto reply = c.Defer();
    std::string err = c.server->ReloadRegistry(
        [reply](std::shared_ptr<const Registry>) { reply([](ReplyWriter& out) { out.Ok(); }); }, &version);
    c.conn->Audit("registry_reload", err.empty() ? std::vector<std::pair<std::string, std::string>>{{"result", "ok"}, {"version", version}}
                                                 : std::vector<std::pair<std::string, std::string>>{{"result", "error"}, {"error", err}});
    if (!err.empty()) reply([err](ReplyWriter& out) { out.Error(err); });
    return;
  }
  if (EqualsNoCase(c.args[1], "DEFAULT") && (c.args.size() == 3 || c.args.size() == 4)) {
    // FREGISTRY DEFAULT view [version]: the version unqualified names read
    // (docs/commands.md, "Feature versions"), checked against the newest
    // registry under the change lock (a reload may be installing).
    std::string base(c.args[2]);
    if (c.args.size() == 3) {
      auto reg = c.server->registry();
      if (reg->VersionsOf(base).empty()) return c.out.Error("ERR unknown view '" + base + "'");
      return c.out.Integer(reg->DefaultVersion(base));
    }
    std::string text(c.args[3]);
    int64_t n = 0;
    auto reply = c.Defer();
    Server* server = c.server;
    std::string err = server->ChangeRegistry(
        [&](const std::shared_ptr<const Registry>& reg, std::shared_ptr<const Registry>* next) -> std::string {
          std::vector<int> versions = reg->VersionsOf(base);
          if (versions.empty()) return "ERR unknown view '" + base + "'";
          if (!ParseI64(text, &n) || !std::binary_search(versions.begin(), versions.end(), n)) {
            std::string list;
            for (int v : versions) list += (list.empty() ? "" : ", ") + std::to_string(v);
            return "ERR view '" + base + "' has no version '" + text + "' (versions: " + list + ")";
          }
          server->SetWantedDefault(base, static_cast<int>(n));
          *next = reg->WithDefaults(server->wanted_defaults());
          return "";
        },
        [reply](std::shared_ptr<const Registry>) { reply([](ReplyWriter& out) { out.Ok(); }); });
    if (!err.empty()) return reply([err](ReplyWriter& out) { out.Error(err); });
    c.conn->Audit("registry_default", {{"view", base}, {"version", text}});
    return;
  }
  c.out.Error("ERR unknown subcommand '" + std::string(c.args[1]) +
              "'. Try FREGISTRY VERSION, FREGISTRY RELOAD or FREGISTRY DEFAULT.");
}

// FINGEST ERRORS: the first rejected events (FEVENT and Kafka), oldest first.
void FIngest(CommandContext& c) {
  if (!EqualsNoCase(c.args[1], "ERRORS") || c.args.size() != 2)
    return c.out.Error("ERR unknown subcommand '" + std::string(c.args[1]) + "'. Try FINGEST ERRORS.");
  auto samples = c.server->ingest_stats.samples();
  c.out.Array(samples.size());
  for (const auto& s : samples) {
    c.out.Map(4);
    c.out.Bulk("reason");
    c.out.Bulk(s.reason);
    c.out.Bulk("origin");
    c.out.Bulk(s.origin);
    c.out.Bulk("time_ms");
    c.out.Integer(s.time_ms);
    c.out.Bulk("payload");
    c.out.Bulk(s.payload);
  }
}

// FREPLAY source FROM ms [TO ms] [VIEWS view ...] | FREPLAY CANCEL
// (docs/commands.md): starts (or stops) a replay on the ingest thread; its
// progress is in INFO ingest (replay_*).
void FReplay(CommandContext& c) {
  KafkaIngest* k = c.server->kafka();
  if (c.args.size() == 2 && EqualsNoCase(c.args[1], "CANCEL")) {
    if (k == nullptr || !k->CancelReplay()) return c.out.Error("ERR no replay is running");
    c.conn->Audit("replay_cancel", {});
    return c.out.Ok();
  }
  if (k == nullptr) return c.out.Error("ERR FREPLAY needs Kafka ingest (kafka-brokers)");
  const char* usage = "ERR syntax error: FREPLAY source FROM ms [TO ms] [VIEWS view ...] | FREPLAY CANCEL";
  if (c.args.size() < 4 || !EqualsNoCase(c.args[2], "FROM")) return c.out.Error(usage);
  KafkaIngest::ReplayRequest r;
  r.source = std::string(c.args[1]);
  auto number = [&](std::string_view a, int64_t* v) { return ParseI64(a, v) && *v >= 0; };
  if (!number(c.args[3], &r.from_ms)) return c.out.Error("ERR FROM is a time in Unix milliseconds");
  size_t i = 4;
  if (i < c.args.size() && EqualsNoCase(c.args[i], "TO")) {
    if (i + 1 >= c.args.size() || !number(c.args[i + 1], &r.to_ms)) return c.out.Error("ERR TO is a time in Unix milliseconds");
    i += 2;
  }
  if (i < c.args.size()) {
    if (!EqualsNoCase(c.args[i], "VIEWS") || i + 1 >= c.args.size()) return c.out.Error(usage);
    for (i++; i < c.args.size(); i++) r.views.emplace_back(c.args[i]);
  }
  std::string views;
  for (const auto& v : r.views) views += (views.empty() ? "" : ",") + v;
  std::string source = r.source, from = std::to_string(r.from_ms), to = std::to_string(r.to_ms);
  if (std::string err = k->StartReplay(std::move(r)); !err.empty()) return c.out.Error(err);
  c.conn->Audit("replay_start", {{"source", source}, {"from_ms", from}, {"to_ms", to}, {"views", views}});
  c.out.Ok();
}

// FDRIFT BASELINE view | FDRIFT view (docs/commands.md): both walk the
// view's entities in slices on every shard; the client waits, the shards
// serve meanwhile.
void FDrift(CommandContext& c) {
  DriftManager& drift = c.server->drift();
  if (c.args.size() == 3 && EqualsNoCase(c.args[1], "BASELINE")) {
    auto reply = c.Defer();
    drift.Baseline(std::string(c.args[2]), [reply](const std::string& err, size_t) {
      reply([err](ReplyWriter& out) { err.empty() ? out.Ok() : out.Error(err); });
    });
    return;
  }
  if (c.args.size() != 2) return c.out.Error("ERR syntax error: FDRIFT view | FDRIFT BASELINE view");
  auto reply = c.Defer();
  drift.Compute(std::string(c.args[1]), [reply](const std::string& err, const std::vector<DriftManager::Row>& rows) {
    reply([err, rows](ReplyWriter& out) {
      if (!err.empty()) return out.Error(err);
      out.Array(rows.size());
      for (const auto& r : rows) {
        out.Array(4);
        out.Bulk(r.feature);
        if (std::isnan(r.psi)) out.Null();
        else out.Double(r.psi);
        out.Integer(static_cast<int64_t>(r.baseline_n));
        out.Integer(static_cast<int64_t>(r.current_n));
      }
    });
  });
}

}  // namespace

// Replays an EVENTS record of an append-only file (server/aof.h): the
// updates of these events that went to shard `shard` of `nshards` when
// they were logged, at the time they were logged.
void ReplayEvents(Server& server, std::span<const std::string_view> args, int64_t now_ms, uint32_t shard,
                  uint32_t nshards) {
  auto reg = server.registry();
  int src = reg->FindSource(args[1]);
  if (src < 0) return;  // the source left the registry: its events have no view to feed
  EventPlanner planner;
  UpdateBatch updates;
  IngestStats scratch;  // the events were counted when they arrived
  int64_t skew = server.config().max_event_skew_ms();
  // Joined features as they were looked up when the event was acknowledged
  // (FEventJoined embedded them).
  EmbeddedJoins joins;
  const bool joined = reg->sources()[static_cast<size_t>(src)].has_joins;
  for (size_t i = 2; i < args.size(); i++) {
    if (joined) joins.SetEvent(args[i]);
    planner.Plan(*reg, src, args[i], now_ms, skew, &updates, &scratch, nullptr, joined ? &joins : nullptr);
  }
  ShardSet& set = server.shards();
  updates.PlanShards(set.size());  // sets each update's key hash
  for (size_t k = 0; k < updates.size(); k++) {
    uint64_t h = updates[k].key_hash;
    if (ShardOfHash(h, static_cast<int>(nshards)) != static_cast<int>(shard)) continue;
    ApplyViewUpdate(set.shard(set.ShardOf(h)).store, updates, k, now_ms, nullptr);  // counted when they arrived
  }
}

void RegisterFeatureFamily(CommandTable& t) {
  t.Register({"fingest", 2, kCmdReadonly, 0, 0, 0, FIngest, "feature", "FINGEST ERRORS: the first rejected events kept."});
  const uint32_t R = kCmdReadonly, W = kCmdWrite | kCmdDenyOom, M = kCmdMultiShard;
  t.Register({"fget", -2, R | kCmdFast, 1, 1, 1, FGet, "feature", "Returns features of an entity (all of them as a map without names)."});
  t.Register({"fmget", -4, R | M | kCmdMovableKeys | kCmdAnySlot, 0, 0, 0, FMGet, "feature",
              "Returns features of many entities in one round trip.", 0, FmgetKeysEnd});
  t.Register({"fwindow", -4, R, 1, 1, 1, FWindow, "feature", "Computes a windowed aggregation over any window, optionally in buckets."});
  t.Register({"fset", -4, W, 1, 1, 1, FSet, "feature", "Pushes values of last / last_n features."});
  t.Register({"fevent", -3, W | M, 0, 0, 0, FEvent, "feature", "Feeds raw JSON events through the ingest path."});
  t.Register({"freplay", -2, kCmdAdmin | kCmdNoMulti, 0, 0, 0, FReplay, "feature",
              "Replays a time range of a Kafka source into views marked backfill: true."});
  t.Register({"fviews", 1, R, 0, 0, 0, FViews, "feature", "Lists the views of the registry."});
  t.Register({"finfo", 2, R, 0, 0, 0, FInfo, "feature", "Describes one view and its aggregations."});
  t.Register({"fdrift", -2, R | kCmdNoMulti, 0, 0, 0, FDrift, "feature", "FDRIFT BASELINE view | FDRIFT view: feature drift (PSI) against a baseline."});
  t.Register({"fregistry", -2, kCmdAdmin | kCmdNoMulti, 0, 0, 0, FRegistry, "feature", "FREGISTRY VERSION | RELOAD | DEFAULT view [version]."});
}

}  // namespace fkv
