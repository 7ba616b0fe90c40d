// The feature operations of server/feature_values.h, in process: random
// events planned and applied through the event path on a ShardStore, then
// ReadFeatures at now and at earlier AT times against a brute-force model
// of the window rule (docs/architecture.md, "Tiles and the window rule").
// The in-process twin of the reference-model checks of
// tests/integration/test_features.py: no sockets, milliseconds.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ingest/event_path.h"
#include "ingest/registry.h"
#include "server/feature_values.h"
#include "storage/key_table.h"
#include "storage/shard_store.h"

using namespace fkv;

namespace {
const char* kRegistry = R"(
sources:
  ev: {topic: ev, timestamp: {field: ts, unit: ms}}
entities:
  user: {key: uid}
views:
  v:
    entity: user
    source: ev
    ttl: 2h
    features:
      n:     {agg: count, windows: [1m, 5m, 1h]}
      clicks: {agg: count, where: "kind == 'c'", windows: [5m]}
      total: {agg: sum, field: amt, windows: [5m, 1h], resolution: 30s}
      lo:    {agg: min, field: amt, windows: [10m]}
      hi:    {agg: max, field: amt, windows: [10m]}
      avg:   {agg: mean, field: amt, windows: [1h]}
      kinds: {agg: count_distinct, field: kind, windows: [1h]}
      last_kind: {agg: last, field: kind}
      recent: {agg: last_n, field: kind, n: 3}
)";

struct Event {
  int uid;
  std::string kind;
  double amt;
  int64_t ts;
  uint64_t seq;  // arrival order
};

// The brute-force value of one feature for one user at time t.
FeatureValue Model(const AggregationDef& a, int window, const std::vector<Event>& evs, int uid, int64_t t, bool as_of) {
  FeatureValue v;
  using K = FeatureValue::Kind;
  std::vector<const Event*> in;
  if (window >= 0) {
    int64_t w = a.windows_ms[static_cast<size_t>(window)], res = a.resolution_ms;
    for (const Event& e : evs) {
      if (e.uid != uid) continue;
      int64_t tile_start = FloorDiv(e.ts, res) * res;
      bool match = a.where_text.empty() || e.kind == "c";
      if (match && tile_start > t - w && tile_start <= t) in.push_back(&e);
    }
  }
  switch (a.kind) {
    case AggKind::kCount: v.kind = K::kInt; v.i = static_cast<int64_t>(in.size()); break;
    case AggKind::kSum: {
      v.kind = K::kDouble;
      for (auto* e : in) v.d += e->amt;
      break;
    }
    case AggKind::kMin:
    case AggKind::kMax:
    case AggKind::kMean: {
      if (in.empty()) break;
      v.kind = K::kDouble;
      double lo = INFINITY, hi = -INFINITY, sum = 0;
      for (auto* e : in) lo = std::min(lo, e->amt), hi = std::max(hi, e->amt), sum += e->amt;
      v.d = a.kind == AggKind::kMin ? lo : a.kind == AggKind::kMax ? hi : sum / static_cast<double>(in.size());
      break;
    }
    case AggKind::kCountDistinct: {
      std::set<std::string> kinds;
      for (auto* e : in) kinds.insert(e->kind);
      v.kind = K::kInt;
      v.i = static_cast<int64_t>(kinds.size());
      break;
    }
    case AggKind::kLast:
    case AggKind::kLastN: {
      // The n newest are kept (newest event time first; ties: the later
      // arrival first); with AT, those of them at or before AT show.
      std::vector<const Event*> all;
      for (const Event& e : evs)
        if (e.uid == uid) all.push_back(&e);
      std::sort(all.begin(), all.end(), [](const Event* x, const Event* y) {
        return x->ts != y->ts ? x->ts > y->ts : x->seq > y->seq;
      });
      size_t n = a.kind == AggKind::kLast ? 1 : static_cast<size_t>(a.n);
      for (size_t i = 0; i < all.size() && i < n; i++)
        if (!as_of || all[i]->ts <= t) v.list.emplace_back(all[i]->kind);
      if (a.kind == AggKind::kLast) {
        if (!v.list.empty()) v.kind = K::kString, v.s = v.list[0];
      } else {
        v.kind = K::kList;
      }
      break;
    }
    default: break;
  }
  return v;
}
}  // namespace

