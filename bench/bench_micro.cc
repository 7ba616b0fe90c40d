// Micro benchmarks (Google Benchmark): RESP parsing throughput, reply
// writing, and store get/set on one shard. Figures, not tests.
#include <benchmark/benchmark.h>
#include <fstream>
#include <iterator>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ingest/event_path.h"
#include "ingest/registry.h"
#include "protocol/reply_writer.h"
#include "server/acl.h"
#include "server/command_stats.h"
#include "server/feature_values.h"
#include "protocol/resp_parser.h"
#include "storage/key_table.h"
#include "storage/shard_store.h"

using namespace fkv;

namespace {

std::string PipelinedSets(int n, size_t value_len) {
  std::string in;
  std::string v(value_len, 'x');
  for (int i = 0; i < n; i++) {
    std::string k = "key:" + std::to_string(100000000 + i);
    in += "*3\r\n$3\r\nSET\r\n$" + std::to_string(k.size()) + "\r\n" + k + "\r\n$" + std::to_string(v.size()) + "\r\n" + v + "\r\n";
  }
  return in;
}

void BM_ParsePipelinedSet(benchmark::State& state) {
  std::string in = PipelinedSets(1000, static_cast<size_t>(state.range(0)));
  RequestParser p;
  ArgList args;
  for (auto _ : state) {
    std::string_view rest(in);
    size_t consumed = 0;
    while (!rest.empty() && p.Parse(rest, &args, &consumed) == ParseStatus::kComplete) {
      benchmark::DoNotOptimize(args.data());
      rest.remove_prefix(consumed);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * 1000));
}
BENCHMARK(BM_ParsePipelinedSet)->Arg(3)->Arg(100)->Arg(4096);

void BM_ParseInline(benchmark::State& state) {
  std::string in;
  for (int i = 0; i < 1000; i++) in += "GET key:" + std::to_string(100000000 + i) + "\r\n";
  RequestParser p;
  ArgList args;
  for (auto _ : state) {
    std::string_view rest(in);
    size_t consumed = 0;
    while (!rest.empty() && p.Parse(rest, &args, &consumed) == ParseStatus::kComplete) rest.remove_prefix(consumed);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in.size()));
}
BENCHMARK(BM_ParseInline);

void BM_WriteReplies(benchmark::State& state) {
  std::string out;
  out.reserve(1 << 20);
  ReplyWriter w(&out, static_cast<int>(state.range(0)));
  std::string v(16, 'v');
  for (auto _ : state) {
    out.clear();
    for (int i = 0; i < 100; i++) {
      w.Map(2);
      w.Bulk("clicks_5m");
      w.Integer(i);
      w.Bulk("mean");
      w.Double(i * 0.5);
      w.Bulk(v);
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * 100));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * out.size()));
}
BENCHMARK(BM_WriteReplies)->Arg(2)->Arg(3);

void BM_StoreSet(benchmark::State& state) {
  ShardStore s;
  const int n = static_cast<int>(state.range(0));
  std::vector<std::string> keys;
  for (int i = 0; i < n; i++) keys.push_back("key:" + std::to_string(100000000 + i));
  size_t i = 0;
  for (auto _ : state) {
    const std::string& k = keys[i++ % keys.size()];
    s.PutString(k, HashKey(k), "xxx", 0);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_StoreSet)->Arg(1000)->Arg(1000000);

void BM_StoreGet(benchmark::State& state) {
  ShardStore s;
  const int n = static_cast<int>(state.range(0));
  std::vector<std::string> keys;
  for (int i = 0; i < n; i++) {
    keys.push_back("key:" + std::to_string(100000000 + i));
    s.PutString(keys.back(), HashKey(keys.back()), "xxx", 0);
  }
  size_t i = 0;
  for (auto _ : state) {
    const std::string& k = keys[(i++ * 7919) % keys.size()];
    Record* r = s.Find(k, HashKey(k), 0);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_StoreGet)->Arg(1000)->Arg(1000000);

// The demo registry (conf/features.yaml) and clickstream events like those
// of featurekv-produce: 1M users, 100k products, 4 actions.
std::shared_ptr<const Registry> DemoRegistry() {
  static auto reg = Registry::LoadFile(FKV_SOURCE_DIR "/conf/features.yaml");
  return reg;
}

std::vector<std::string> DemoEvents(size_t n, int64_t now_s, uint64_t users = 1000000) {
  std::mt19937_64 rng(42);
  const char* actions[] = {"click", "view", "view", "click", "add_to_cart", "purchase"};
  std::vector<std::string> ev;
  for (size_t i = 0; i < n; i++) {
    ev.push_back("{\"user_id\":" + std::to_string(rng() % users) + ",\"product_id\":" + std::to_string(rng() % (users / 10 + 1)) +
                 ",\"action\":\"" + actions[rng() % 6] + "\",\"timestamp\":" + std::to_string(now_s - static_cast<int64_t>(rng() % 600)) + "}");
  }
  return ev;
}

// Plans and applies events, as FEVENT does (the warm-up of the benchmarks).
void ApplyAll(const Registry& reg, const std::vector<std::string>& events, int64_t now_ms, EventPlanner* planner,
              ShardStore* store) {
  UpdateBatch ups;
  for (const auto& e : events) {
    ups.clear();
    planner->Plan(reg, 0, e, now_ms, 300000, &ups, nullptr);
    for (size_t k = 0; k < ups.size(); k++) {
      ups[k].key_hash = HashKey(ups.key(k));
      ApplyViewUpdate(*store, ups, k, now_ms, nullptr);
    }
  }
}

// Events/s through decode (simdjson) + plan (filters, keys) + apply (tiles)
// on one thread, with the demo registry, over Arg(0) users (products =
// users / 10). The store is warmed with one pass over the events first, so
// the figure is the steady state (entities exist), not creation.
// A store warmed with one pass over 200,000 demo events over `users` users.
struct WarmStore {
  std::shared_ptr<const Registry> reg = DemoRegistry();
  int64_t now_ms = int64_t{1'790'000'000} * 1000;
  std::vector<std::string> events;
  EventPlanner planner;
  ShardStore store;
  explicit WarmStore(uint64_t users) : events(DemoEvents(200000, now_ms / 1000, users)) {
    ApplyAll(*reg, events, now_ms, &planner, &store);
  }
  // One store per user count for the whole run: Google Benchmark calls a
  // benchmark several times, and a profile should show the loop, not the
  // warm-up.
  static WarmStore& For(uint64_t users) {
    static std::map<uint64_t, std::unique_ptr<WarmStore>> stores;
    auto& s = stores[users];
    if (!s) s = std::make_unique<WarmStore>(users);
    return *s;
  }
};

void BM_EventDecodePlanApply(benchmark::State& state) {
  WarmStore& w = WarmStore::For(static_cast<uint64_t>(state.range(0)));
  auto& [reg, now_ms, events, planner, store] = w;
  UpdateBatch ups;
  size_t i = 0;
  for (auto _ : state) {
    ups.clear();
    planner.Plan(*reg, 0, events[i++ % events.size()], now_ms, 300000, &ups, nullptr);
    for (size_t k = 0; k < ups.size(); k++) {
      ups[k].key_hash = HashKey(ups.key(k));
      ApplyViewUpdate(store, ups, k, now_ms, nullptr);
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_EventDecodePlanApply)->Arg(10000)->Arg(1000000);

// The same work as the ingest thread and the shards do it: decode and plan
// a batch of 256 events, then apply its updates in order with the table
// slots, records and blocks prefetched a few updates ahead (PrefetchAhead).
void BM_EventDecodePlanApplyBatched(benchmark::State& state) {
  WarmStore& w = WarmStore::For(static_cast<uint64_t>(state.range(0)));
  auto& [reg, now_ms, events, planner, store] = w;
  constexpr size_t kBatch = 256;
  UpdateBatch ups;
  std::vector<uint32_t> keys;
  size_t i = 0;
  for (auto _ : state) {
    ups.clear();
    for (size_t b = 0; b < kBatch; b++) planner.Plan(*reg, 0, events[i++ % events.size()], now_ms, 300000, &ups, nullptr);
    keys.resize(ups.size());
    for (size_t k = 0; k < ups.size(); k++) {
      ups[k].key_hash = HashKey(ups.key(k));
      keys[k] = static_cast<uint32_t>(k);
    }
    for (size_t k = 0; k < keys.size(); k++) {
      PrefetchAhead(store, ups, keys, k);
      ApplyViewUpdate(store, ups, keys[k], now_ms, nullptr);
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBatch));
}
BENCHMARK(BM_EventDecodePlanApplyBatched)->Arg(10000)->Arg(1000000);

// The cost of one more kind of aggregation: decode + plan + apply of demo
// events that carry a price, over 100,000 users, with the demo registry
// (Arg 0); plus a quantile of the price per product over 1h in 1-minute
// tiles, p50, p95, p99 (Arg 1); plus a session count per user, gap 30m,
// sessions_24h (Arg 2); plus a user view joining the product's views_1h,
// looked up in the store for each event (Arg 3: the lookup FEVENT does;
// Kafka batches them per shard).
class BenchStoreJoins : public JoinResolver {
 public:
  BenchStoreJoins(ShardStore& st, const Registry& reg, int64_t now) : st_(st), reg_(reg), now_(now) {}
  const JoinValues& Lookup(const ViewDef&, const JoinDef& j, std::string_view key) override {
    ReadJoined(st_, reg_, j, key, HashKey(key), now_, &v_);
    return v_;
  }

 private:
  ShardStore& st_;
  const Registry& reg_;
  int64_t now_;
  JoinValues v_;
};

void BM_EventApplyOneMoreKind(benchmark::State& state) {
  static std::shared_ptr<const Registry> regs[4];
  if (!regs[0]) {
    std::ifstream f(FKV_SOURCE_DIR "/conf/features.yaml");
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    regs[0] = Registry::LoadText(text, "demo");
    std::string q = text, sess = text;
    q.insert(q.find("      views:     {agg: count"),
             "      price_q:   {agg: quantile, field: price, q: [0.5, 0.95, 0.99], windows: [1h], resolution: 1m}\n");
    regs[1] = Registry::LoadText(q, "demo+quantile");
    sess.insert(sess.find("      last_action:"), "      visits: {agg: count, session: {gap: 30m, windows: [24h]}}\n");
    regs[2] = Registry::LoadText(sess, "demo+session");
    regs[3] = Registry::LoadText(text + "  user_taste:\n    entity: user\n    source: user_events\n    join:\n"
                                        "      product: {view: product_popularity, key: product_id}\n    features:\n"
                                        "      popular: {agg: count, where: \"product.views_1h >= 5\", windows: [1h]}\n",
                                 "demo+join");
  }
  const Registry& reg = *regs[state.range(0)];
  int64_t now_ms = int64_t{1'790'000'000} * 1000;
  std::vector<std::string> events = DemoEvents(200000, now_ms / 1000, 100000);
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> price(3, 1);
  for (auto& e : events) e.insert(e.size() - 1, ",\"price\":" + std::to_string(price(rng)).substr(0, 6));
  EventPlanner planner;
  ShardStore store;
  ApplyAll(reg, events, now_ms, &planner, &store);  // warm: every entity exists
  UpdateBatch ups;
  BenchStoreJoins joins(store, reg, now_ms);
  size_t i = 0;
  for (auto _ : state) {
    ups.clear();
    planner.Plan(reg, 0, events[i++ % events.size()], now_ms, 300000, &ups, nullptr, nullptr, &joins);
    for (size_t k = 0; k < ups.size(); k++) {
      ups[k].key_hash = HashKey(ups.key(k));
      ApplyViewUpdate(store, ups, k, now_ms, nullptr);
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_EventApplyOneMoreKind)->Arg(0)->Arg(1)->Arg(2)->Arg(3);

// FGET of every demo feature of one user (8 features, 6 windowed), reply
// written RESP3: the work of the command handler, without the network.
// Arg(0) users with 200,000 events over the last 10 minutes: 10,000 users
// get ~20 events each; 500 users ~400 each (hot entities: hundreds of
// 1-second tiles in their 1-hour windows).
void BM_FGetAllDemoFeatures(benchmark::State& state) {
  const uint64_t users = static_cast<uint64_t>(state.range(0));
  WarmStore& ws = WarmStore::For(users);
  auto& [reg, now_ms, events, planner, store] = ws;
  auto feats = reg->FeaturesOf("user");
  std::vector<FeatureRef> refs;
  for (auto& nf : feats) refs.push_back(nf.second);
  std::string out;
  ReplyWriter w(&out, 3);
  std::vector<FeatureValue> values;
  uint64_t i = 0;
  for (auto _ : state) {
    out.clear();
    std::string key = "user:" + std::to_string((i++ * 7919) % users);
    Record* r = store.Find(key, HashKey(key), now_ms);
    ReadEntityFeatures(*reg, r ? r->entity() : nullptr, refs, now_ms, now_ms, false, &values);
    w.Map(feats.size());
    for (size_t f = 0; f < feats.size(); f++) {
      w.Bulk(feats[f].first);
      RenderFeatureValue(w, values[f]);
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_FGetAllDemoFeatures)->Arg(10000)->Arg(500);

// Decode + plan only (no store), to split the cost.
void BM_EventDecodePlan(benchmark::State& state) {
  auto reg = DemoRegistry();
  int64_t now_s = 1'790'000'000;
  auto events = DemoEvents(100000, now_s);
  EventPlanner planner;
  UpdateBatch ups;
  size_t i = 0;
  for (auto _ : state) {
    ups.clear();
    planner.Plan(*reg, 0, events[i++ % events.size()], now_s * 1000, 300000, &ups, nullptr);
    benchmark::DoNotOptimize(ups);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_EventDecodePlan);

// The ACL check of one GET, as Connection::CheckAcl runs it after the
// epoch compare: Arg(0) the default user (+@all: nothing more), Arg(1) a
// user with a narrowed command set and key patterns ~key:* ~user:* (one
// bit test, one prefix compare per key argument).
void BM_AclCheckGet(benchmark::State& state) {
  AclUser u("u");
  for (const char* r : {"+@all", "~*"}) u.Apply(r);
  if (state.range(0) == 1)
    for (const char* r : {"resetkeys", "~key:*", "~user:*", "-flushall"}) u.Apply(r);
  const CommandSpec* spec = CommandTable::Get().Find("get");
  ArgList args = {"get", "user:000000012345"};
  const AclCommands& cmds = AclCommands::Get();
  int64_t allowed = 0;
  for (auto _ : state) {
    bool ok = true;
    if (!u.all) ok = u.Allowed(cmds.IdOf(*spec, args));
    if (ok && !u.allkeys) ForEachKeyArg(*spec, args, [&](std::string_view k) { ok = ok && u.KeyAllowed(k); });
    allowed += ok;
    benchmark::DoNotOptimize(allowed);
  }
  if (allowed != static_cast<int64_t>(state.iterations())) state.SkipWithError("refused");
}
BENCHMARK(BM_AclCheckGet)->Arg(0)->Arg(1);

// What command statistics add to every command (Connection::Execute and
// FinishCall): two clock reads, the counters and the latency histogram.
void BM_CommandStatsPerCommand(benchmark::State& state) {
  CommandStats stats(200);
  uint64_t i = 0;
  for (auto _ : state) {
    uint64_t t0 = MonotonicNs();
    benchmark::DoNotOptimize(t0);
    stats.Call(i++ % 8, MonotonicNs() - t0, false, true);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_CommandStatsPerCommand);
// In a pipeline: one read per command, the previous command's end as the start.
void BM_CommandStatsChained(benchmark::State& state) {
  CommandStats stats(200);
  uint64_t i = 0, last = MonotonicNs();
  for (auto _ : state) {
    uint64_t end = MonotonicNs();
    stats.Call(i++ % 8, end - last, false, true);
    last = end;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_CommandStatsChained);
// The clock alone: two reads per command.
void BM_CommandClockPair(benchmark::State& state) {
  for (auto _ : state) {
    uint64_t t0 = MonotonicNs();
    benchmark::DoNotOptimize(t0);
    uint64_t t1 = MonotonicNs();
    benchmark::DoNotOptimize(t1);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_CommandClockPair);

}  // namespace

BENCHMARK_MAIN();