TEST_CASE("ReadFeatures equals a brute-force model of the window rule") {
  auto reg = Registry::LoadText(kRegistry, "reg.yaml");
  const int64_t now = 1'700'000'000'000;
  std::mt19937_64 rng(42);
  const char* kinds[] = {"c", "v", "p", "x"};
  std::vector<Event> events;
  for (uint64_t i = 0; i < 3000; i++) {
    Event e{static_cast<int>(rng() % 20), kinds[rng() % 4], static_cast<double>(rng() % 1000) / 10.0,
            now - static_cast<int64_t>(rng() % (55 * 60 * 1000)), i};  // out of order, within 55 minutes
    events.push_back(e);
  }
  ShardStore st;
  EventPlanner planner;
  IngestStats stats;
  for (const Event& e : events) {
    UpdateBatch ups;
    std::string json = "{\"uid\": " + std::to_string(e.uid) + ", \"kind\": \"" + e.kind +
                       "\", \"amt\": " + std::to_string(e.amt) + ", \"ts\": " + std::to_string(e.ts) + "}";
    REQUIRE(planner.Plan(*reg, 0, json, now, 300000, &ups, &stats) == "");
    for (size_t i = 0; i < ups.size(); i++) {
      ups[i].key_hash = HashKey(ups.key(i));
      REQUIRE(ApplyViewUpdate(st, ups, i, now, nullptr));
    }
  }
  auto feats = reg->FeaturesOf("user");
  std::vector<FeatureRef> refs;
  for (auto& [name, f] : feats) refs.push_back(f);
  std::vector<FeatureValue> got;
  int checked = 0;
  for (int uid = 0; uid < 21; uid++) {  // user 20 has no events
    std::string key = "user:" + std::to_string(uid);
    for (int64_t t : {now, now - 1, now - 45'000, now - 4 * 60'000 - 1, now - 30 * 60'000}) {
      bool as_of = t != now;
      REQUIRE(ReadFeatures(st, *reg, key, HashKey(key), refs, t, now, as_of, &got) == OpStatus::kOk);
      REQUIRE(got.size() == refs.size());
      size_t i = 0;
      for (auto& [name, f] : feats) {
        const AggregationDef& a = reg->views()[static_cast<size_t>(f.view)].aggs[static_cast<size_t>(f.agg)];
        // Tiles older than now minus the aggregation's largest window are
        // dropped (retention is relative to now): an AT window reaching
        // there is not compared.
        if (f.window >= 0 && t - a.windows_ms[static_cast<size_t>(f.window)] < now - a.max_window_ms) {
          i++;
          continue;
        }
        FeatureValue want = uid == 20 ? FeatureValue{} : Model(a, f.window, events, uid, t, as_of);
        const FeatureValue& g = got[i++];
        INFO("user ", uid, " feature ", name, " at now-", now - t);
        REQUIRE(g.kind == want.kind);
        if (g.kind == FeatureValue::Kind::kInt) CHECK(g.i == want.i);
        if (g.kind == FeatureValue::Kind::kDouble) CHECK(g.d == doctest::Approx(want.d).epsilon(1e-9));
        if (g.kind == FeatureValue::Kind::kString) CHECK(g.s == want.s);
        if (g.kind == FeatureValue::Kind::kList) CHECK(g.list == want.list);
        checked++;
      }
      // The same features asked in reverse order (windows of one
      // aggregation apart, merged in one walk) give the same values.
      std::vector<FeatureRef> rev(refs.rbegin(), refs.rend());
      std::vector<FeatureValue> back;
      REQUIRE(ReadFeatures(st, *reg, key, HashKey(key), rev, t, now, as_of, &back) == OpStatus::kOk);
      for (size_t k = 0; k < refs.size(); k++) {
        const FeatureValue &a = got[k], &b = back[refs.size() - 1 - k];
        REQUIRE(a.kind == b.kind);
        if (a.kind == FeatureValue::Kind::kInt) CHECK(a.i == b.i);
        if (a.kind == FeatureValue::Kind::kDouble) CHECK(a.d == b.d);
        if (a.kind == FeatureValue::Kind::kString) CHECK(a.s == b.s);
        if (a.kind == FeatureValue::Kind::kList) CHECK(a.list == b.list);
      }
    }
  }
  CHECK(checked > 21 * 5 * static_cast<int>(refs.size()) / 2);
  // A plain key is WRONGTYPE, not a value.
  st.PutString("user:99", HashKey("user:99"), "plain", 0);
  CHECK(ReadFeatures(st, *reg, "user:99", HashKey("user:99"), refs, now, now, false, &got) == OpStatus::kWrongType);
}
