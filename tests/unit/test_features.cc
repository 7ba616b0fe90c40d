// Unit tests of the feature model: aggregate math (tiles, Welford merge,
// HyperLogLog), last/last_n ordering, the where-filter compiler and the
// registry validation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "ingest/event_path.h"
#include "ingest/filter.h"
#include "ingest/registry.h"
#include "storage/aggregate.h"
#include "storage/entity.h"
#include "storage/key_table.h"
#include "storage/quantile.h"
#include "storage/shard_store.h"

using namespace fkv;

namespace {
// One entity with one view of one aggregation (tile width `res` ms, `maxw`
// ms retained, no TTL), driven through the storage operations.
struct OneAgg {
  AggKind kind;
  int64_t res, maxw;
  uint16_t layout;
  EntityRecord* e = EntityRecord::New();
  explicit OneAgg(AggKind k, int n = 0, int64_t res_ms = 1, int64_t maxw_ms = 1'000'000)
      : kind(k), res(res_ms), maxw(maxw_ms) {
    static uint64_t next_view = 1'000'000;
    ViewLayout l;
    l.view_id = next_view++;
    const bool timed = IsWindowed(k) || k == AggKind::kSession;  // session: res is the gap
    l.aggs.push_back(AggSpec{k, 1, timed ? res : 0, timed ? maxw : 0, n});
    layout = InternLayout(l);
  }
  ~OneAgg() { EntityRecord::Destroy(e); }
  int64_t now = INT64_MIN / 4;  // the clock of the apply: by default no session closes
  // Returns false when the input was dropped as too old.
  bool Add(int64_t ts, double x = 0, uint32_t hash = 0, std::string_view text = {}) {
    AggInput in;
    in.x = x;
    in.hash = hash;
    in.text = text;
    return EntityApply(&e, layout, ts, now, &in, 1) == 0;
  }
  std::string_view Sec() const {
    EntityRecord::View v;
    return e->FindView(LayoutAt(layout).view_id, &v) ? e->Section(v, 0) : std::string_view();
  }
  Accum Merge(int64_t lo, int64_t hi) const { return MergeTiles(kind, Sec(), lo, hi); }
  uint64_t Distinct(int64_t lo, int64_t hi) const { return CountDistinct(Sec(), lo, hi); }
  // Drops the tiles before `min_tile`; returns how many tiles went.
  uint64_t DropBefore(int64_t min_tile) {
    uint64_t before = CountSection(kind, Sec()).tiles;
    EntityTrim(&e, min_tile * res - 1 + maxw);
    return before - CountSection(kind, Sec()).tiles;
  }
};
}  // namespace

TEST_CASE("tile merges equal a direct computation, for every numeric kind") {
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> val(-1000, 1000);
  for (AggKind k : {AggKind::kCount, AggKind::kSum, AggKind::kMin, AggKind::kMax, AggKind::kMean, AggKind::kStddev}) {
    OneAgg ts(k);
    std::vector<std::pair<int64_t, double>> raw;
    for (int i = 0; i < 2000; i++) {
      int64_t tile = static_cast<int64_t>(rng() % 100);  // out of order on purpose
      double x = val(rng);
      ts.Add(tile, x);
      raw.emplace_back(tile, x);
    }
    for (int q = 0; q < 50; q++) {
      int64_t lo = rng() % 100, hi = lo + rng() % 40;
      Accum want;
      for (auto& [t, x] : raw)
        if (t >= lo && t <= hi) want.Add(x);
      Accum got = ts.Merge(lo, hi);
      switch (k) {
        case AggKind::kCount: CHECK(got.n == want.n); break;
        case AggKind::kSum: CHECK(got.sum == doctest::Approx(want.sum).epsilon(1e-9)); break;
        case AggKind::kMin: CHECK(got.min == want.min); break;
        case AggKind::kMax: CHECK(got.max == want.max); break;
        case AggKind::kMean: CHECK(got.sum / got.n == doctest::Approx(want.sum / want.n).epsilon(1e-9)); break;
        case AggKind::kStddev:
          CHECK(got.n == want.n);
          CHECK(std::sqrt(got.m2 / got.n) == doctest::Approx(std::sqrt(want.m2 / want.n)).epsilon(1e-9));
          break;
        default: break;
      }
    }
    CHECK(ts.DropBefore(50) == 50);
    CHECK(ts.Merge(0, 49).n == 0);
    CHECK(ts.Merge(50, 99).n > 0);
  }
}

TEST_CASE("count tiles: integer counts, delta-encoded indexes, a few bytes a tile") {
  OneAgg c(AggKind::kCount, 0, 1000, 3'600'000);
  const int64_t t0 = 1'795'680'000'000;
  for (int i = 0; i < 600; i++) c.Add(t0 + i * 6000);  // one event every 6 s: 600 tiles, in order
  CHECK(CountSection(AggKind::kCount, c.Sec()).tiles == 600);
  CHECK(c.Sec().size() <= 5 + 600 * 2);  // first index, then a 1-byte delta and a 1-byte count each
  CHECK(c.Merge(FloorDiv(t0, 1000), FloorDiv(t0, 1000) + 3600).n == 600);
  for (int i = 0; i < 600; i++) c.Add(t0 + i * 6000);  // every tile again, in order: counts of 2
  CHECK(c.Merge(FloorDiv(t0, 1000), FloorDiv(t0, 1000) + 3600).n == 1200);
  CHECK(c.Sec().size() <= 5 + 600 * 2);
}

TEST_CASE("stddev stays accurate with a large offset (numerically stable)") {
  OneAgg ts(AggKind::kStddev);
  Accum want;
  for (int i = 0; i < 1000; i++) {
    double x = 1e9 + (i % 10);
    ts.Add(i % 7, x);
    want.Add(x);
  }
  Accum got = ts.Merge(0, 10);
  // population stddev of 0..9 repeated = sqrt(8.25)
  CHECK(std::sqrt(got.m2 / got.n) == doctest::Approx(std::sqrt(8.25)).epsilon(1e-9));
}

TEST_CASE("count_distinct is exact while small and within 5% once a sketch") {
  auto h = [](const std::string& s) { return DistinctHash(HashKey(s)); };
  OneAgg d(AggKind::kCountDistinct);
  for (int i = 0; i < 200; i++) d.Add(i % 10, 0, h("v" + std::to_string(i % 150)));
  CHECK(d.Distinct(0, 9) == 150);
  CHECK(d.Distinct(0, 0) == 15);  // tile 0 holds i = 0,10,...,190 -> values 0,10,..,140 and 150..190 % 150
  OneAgg big(AggKind::kCountDistinct);
  for (int i = 0; i < 100000; i++) big.Add(i % 5, 0, h("u" + std::to_string(i)));
  double est = static_cast<double>(big.Distinct(0, 4));
  CHECK(std::abs(est - 100000) / 100000 < 0.05);
  CHECK(CountSection(AggKind::kCountDistinct, big.Sec()).sketches == 5);
  CHECK(big.DropBefore(3) == 3);  // three sketched tiles
  CHECK(static_cast<double>(big.Distinct(0, 4)) == doctest::Approx(40000).epsilon(0.05));
  // 600 values over 10 tiles but only 60 distinct: still exact.
  OneAgg rep(AggKind::kCountDistinct);
  for (int i = 0; i < 600; i++) rep.Add(i % 10, 0, h("r" + std::to_string(i % 60)));
  CHECK(rep.Distinct(0, 9) == 60);
  OneAgg small(AggKind::kCountDistinct);
  for (int i = 0; i < 30; i++) small.Add(i % 3, 0, h("x" + std::to_string(i)));
  CHECK(small.DropBefore(1) == 1);  // tile 0 and its ten values
  CHECK(small.Distinct(0, 10) == 20);
  // Past 64 values a tile becomes a sparse sketch (3 bytes a register), past
  // 1,024 registers a dense one (4,096 bytes); estimates stay within 5%.
  OneAgg mid(AggKind::kCountDistinct);
  for (int i = 0; i < 300; i++) mid.Add(0, 0, h("m" + std::to_string(i)));
  CHECK(mid.Sec().size() < 300 * 3 + 16);
  CHECK(static_cast<double>(mid.Distinct(0, 0)) == doctest::Approx(300).epsilon(0.05));
  for (int i = 300; i < 5000; i++) mid.Add(0, 0, h("m" + std::to_string(i)));
  CHECK(mid.Sec().size() == 1 + 1 + hll::kRegisters);  // tile index, tag, registers
  CHECK(static_cast<double>(mid.Distinct(0, 0)) == doctest::Approx(5000).epsilon(0.05));
}

TEST_CASE("count_distinct unions of exact tiles equal a set of the values, the hash 0 included") {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 200; round++) {
    OneAgg d(AggKind::kCountDistinct);
    std::vector<std::set<uint32_t>> tiles(12);
    const uint32_t universe = 1 + static_cast<uint32_t>(rng() % 400);  // some rounds repeat values, some spill past 256
    for (int i = 0; i < 600; i++) {
      int64_t t = static_cast<int64_t>(rng() % 12);
      if (tiles[static_cast<size_t>(t)].size() >= 60) continue;  // stay exact (<= 64 a tile)
      uint32_t v = static_cast<uint32_t>(rng() % universe) * 0x9E3779B1u;  // 0 maps to the hash 0
      tiles[static_cast<size_t>(t)].insert(v);
      d.Add(t, 0, v);
    }
    int64_t lo = static_cast<int64_t>(rng() % 12), hi = lo + static_cast<int64_t>(rng() % 12);
    std::set<uint32_t> all;
    for (int64_t t = lo; t <= hi && t < 12; t++) all.insert(tiles[static_cast<size_t>(t)].begin(), tiles[static_cast<size_t>(t)].end());
    if (all.size() > 256) continue;  // a union past 256 values is estimated (the sketch test above)
    CHECK(d.Distinct(lo, hi) == all.size());
  }
}

TEST_CASE("last_n keeps the n newest by event time, ties in arrival order") {
  OneAgg l(AggKind::kLastN, 3);
  l.Add(100, 0, 0, "a");
  l.Add(300, 0, 0, "c");
  l.Add(200, 0, 0, "b");
  l.Add(300, 0, 0, "d");  // same time as c, arrived later: newer
  l.Add(50, 0, 0, "old");
  std::vector<std::pair<int64_t, std::string>> items;
  ForEachLastItem(l.Sec(), [&](int64_t ts, std::string_view v) { items.emplace_back(ts, v); });
  REQUIRE(items.size() == 3);
  CHECK(items[0] == std::make_pair(int64_t{300}, std::string("d")));
  CHECK(items[1] == std::make_pair(int64_t{300}, std::string("c")));
  CHECK(items[2] == std::make_pair(int64_t{200}, std::string("b")));
  OneAgg last(AggKind::kLast);
  last.Add(500, 0, 0, "x");
  last.Add(400, 0, 0, "older");
  last.Add(500, 0, 0, "y");
  items.clear();
  ForEachLastItem(last.Sec(), [&](int64_t ts, std::string_view v) { items.emplace_back(ts, v); });
  REQUIRE(items.size() == 1);
  CHECK(items[0].second == "y");
  // Canonical integers are stored as varints (as a listpack does) and come
  // back as the same text; anything else is kept as its bytes.
  const std::vector<std::string> texts = {"12345", "-7", "0", "007", "-0", "1e5", "+3", "", "999999999999999999",
                                          "9999999999999999999", "-999999999999999999", "12a", "x"};
  OneAgg many(AggKind::kLastN, static_cast<int>(texts.size()));
  for (size_t i = 0; i < texts.size(); i++) many.Add(static_cast<int64_t>(1000 - i), 0, 0, texts[i]);
  items.clear();
  ForEachLastItem(many.Sec(), [&](int64_t ts, std::string_view v) { items.emplace_back(ts, v); });
  REQUIRE(items.size() == texts.size());
  for (size_t i = 0; i < texts.size(); i++) CHECK(items[i].second == texts[i]);
  OneAgg ids(AggKind::kLastN, 10);
  for (int i = 0; i < 10; i++) ids.Add(1'795'680'000'000 + i * 1000, 0, 0, std::to_string(10000 + i));
  CHECK(ids.Sec().size() <= 6 + 10 * 3 + 9 * 2);  // first time, 3-byte integers, 2-byte time differences
}

TEST_CASE("where filters compile once and follow the comparison rules") {
  std::vector<std::string> paths;
  auto slot_of = [&](const std::string& p) {
    for (size_t i = 0; i < paths.size(); i++)
      if (paths[i] == p) return static_cast<int>(i);
    paths.push_back(p);
    return static_cast<int>(paths.size() - 1);
  };
  std::string err;
  auto f = Filter::Compile("action == 'click' and (price > 10 or tags.vip == true) and country not in ['FR', 'DE']", slot_of, &err);
  REQUIRE(f);
  REQUIRE(paths.size() == 4);
  std::vector<FieldValue> s(4);
  s[0].kind = ValueKind::kString;
  s[0].s = "click";
  s[1].kind = ValueKind::kInt;
  s[1].i = 11;
  s[3].kind = ValueKind::kString;
  s[3].s = "US";
  CHECK(f->Eval(s.data()));
  s[3].s = "DE";
  CHECK_FALSE(f->Eval(s.data()));
  s[3].kind = ValueKind::kMissing;  // missing: `not in` is true
  CHECK(f->Eval(s.data()));
  s[1].i = 10;
  CHECK_FALSE(f->Eval(s.data()));
  s[2].kind = ValueKind::kBool;
  s[2].b = true;
  CHECK(f->Eval(s.data()));
  s[0].kind = ValueKind::kInt;  // type mismatch: == is false
  CHECK_FALSE(f->Eval(s.data()));
  auto ne = Filter::Compile("action != 'click'", slot_of, &err);
  REQUIRE(ne);
  CHECK(ne->Eval(s.data()));  // missing/mismatched: != is true
  for (const char* bad : {"action ==", "action = 'x'", "(a == 1", "a in [1, 2", "a == 'x", "== 1", "a == 1 and", "a < null"}) {
    INFO(bad);
    err.clear();
    CHECK(Filter::Compile(bad, slot_of, &err) == nullptr);
    CHECK_FALSE(err.empty());
  }
}

namespace {
const char* kGood = R"(
sources:
  ev: {topic: ev, timestamp: {field: ts, unit: ms}}
entities:
  user: {key: uid}
views:
  v:
    entity: user
    source: ev
    ttl: 1h
    features:
      clicks: {agg: count, where: "kind == 'c'", windows: [1m, 5m]}
      amount: {agg: sum, field: amt, windows: [10m], resolution: 30s}
      last_kind: {agg: last, field: kind}
)";

std::string LoadError(const std::string& text) {
  try {
    Registry::LoadText(text, "reg.yaml");
  } catch (const RegistryError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("a valid registry resolves features and defaults the resolution") {
  auto r = Registry::LoadText(kGood, "reg.yaml");
  REQUIRE(r->views().size() == 1);
  const auto& a = r->views()[0].aggs;
  CHECK(a[0].resolution_ms == 1000);   // 1m / 60
  CHECK(a[1].resolution_ms == 30000);  // explicit
  FeatureRef f;
  std::string err;
  CHECK(r->ResolveFeature("user", "clicks_5m", &f, &err));
  CHECK(f.window == 1);
  CHECK(r->ResolveFeature("user", "v.last_kind", &f, &err));
  CHECK(f.window == -1);
  CHECK_FALSE(r->ResolveFeature("user", "clicks_2m", &f, &err));
  CHECK(err == "ERR unknown feature 'clicks_2m' for entity 'user'");
  CHECK(r->FeaturesOf("user").size() == 4);
  CHECK(r->version().size() == 16);
  CHECK(Registry::LoadText(kGood, "other.yaml")->version() == r->version());
}

TEST_CASE("every kind of bad registry is refused with file, line and problem") {
  std::string g = kGood;
  auto with = [&](const std::string& from, const std::string& to) {
    std::string t = g;
    size_t p = t.find(from);
    REQUIRE(p != std::string::npos);
    return t.replace(p, from.size(), to);
  };
  struct Case {
    std::string text, expect;
  } cases[] = {
      {g + "extra: 1\n", "unknown key 'extra'"},
      {with("ttl: 1h", "ttl: 1x"), "bad duration '1x'"},
      {with("agg: sum", "agg: median"), "unknown aggregation 'median'"},
      {with("kind == 'c'", "kind === 'c'"), "bad where"},
      {with("entity: user\n    source", "entity: nobody\n    source"), "undefined entity 'nobody'"},
      {with("source: ev\n    ttl", "source: nowhere\n    ttl"), "undefined source 'nowhere'"},
      {with("windows: [10m], resolution: 30s", "windows: [10m], resolution: 7s"), "not a multiple of the resolution"},
      {with("{agg: last, field: kind}", "{agg: last_n, field: kind}"), "last_n needs 'n'"},
      {with("{agg: last, field: kind}", "{agg: last, field: kind, colour: red}"), "unknown key 'colour'"},
      {with("{agg: sum, field: amt,", "{agg: sum,"), "needs a field"},
      {"views: [1, 2\n", "YAML syntax error"},
      {with("ttl: 1h", "ttl: 1h\n    backfill: maybe"), "backfill is true or false, not 'maybe'"},
  };
  for (auto& c : cases) {
    INFO(c.expect);
    std::string err = LoadError(c.text);
    CHECK(err.find("reg.yaml:") == 0);
    CHECK(err.find(c.expect) != std::string::npos);
  }
  // line numbers point at the problem
  CHECK(LoadError(with("ttl: 1h", "ttl: 1x")).find("reg.yaml:10:") == 0);
}

TEST_CASE("the event path plans per view and applies on the store") {
  auto r = Registry::LoadText(kGood, "reg.yaml");
  EventPlanner p;
  IngestStats stats;
  UpdateBatch ups;
  int64_t now = 1'700'000'000'000;
  CHECK(p.Plan(*r, 0, R"({"uid": 7, "kind": "c", "amt": 2.5, "ts": 1700000000000})", now, 300000, &ups, &stats) == "");
  CHECK(p.Plan(*r, 0, R"({"uid": 7, "kind": "c", "amt": "x", "ts": 1700000000000})", now, 300000, &ups, &stats) == "bad_field");
  CHECK(p.Plan(*r, 0, R"({"kind": "c", "ts": 1700000000000})", now, 300000, &ups, &stats) == "missing_key");
  CHECK(p.Plan(*r, 0, R"({"uid": 7, "ts": "soon"})", now, 300000, &ups, &stats) == "bad_timestamp");
  CHECK(p.Plan(*r, 0, R"({"uid": 7})", now, 300000, &ups, &stats) == "missing_timestamp");
  CHECK(p.Plan(*r, 0, R"([1,2])", now, 300000, &ups, &stats) == "not_object");
  CHECK(p.Plan(*r, 0, R"({"uid": )", now, 300000, &ups, &stats) == "invalid_json");
  CHECK(p.Plan(*r, 0, R"({"uid": 7, "kind": "c", "amt": 1, "ts": 1700000400000})", now, 300000, &ups, &stats) == "future");
  REQUIRE(ups.size() == 1);  // the rejected events left nothing in the batch
  CHECK(ups.key(0) == "user:7");
  CHECK(ups.aggs(0).size() == 3);
  ShardStore st;
  ups[0].key_hash = HashKey(ups.key(0));
  CHECK(ApplyViewUpdate(st, ups, 0, now, nullptr));
  Record* rec = st.Find("user:7", HashKey("user:7"), now);
  REQUIRE(rec != nullptr);
  CHECK(rec->type == ValueType::kFeature);
  CHECK(rec->expire_at() == 1'700'000'000'000 + 3'600'000);
  CHECK(st.expires_count() == 1);  // made with its expiry slot: counted once
  // A first event whose view TTL has already run out: no key, nothing counted.
  UpdateBatch late;
  late.AddText("user:9", HashKey("user:9"), ups[0].layout, now - 2 * 3'600'000, ups[0].view_name, 0, "");
  late[0].key_hash = HashKey("user:9");
  CHECK(ApplyViewUpdate(st, late, 0, now, nullptr));
  CHECK(st.Find("user:9", HashKey("user:9"), now) == nullptr);
  CHECK(st.expires_count() == 1);
  CHECK(st.size() == 1);
  st.PutString("user:8", HashKey("user:8"), "plain", 0);
  UpdateBatch other;
  other.AddText("user:8", HashKey("user:8"), ups[0].layout, ups[0].ts, ups[0].view_name, 0, "");
  CHECK(other.key(0) == "user:8");
  CHECK_FALSE(ApplyViewUpdate(st, other, 0, now, nullptr));  // wrongtype: the plain key is untouched
  CHECK(st.Find("user:8", HashKey("user:8"), now)->string_value() == "plain");

  // A view without a TTL: the new key has no expiry at all.
  std::string no_ttl = kGood;
  size_t at = no_ttl.find("ttl: 1h");
  REQUIRE(at != std::string::npos);
  no_ttl.replace(at, 7, "");
  auto r2 = Registry::LoadText(no_ttl, "reg.yaml");
  UpdateBatch ups2;
  CHECK(p.Plan(*r2, 0, R"({"uid": 5, "kind": "c", "amt": 1, "ts": 1700000000000})", now, 300000, &ups2, &stats) == "");
  REQUIRE(ups2.size() == 1);
  ShardStore st2;
  ups2[0].key_hash = HashKey(ups2.key(0));
  CHECK(ApplyViewUpdate(st2, ups2, 0, now, nullptr));
  Record* rec2 = st2.Find("user:5", HashKey("user:5"), now);
  REQUIRE(rec2 != nullptr);
  CHECK_FALSE(rec2->has_expiry());
  CHECK(st2.expires_count() == 0);
}

// ---------------------------------------------------------------------------
// Typed sources: `fields:` declares types; violations reject the event.

namespace {
// A registry text with its first `from` replaced by `to`.
std::string With(const std::string& text, const std::string& from, const std::string& to) {
  std::string t = text;
  size_t at = t.find(from);
  REQUIRE(at != std::string::npos);
  return t.replace(at, from.size(), to);
}
struct Refusal {
  std::string text, expect;
  int line;
};
// Each text is refused with "reg.yaml:<line>:" and the expected words.
void CheckRefusals(std::initializer_list<Refusal> cases) {
  for (auto& c : cases) {
    CAPTURE(c.expect);
    std::string err = LoadError(c.text);
    CHECK(err.find(c.expect) != std::string::npos);
    CHECK(err.find("reg.yaml:" + std::to_string(c.line) + ":") == 0);
  }
}

const char* kTyped = R"(
sources:
  ev:
    topic: ev
    timestamp: {field: ts, unit: ms}
    fields:
      uid: int
      amt: float
      kind: {enum: [click, view, purchase]}
      name: string
      vip: bool
      region: {type: string, required: true}
entities:
  user: {key: uid}
views:
  v:
    entity: user
    source: ev
    features:
      clicks: {agg: count, windows: [1m]}
      last_kind: {agg: last, field: kind}
)";
}  // namespace

TEST_CASE("typed sources: each declared type accepts its values and rejects the others") {
  auto r = Registry::LoadText(kTyped, "reg.yaml");
  REQUIRE(r->sources()[0].checks.size() == 6);
  EventPlanner p;
  IngestStats stats;
  UpdateBatch ups;
  const int64_t now = 1'700'000'000'000;
  auto plan = [&](const std::string& fields) {
    return p.Plan(*r, 0, "{\"ts\": 1700000000000, \"region\": \"eu\", " + fields + "}", now, 300000, &ups, &stats);
  };
  // Accepted: every type as declared; optional fields absent or null.
  CHECK(plan(R"("uid": 7, "amt": 2.5, "kind": "click", "name": "x", "vip": true)") == "");
  CHECK(plan(R"("uid": 7, "amt": 2, "kind": "view")") == "");  // an int is a float
  CHECK(plan(R"("uid": 7, "amt": null, "name": null, "kind": "view")") == "");
  CHECK(plan(R"("uid": -9223372036854775808, "kind": "purchase")") == "");
  // bad_type, for each type.
  for (const char* bad : {R"("uid": 7.5)", R"("uid": "7")", R"("uid": true)", R"("uid": 7, "amt": "2.5")",
                          R"("uid": 7, "amt": [1])", R"("uid": 7, "name": 3)", R"("uid": 7, "vip": 1)",
                          R"("uid": 7, "vip": "true")", R"("uid": 7, "kind": 1)", R"("uid": 7, "kind": {"a": 1})"}) {
    CAPTURE(bad);
    CHECK(plan(bad) == "bad_type");
  }
  // bad_enum: a string outside the list (case matters).
  for (const char* bad : {R"("uid": 7, "kind": "Click")", R"("uid": 7, "kind": "")", R"("uid": 7, "kind": "clicks")"}) {
    CAPTURE(bad);
    CHECK(plan(bad) == "bad_enum");
  }
  // A required field absent or null.
  CHECK(p.Plan(*r, 0, R"({"ts": 1700000000000, "uid": 7})", now, 300000, &ups, &stats) == "missing_field");
  CHECK(p.Plan(*r, 0, R"({"ts": 1700000000000, "uid": 7, "region": null})", now, 300000, &ups, &stats) ==
        "missing_field");
  CHECK(ups.size() == 4);  // only the accepted events left updates
}

TEST_CASE("typed sources: bad declarations are refused with file:line; types change the version") {
  std::string good = kTyped;
  auto with = [&](const std::string& from, const std::string& to) { return With(good, from, to); };
  CheckRefusals({
      {with("      uid: int", "      uid: integer"), "unknown type 'integer'", 7},
      {with("      uid: int", "      uid: [int]"), "needs a type", 7},
      {with("      kind: {enum: [click, view, purchase]}", "      kind: {enum: []}"), "enum must be a non-empty list", 9},
      {with("      kind: {enum: [click, view, purchase]}", "      kind: {enum: [click, click]}"), "listed twice", 9},
      {with("      kind: {enum: [click, view, purchase]}", "      kind: {enum: [a], type: int}"), "enum and type", 9},
      {with("      region: {type: string, required: true}", "      region: {type: string, required: yes please}"),
       "required must be true or false", 12},
      {with("      region: {type: string, required: true}", "      region: {required: true}"), "needs a type or an enum",
       12},
      {with("      region: {type: string, required: true}", "      region: {type: string, colour: red}"),
       "unknown key 'colour'", 12},
      {with("      name: string", "      name: string\n      uid: float"), "field 'uid' declared twice", 11},
      {with("      kind: {enum: [click, view, purchase]}", "      kind: {enum: [click, 2]}"),
       "enum value 2 is not a string", 9},
      {with("      kind: {enum: [click, view, purchase]}", "      kind: {enum: [click, true]}"),
       "enum value true is not a string", 9},
      {with("      uid: int", "      ts: string"), "is the source's timestamp", 7},
  });
  std::string listed = R"(
sources:
  ev:
    fields: [uid, kind]
)";
  CHECK(LoadError(listed).find("reg.yaml:4: fields of source 'ev' must be a mapping") == 0);
  // Quoted numbers are strings; YAML's yes/True are booleans for required.
  CHECK(LoadError(with("view, purchase]", "view, \"2\"]")) == "");
  auto yes = Registry::LoadText(with("required: true", "required: yes"), "reg.yaml");
  CHECK(yes->sources()[0].checks.back().required);
  CHECK(Registry::LoadText(with("required: true", "required: True"), "reg.yaml")->sources()[0].checks.back().required);
  CHECK(LoadError(with("      uid: int", "      ts: int")) == "");
  auto a = Registry::LoadText(kTyped, "reg.yaml");
  auto b = Registry::LoadText(with("      uid: int", "      uid: float"), "reg.yaml");
  auto c = Registry::LoadText(with("view, purchase]", "view, buy]"), "reg.yaml");
  CHECK(a->version() != b->version());
  CHECK(a->version() != c->version());
  CHECK(a->version() == Registry::LoadText(kTyped, "reg.yaml")->version());
}

// ---- quantiles (storage/quantile.h) ----

namespace {
// The value of rank floor(q (n - 1)) of the sorted values: what a DDSketch
// answers within its relative accuracy.
double ExactQuantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  double exact = q * static_cast<double>(v.size() - 1);
  return v[std::min(v.size() - 1, static_cast<size_t>(std::floor(exact * (1 + 1e-12))))];
}
bool WithinAccuracy(double got, double want) {
  return std::fabs(got - want) <= dds::kAlpha * std::fabs(want) * (1 + 1e-9) + 1e-300;
}
}  // namespace

TEST_CASE("quantile sketches answer within 1% of the exact value, for every q and shape of data") {
  std::mt19937 rng(7);
  std::lognormal_distribution<double> lat(3, 1.5);
  std::uniform_real_distribution<double> uni(-500, 500);
  std::exponential_distribution<double> expo(0.01);
  for (int shape = 0; shape < 4; shape++) {
    dds::Sketch sk;
    std::vector<double> vals;
    for (int i = 0; i < 5000; i++) {
      double x = shape == 0 ? lat(rng) : shape == 1 ? uni(rng) : shape == 2 ? expo(rng) : std::round(uni(rng) / 100);
      sk.Add(x);
      vals.push_back(x);
    }
    CHECK(sk.count() == vals.size());
    for (double q : {0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0}) {
      double got = 0;
      REQUIRE(sk.Quantile(q, &got));
      CAPTURE(shape);
      CAPTURE(q);
      CHECK(WithinAccuracy(got, ExactQuantile(vals, q)));
    }
  }
  dds::Sketch empty;
  double x;
  CHECK_FALSE(empty.Quantile(0.5, &x));
}

TEST_CASE("quantile sketches merge exactly and round-trip through their encoding") {
  std::mt19937 rng(8);
  std::lognormal_distribution<double> lat(2, 2);
  dds::Sketch all, merged;
  std::string a, b;
  dds::Sketch part;
  for (int i = 0; i < 3000; i++) {
    double x = i % 7 == 0 ? -lat(rng) : i % 11 == 0 ? 0.0 : lat(rng);
    all.Add(x);
    part.Add(x);
    if (i == 1499) {
      part.Encode(&a);
      part.Clear();
    }
  }
  part.Encode(&b);
  merged.MergeEncoded(reinterpret_cast<const uint8_t*>(a.data()));
  merged.MergeEncoded(reinterpret_cast<const uint8_t*>(b.data()));
  std::string ea, eb;
  all.Encode(&ea);
  merged.Encode(&eb);
  CHECK(ea == eb);  // the same buckets and counts, so the same bytes
  CHECK(dds::EncodedSize(reinterpret_cast<const uint8_t*>(ea.data())) == ea.size());
  dds::Sketch back;
  back.Decode(reinterpret_cast<const uint8_t*>(ea.data()));
  std::string again;
  back.Encode(&again);
  CHECK(again == ea);
  const uint8_t* p = reinterpret_cast<const uint8_t*>(ea.data());
  CHECK(dds::Check(&p, p + ea.size()) == "");
  CHECK(p == reinterpret_cast<const uint8_t*>(ea.data()) + ea.size());
}

TEST_CASE("quantile sketches: bad bytes are named, a store folds past its bucket limit") {
  dds::Sketch sk;
  sk.Add(1.5);
  sk.Add(-3);
  std::string good;
  sk.Encode(&good);
  auto check = [](std::string bytes) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data());
    return dds::Check(&p, p + bytes.size());
  };
  CHECK(check(good) == "");
  CHECK(check(good.substr(0, good.size() - 1)) == "truncated quantile sketch");
  std::string longer = good;
  longer[0] = static_cast<char>(longer[0] - 1);  // the length says one byte less
  CHECK(check(longer) != "");
  CHECK(check(std::string("\x03\x00\x00\x00", 4)) == "bad quantile sketch count");  // no value at all
  CHECK(check(std::string("\x05\x00\x01\x02\x00\x00", 6)) == "bad quantile bucket count");
  CHECK(check(std::string("\x07\x00\x02\x02\x01\x00\x01\x00", 8)) == "quantile buckets out of order");
  // Two bucket counts of 2^53 each: the sum would pass 2^53 (and, with
  // enough of them, wrap): refused.
  std::string big("\x00\x02\x02", 3);  // zeros 0, two positive buckets, key 1
  big += "\x80\x80\x80\x80\x80\x80\x80\x10";  // count 2^53
  big += "\x01\x80\x80\x80\x80\x80\x80\x80\x10";  // key +1, count 2^53
  big += '\0';  // no negatives
  CHECK(check(std::string(1, static_cast<char>(big.size())) + big) == "bad quantile bucket count");
  // q (n - 1) a hair under a whole number in doubles still means that rank.
  dds::Sketch ranks;
  for (int i = 1; i <= 101; i++) ranks.Add(i);
  double r29 = 0;
  REQUIRE(ranks.Quantile(0.29, &r29));  // 0.29 x 100 = 28.999999999999996
  CHECK(WithinAccuracy(r29, 30));      // the value of rank 29
  // Values spanning more than gamma^2048: the smallest magnitudes fold.
  dds::Sketch wide;
  for (int i = -1500; i <= 1500; i++) wide.Add(std::pow(dds::kGamma, i));
  std::string w;
  wide.Encode(&w);
  CHECK(check(w) == "");
  CHECK(wide.count() == 3001);
  double top = 0;
  REQUIRE(wide.Quantile(1.0, &top));
  CHECK(WithinAccuracy(top, std::pow(dds::kGamma, 1500)));
}

TEST_CASE("quantile tiles of an entity merge per window like the values they hold") {
  OneAgg t(AggKind::kQuantile, 0, 10, 10'000);
  std::mt19937 rng(9);
  std::lognormal_distribution<double> lat(4, 1);
  std::vector<std::pair<int64_t, double>> raw;
  for (int i = 0; i < 4000; i++) {
    int64_t ts = static_cast<int64_t>(rng() % 1000);  // 100 tiles, out of order
    double x = lat(rng);
    t.Add(ts, x);
    raw.emplace_back(ts / 10, x);
  }
  CHECK(CountSection(AggKind::kQuantile, t.Sec()).tiles == 100);
  dds::Sketch sk;
  for (int k = 0; k < 40; k++) {
    int64_t lo = rng() % 100, hi = lo + rng() % 50;
    std::vector<double> want;
    for (auto& [tile, x] : raw)
      if (tile >= lo && tile <= hi) want.push_back(x);
    MergeQuantileTiles(t.Sec(), lo, hi, &sk);
    REQUIRE(sk.count() == want.size());
    for (double q : {0.5, 0.95, 0.99}) {
      double got = 0;
      REQUIRE(sk.Quantile(q, &got));
      CHECK(WithinAccuracy(got, ExactQuantile(want, q)));
    }
  }
  // 40 values a tile, over a factor of ~50: well under 200 bytes a tile.
  CHECK(t.Sec().size() / 100 < 200);
}

TEST_CASE("quantile registries: names, FWINDOW names, refusals") {
  const char* text = R"(
sources:
  ev:
    topic: ev
    timestamp: {field: ts, unit: ms}
    fields:
      kind: string
entities:
  user: {key: uid}
views:
  v:
    entity: user
    source: ev
    features:
      lat: {agg: quantile, field: ms, q: [0.5, 0.95, 0.999], windows: [1m, 1h]}
      one: {agg: quantile, field: ms, q: [0.9], windows: [1m]}
)";
  auto r = Registry::LoadText(text, "reg.yaml");
  FeatureRef f;
  std::string err;
  REQUIRE(r->ResolveFeature("user", "lat_p95_1h", &f, &err));
  CHECK(f.q == 1);
  CHECK(f.window == 1);
  REQUIRE(r->ResolveFeature("user", "v.lat_p999_1m", &f, &err));
  CHECK(f.q == 2);
  auto tiny = Registry::LoadText(With(text, "q: [0.9]", "q: [0.00001, 0.125]"), "reg.yaml");
  CHECK(tiny->ResolveFeature("user", "one_p0001_1m", &f, &err));
  CHECK(tiny->ResolveFeature("user", "one_p125_1m", &f, &err));
  CHECK_FALSE(r->ResolveFeature("user", "lat_1m", &f, &err));
  CHECK(r->FeaturesOf("user").size() == 7);
  REQUIRE(r->ResolveAggregation("user", "lat_p50", &f, &err));
  CHECK(f.q == 0);
  REQUIRE(r->ResolveAggregation("user", "one", &f, &err));
  CHECK(f.q == 0);
  CHECK_FALSE(r->ResolveAggregation("user", "lat", &f, &err));
  CHECK(err.find("several quantiles") != std::string::npos);
  // The q list is not in the signature (a sketch answers any q), but it is in the version.
  std::string t2 = text;
  t2.replace(t2.find("0.999"), 5, "0.99");
  auto r2 = Registry::LoadText(t2, "reg.yaml");
  CHECK(r2->views()[0].aggs[0].signature == r->views()[0].aggs[0].signature);
  CHECK(r2->version() != r->version());
  auto with = [&](const std::string& from, const std::string& to) { return With(text, from, to); };
  CheckRefusals({
      {with(", q: [0.9]", ""), "quantile needs a non-empty 'q' list", 16},
      {with("q: [0.9]", "q: [1.5]"), "each q must be a number from 0 to 1", 16},
      {with("q: [0.9]", "q: [high]"), "each q must be a number from 0 to 1", 16},
      {with("q: [0.9]", "q: [0.9, 0.90]"), "gives the name 'p90' twice", 16},
      {with("field: ms, q: [0.9]", "field: kind, q: [0.9]"), "declares 'kind' as string", 16},
      {with("{agg: quantile, field: ms, q: [0.9]", "{agg: sum, field: ms, q: [0.9]"), "'q' is only for quantile", 16},
      {with("{agg: quantile, field: ms, q: [0.9], windows: [1m]}", "{agg: quantile, field: ms, q: [0.9]}"),
       "needs a non-empty 'windows' list", 16},
      {with("      one:", "      lat_p50: {agg: count, windows: [10m]}\n      one:"),
       "has the name FWINDOW gives quantile p50 of 'lat'", 16},
  });
}

// ---- feature versions ----

namespace {
const char* kVersioned = R"(
sources:
  ev: {topic: ev, timestamp: {field: ts, unit: ms}}
entities:
  user: {key: uid}
views:
  act:
    entity: user
    source: ev
    features:
      clicks: {agg: count, windows: [5m]}
      last_kind: {agg: last, field: kind}
  act@2:
    entity: user
    source: ev
    features:
      clicks: {agg: count, where: "kind == 'click'", windows: [5m]}
      spend: {agg: sum, field: amt, windows: [1h]}
  other:
    entity: user
    source: ev
    version: 3
    features:
      n: {agg: count, windows: [1m]}
)";
}  // namespace

TEST_CASE("feature versions: names, qualifiers, defaults and refusals") {
  auto r = Registry::LoadText(kVersioned, "reg.yaml");
  REQUIRE(r->views().size() == 3);
  CHECK(r->views()[0].name == "act");
  CHECK(r->views()[1].name == "act@2");
  CHECK(r->views()[2].name == "other@3");
  CHECK(r->FindView("act") == 0);
  CHECK(r->FindView("act@1") == 0);
  CHECK(r->FindView("act@2") == 1);
  CHECK(r->FindView("act@3") == -1);
  CHECK(r->FindView("other") == 2);  // its only version is its default
  CHECK(r->VersionsOf("act") == std::vector<int>{1, 2});
  CHECK(r->DefaultVersion("act") == 1);
  FeatureRef f;
  std::string err;
  auto view_of = [&](const Registry& reg, const char* name) {
    FeatureRef g;
    std::string e;
    return reg.ResolveFeature("user", name, &g, &e) ? reg.views()[static_cast<size_t>(g.view)].name : e;
  };
  CHECK(view_of(*r, "clicks_5m") == "act");
  CHECK(view_of(*r, "act.clicks_5m") == "act");
  CHECK(view_of(*r, "act@1.clicks_5m") == "act");
  CHECK(view_of(*r, "act@2.clicks_5m") == "act@2");
  CHECK(view_of(*r, "act@2.spend_1h") == "act@2");
  CHECK(view_of(*r, "spend_1h") == "ERR unknown feature 'spend_1h' for entity 'user'");
  CHECK(view_of(*r, "n_1m") == "other@3");
  std::vector<std::string> names;
  for (auto& [n, g] : r->FeaturesOf("user")) names.push_back(n);
  CHECK(names == std::vector<std::string>{"clicks_5m", "last_kind", "n_1m"});
  // Version 2 as the default: unqualified names move, qualified ones stay.
  auto r2 = r->WithDefaults({{"act", 2}});
  CHECK(r2->DefaultVersion("act") == 2);
  CHECK(view_of(*r2, "clicks_5m") == "act@2");
  CHECK(view_of(*r2, "act.clicks_5m") == "act@2");
  CHECK(view_of(*r2, "act@1.clicks_5m") == "act");
  CHECK(view_of(*r2, "spend_1h") == "act@2");
  CHECK(view_of(*r2, "last_kind") == "ERR unknown feature 'last_kind' for entity 'user'");
  CHECK(view_of(*r2, "act@1.last_kind") == "act");
  CHECK(view_of(*r2, "act.last_kind") == "ERR unknown feature 'act.last_kind' for entity 'user'");
  // The same whatever the order of the versions in the file.
  std::string swapped = kVersioned;
  size_t v1 = swapped.find("  act:\n"), v2 = swapped.find("  act@2:\n"), v3 = swapped.find("  other:\n");
  swapped = swapped.substr(0, v1) + swapped.substr(v2, v3 - v2) + swapped.substr(v1, v2 - v1) + swapped.substr(v3);
  auto s2 = Registry::LoadText(swapped, "reg.yaml")->WithDefaults({{"act", 2}});
  CHECK(view_of(*s2, "act.clicks_5m") == "act@2");
  CHECK(view_of(*s2, "act.last_kind") == "ERR unknown feature 'act.last_kind' for entity 'user'");
  CHECK(view_of(*s2, "act@1.clicks_5m") == "act");
  names.clear();
  for (auto& [n, g] : r2->FeaturesOf("user")) names.push_back(n);
  CHECK(names == std::vector<std::string>{"clicks_5m", "spend_1h", "n_1m"});
  CHECK(r2->version() == r->version());  // the default is not a definition
  CHECK(r->WithDefaults({{"act", 7}})->DefaultVersion("act") == 1);  // no such version: the lowest
  CHECK(r2->ResolveAggregation("user", "clicks", &f, &err));
  CHECK(r2->views()[static_cast<size_t>(f.view)].name == "act@2");
  std::string text = kVersioned;
  auto with = [&](const std::string& from, const std::string& to) { return With(text, from, to); };
  CheckRefusals({
      {with("  act@2:", "  act@0:"), "a version is a whole number from 1 to 1000, not '0'", 13},
      {with("  act@2:", "  act@two:"), "not 'two'", 13},
      {with("  act@2:", "  a@2@3:"), "bad view name 'a@2@3'", 13},
      {with("  act@2:\n    entity: user", "  act@2:\n    version: 3\n    entity: user"), "disagrees with its name", 14},
      {with("  other:", "  act@1:\n    entity: user\n    source: ev\n    features: {x: {agg: count, windows: [1m]}}\n  other:"),
       "view 'act' version 1 defined twice", 19},
      {With(with("  user: {key: uid}", "  user: {key: uid}\n  item: {key: iid}"), "  act@2:\n    entity: user",
            "  act@2:\n    entity: item"),
       "every version of 'act' must have the entity of 'act' (user)", 15},
  });
}

TEST_CASE("reconcile: a view with nothing left under its new layout is dropped and the next one still moves") {
  // Three views of one entity; the first moves to a layout sharing none of
  // its aggregations (dropped), the second and third to new layouts that keep theirs.
  auto layout = [](uint64_t view, std::vector<uint64_t> sigs, int64_t ttl) {
    ViewLayout l;
    l.view_id = view;
    l.ttl_ms = ttl;
    for (uint64_t s : sigs) l.aggs.push_back(AggSpec{AggKind::kCount, s, 1000, 60'000, 0});
    return InternLayout(l);
  };
  const uint64_t a = 0xa1a1, b = 0xb2b2, c = 0xc3c3;
  uint16_t a1 = layout(a, {11}, 0), b1 = layout(b, {21}, 0), c1 = layout(c, {31}, 0);
  EntityRecord* e = EntityRecord::New();
  AggInput in;
  for (uint16_t l : {a1, b1, c1}) EntityApply(&e, l, 5000, 5000, &in, 1);
  REQUIRE(e->nviews() == 3);
  uint16_t a2 = layout(a, {12}, 0), b2 = layout(b, {21}, 3'600'000), c2 = layout(c, {31, 32}, 0);
  std::map<uint64_t, uint16_t> to{{a, a2}, {b, b2}, {c, c2}};
  CHECK(EntityReconcile(&e, [&](uint64_t view) { return to[view]; }));
  std::vector<uint16_t> now;
  e->ForEachView([&](const EntityRecord::View& v) { now.push_back(v.layout_id); });
  CHECK(now == std::vector<uint16_t>{b2, c2});  // a dropped, b and c both moved
  CHECK(MergeTiles(AggKind::kCount, e->Section(e->ViewAt(0), 0), 0, 10).n == 1);
  EntityRecord::Destroy(e);
}

namespace {
// One session aggregation (operation `op`, gap, sessions_<W> up to maxw).
struct OneSession : OneAgg {
  OneSession(AggKind op, int64_t gap, int64_t maxw) : OneAgg(AggKind::kSession, static_cast<int>(op), gap, maxw) {}
  std::vector<SessionView> All() const {
    std::vector<SessionView> out;
    ForEachSession(Sec(), [&](const SessionView& s) {
      out.push_back(s);
      return true;
    });
    return out;
  }
};
}  // namespace

TEST_CASE("sessions: in order, out of order and bridging events give the sessions of the sorted events") {
  std::mt19937 rng(7);
  for (int round = 0; round < 20; round++) {
    const int64_t gap = 100;
    OneSession s(AggKind::kSum, gap, 1'000'000);
    std::vector<std::pair<int64_t, double>> evs;
    int64_t t = 0;
    for (int i = 0; i < 200; i++) {
      t += rng() % 3 == 0 ? 100 + rng() % 300 : rng() % 99 + 1;
      evs.emplace_back(t, static_cast<double>(rng() % 50));
    }
    auto sent = evs;
    std::shuffle(sent.begin(), sent.end(), rng);
    for (auto [ts, x] : sent) s.Add(ts, x);
    std::sort(evs.begin(), evs.end());
    struct Want {
      int64_t start, end;
      uint64_t n;
      double sum;
    };
    std::vector<Want> want;
    for (auto [ts, x] : evs) {
      if (!want.empty() && ts - want.back().end < gap) {
        want.back().end = ts;
        want.back().n++;
        want.back().sum += x;
      } else {
        want.push_back({ts, ts, 1, x});
      }
    }
    std::reverse(want.begin(), want.end());  // newest first
    auto got = s.All();
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); i++) {
      CHECK(got[i].start == want[i].start);
      CHECK(got[i].end == want[i].end);
      CHECK(got[i].events == want[i].n);
      CHECK(got[i].x == doctest::Approx(want[i].sum));
    }
  }
}

TEST_CASE("sessions: count_distinct merges exact sets and sketches when a late event joins two sessions") {
  OneSession s(AggKind::kCountDistinct, 1000, 1'000'000);
  std::mt19937 rng(3);
  std::set<uint32_t> all;
  for (int i = 0; i < 3000; i++) {  // session A: 0..2999 ms, session B: 5000..7999 ms
    uint32_t a = static_cast<uint32_t>(rng()), b = static_cast<uint32_t>(rng());
    s.Add(i, 0, a);
    s.Add(5000 + i, 0, b);
    all.insert(a);
    all.insert(b);
  }
  uint32_t few[] = {1, 2, 3};
  OneSession small(AggKind::kCountDistinct, 1000, 1'000'000);
  for (uint32_t h : few) small.Add(10 + h, 0, h);
  small.Add(1500, 0, 2);  // no bridge: 1500 - 13 >= 1000
  small.Add(700, 0, 9);   // joins both: 700 - 13 < 1000 and 1500 - 700 < 1000
  auto sm = small.All();
  REQUIRE(sm.size() == 1);
  CHECK(DistinctValueCount(sm[0].value) == 4);
  REQUIRE(s.All().size() == 2);
  s.Add(4000, 0, 42);  // 4000 - 2999 < 1000 and 5000 - 4000 < 1000... no: 1001 and 1000
  CHECK(s.All().size() == 3);
  s.Add(3990, 0, 42);  // 3990 - 2999 = 991 and 4000 - 3990 = 10: joins A and the event at 4000
  s.Add(4500, 0, 43);  // 4500 - 4000 = 500 and 5000 - 4500 = 500: joins everything
  all.insert(42);
  all.insert(43);
  auto one = s.All();
  REQUIRE(one.size() == 1);
  CHECK(one[0].events == 6003);
  const double est = static_cast<double>(DistinctValueCount(one[0].value));
  CHECK(std::abs(est - static_cast<double>(all.size())) / static_cast<double>(all.size()) < 0.05);
}

TEST_CASE("sessions: the trim keeps the current session and those inside the windows; last keeps the newest value") {
  const int64_t gap = 1000, maxw = 10'000;
  OneSession s(AggKind::kLast, gap, maxw);
  s.Add(0, 0, 0, "a");
  s.Add(5000, 0, 0, "b");
  s.Add(20'000, 0, 0, "c");
  s.Add(19'500, 0, 0, "older");  // late: joins the session of "c" but is not its last
  REQUIRE(s.All().size() == 3);
  char buf[21];
  CHECK(LastValueText(s.All()[0].value, buf) == "c");
  CHECK(s.All()[0].start == 19'500);
  // A session goes once closed: its last event is the horizon (10 s, the
  // largest window) old.
  const int64_t reach = maxw;
  CHECK(!EntityTrim(&s.e, 5000 + reach - 1));
  CHECK(s.All().size() == 2);  // the session of 0 went, that of 5000 not yet
  CHECK(!EntityTrim(&s.e, 5000 + reach));
  auto left = s.All();
  REQUIRE(left.size() == 1);
  CHECK(left[0].start == 19'500);
  CHECK(!EntityTrim(&s.e, 20'000 + reach - 1));
  CHECK(EntityTrim(&s.e, 20'000 + reach));  // everything past: the entity is empty
}

TEST_CASE("sessions: a snapshot's session section is checked (operation, order, overlap, truncation)") {
  OneSession s(AggKind::kMean, 100, 1'000'000);
  s.Add(0, 1);
  s.Add(50, 3);
  s.Add(1000, 5);
  const std::string good(s.e->bytes());
  std::vector<uint16_t> ids(s.layout + 1u, 0);
  ids[s.layout] = s.layout;
  std::string copy = good;
  CHECK(ValidateEntityBytes(&copy, 1, ids) == "");
  // The section: varint length at the view header's end, then the newest session.
  const size_t sec = 10 + 1;  // u16 layout | i64 newest | varint length (1 byte here)
  std::vector<std::pair<std::string, std::string>> bad;
  {
    std::string b = good;
    size_t key_len = 2;  // zigzag(1000) takes 2 bytes
    b[sec + key_len] = static_cast<char>(AggKind::kSum);  // another operation
    bad.emplace_back(b, "session of another operation");
  }
  {
    std::string b = good;
    b[sec + 2] = static_cast<char>(AggKind::kStddev);
    bad.emplace_back(b, "session of another operation");
  }
  {
    std::string b = good;
    b[sec + 2 + 1 + 1] = 0;  // events 0
    bad.emplace_back(b, "bad session events");
  }
  {
    // Two sessions 100 ms apart (gap 100: not one); the older one's
    // duration made 100 runs into the newer one.
    OneSession f(AggKind::kMean, 100, 1'000'000);
    f.Add(0, 1);
    f.Add(100, 5);
    std::string b(f.e->bytes());
    std::vector<uint16_t> fids(f.layout + 1u, 0);
    fids[f.layout] = f.layout;
    std::string ok = b;
    REQUIRE(ValidateEntityBytes(&ok, 1, fids) == "");
    // newest: key zigzag(100) (2 bytes), op, duration, events, f64; then
    // the older: key difference (1 byte), op, duration.
    const size_t older_dur = sec + 2 + 1 + 1 + 1 + 8 + 1 + 1;
    REQUIRE(b[older_dur] == 0);
    for (char dur : {100, 1}) {  // overlapping, or less than the gap before the newer one
      b[older_dur] = dur;
      std::string x = b;
      CHECK(ValidateEntityBytes(&x, 1, fids).find("sessions closer than the gap") != std::string::npos);
    }
  }
  for (auto& [b, why] : bad) {
    std::string x = b;
    CHECK(ValidateEntityBytes(&x, 1, ids).find(why) != std::string::npos);
  }
  for (size_t n = sec; n < good.size(); n++) {  // every truncation of the section
    std::string x = good.substr(0, n);
    CHECK(ValidateEntityBytes(&x, 1, ids) != "");
  }
}

TEST_CASE("sessions: a session closes for good a horizon after its last event; an older event starts none") {
  OneSession s(AggKind::kCount, 1000, 0);  // no windows: the horizon is the gap
  s.now = 10'000;
  CHECK_FALSE(s.Add(9'000));  // 9000 <= 10000 - 1000: too old, and no session to join
  EntityRecord::View v;
  CHECK_FALSE(s.e->FindView(LayoutAt(s.layout).view_id, &v));  // no view made for it
  CHECK(s.Add(9'500));
  s.now = 10'400;
  CHECK(s.Add(9'000));  // as old, but it reaches the open session (9500 - 9000 < gap): it joins
  auto one = s.All();
  REQUIRE(one.size() == 1);
  CHECK((one[0].start == 9'000 && one[0].end == 9'500 && one[0].events == 2));
  s.now = 10'500;  // the session ended at 9500: closed now
  CHECK_FALSE(s.Add(9'400));  // it would have joined; closed, so too old
  CHECK(s.Add(9'600));        // newer than the horizon: a session of its own, the closed one is not joined
  one = s.All();
  REQUIRE(one.size() == 1);  // (the closed one went with the rewrite)
  CHECK((one[0].start == 9'600 && one[0].events == 1));
  // Out of order: only the open sessions are joined.
  OneSession w(AggKind::kSum, 100, 5'000);  // horizon 5 s
  w.now = 0;
  for (int64_t t : {1'000, 2'000, 3'000}) CHECK(w.Add(t, 1));
  w.now = 6'050;  // 1000 closed (6050 - 5000 = 1050 >= 1000), 2000 and 3000 open
  CHECK(w.Add(2'050, 5));  // joins 2000
  CHECK_FALSE(w.Add(1'040, 7));  // would join 1000, closed; 1040 is older than the horizon
  auto ws = w.All();
  REQUIRE(ws.size() == 2);  // the rewrite dropped the closed session
  CHECK((ws[0].start == 3'000 && ws[1].start == 2'000 && ws[1].x == 6 && ws[1].end == 2'050));
}

TEST_CASE("sessions: at most kMaxSessions are kept, in order and out of order") {
  OneSession s(AggKind::kCount, 3, 0);
  for (int64_t i = 0; i < 5000; i++) CHECK(s.Add(4 * i));
  auto all = s.All();
  REQUIRE(all.size() == kMaxSessions);
  CHECK(all.front().start == 4 * 4999);
  CHECK(all.back().start == 4 * static_cast<int64_t>(5000 - kMaxSessions));
  CHECK(s.Add(4 * 4000 + 2));  // bridges two sessions
  CHECK(s.All().size() == kMaxSessions - 1);
  CHECK(s.Add(4 * 100));  // older than every kept one: kept, the oldest now
  CHECK(s.All().size() == kMaxSessions);
  CHECK(s.All().back().start == 400);
  CHECK(s.Add(4 * 50));  // older still: past the cap, so it is the one that goes
  CHECK(s.All().size() == kMaxSessions);
  CHECK(s.All().back().start == 400);
  // Every entry is at least 4 bytes: the section holds the cap in 16 KB or more.
  CHECK(s.Sec().size() >= 4 * kMaxSessions);
}

TEST_CASE("sessions: count_distinct merges two sparse sketches when a late event joins their sessions") {
  OneSession s(AggKind::kCountDistinct, 1000, 0);
  std::mt19937 rng(11);
  std::set<uint32_t> all;
  for (int i = 0; i < 300; i++) {  // past the exact set (64), short of the dense sketch
    uint32_t a = static_cast<uint32_t>(rng()), b = static_cast<uint32_t>(rng());
    s.Add(i, 0, a);
    s.Add(2000 + i, 0, b);
    all.insert(a);
    all.insert(b);
  }
  REQUIRE(s.All().size() == 2);
  uint64_t tag;
  varint::Get(s.All()[0].value, &tag);
  REQUIRE(tag % 2 == 1);
  REQUIRE(tag != 1);  // sparse
  s.Add(1200, 0, 5);  // 1200 - 299 < 1000 and 2000 - 1200 < 1000: one session
  all.insert(5);
  auto one = s.All();
  REQUIRE(one.size() == 1);
  CHECK(one[0].events == 601);
  const double est = static_cast<double>(DistinctValueCount(one[0].value));
  CHECK(std::abs(est - static_cast<double>(all.size())) / static_cast<double>(all.size()) < 0.05);
}

TEST_CASE("sessions: state moves only to the same definition (a signature with another operation starts empty)") {
  ViewLayout l;
  l.view_id = 77'000'001;
  l.aggs.push_back(AggSpec{AggKind::kSession, 9, 100, 0, static_cast<int>(AggKind::kSum)});
  const uint16_t sum = InternLayout(l);
  l.aggs[0].n = static_cast<int>(AggKind::kCountDistinct);  // same signature (a hostile snapshot's claim)
  const uint16_t distinct = InternLayout(l);
  REQUIRE(distinct > sum);
  EntityRecord* e = EntityRecord::New();
  AggInput in;
  in.x = 5;
  in.hash = 7;
  CHECK(EntityApply(&e, sum, 1000, 1000, &in, 1) == 0);
  CHECK(EntityApply(&e, distinct, 1050, 1050, &in, 1) == 0);  // the view moves to the newer layout
  EntityRecord::View v;
  REQUIRE(e->FindView(l.view_id, &v));
  CHECK(v.layout_id == distinct);
  std::vector<SessionView> got;
  auto collect = [&] {
    got.clear();
    REQUIRE(e->FindView(l.view_id, &v));
    ForEachSession(e->Section(v, 0), [&](const SessionView& x) {
      got.push_back(x);
      return true;
    });
  };
  collect();
  REQUIRE(got.size() == 1);
  CHECK(got[0].op == AggKind::kCountDistinct);
  CHECK(got[0].events == 1);
  CHECK(DistinctValueCount(got[0].value) == 1);
  CHECK(EntityApply(&e, sum, 1060, 1060, &in, 1) == 0);  // planned with the old layout: not applied to the new one
  collect();
  REQUIRE(got.size() == 1);
  CHECK(got[0].events == 1);
  EntityRecord::Destroy(e);
}

TEST_CASE("layouts: an aggregation dropped and defined again, or a view retired and added again, starts empty") {
  auto layout = [](uint64_t view, std::vector<uint64_t> sigs) {
    ViewLayout l;
    l.view_id = view;
    for (uint64_t s : sigs) l.aggs.push_back(AggSpec{AggKind::kCount, s, 1000, 60'000, 0});
    return InternLayout(l);
  };
  auto count = [](EntityRecord* e, uint64_t view, uint64_t sig) -> int64_t {
    EntityRecord::View v;
    if (!e->FindView(view, &v)) return -1;
    int i = v.layout->Find(sig);
    return i < 0 ? -1 : static_cast<int64_t>(MergeTiles(AggKind::kCount, e->Section(v, static_cast<size_t>(i)), 0, 10).n);
  };
  const uint64_t view = 0xd4d4;
  const uint16_t l1 = layout(view, {1, 2});
  EntityRecord* e = EntityRecord::New();
  AggInput in[2];
  in[1].index = 1;
  EntityApply(&e, l1, 5000, 5000, in, 2);
  const uint16_t l2 = layout(view, {1});     // 2 dropped
  const uint16_t l3 = layout(view, {1, 2});  // 2 defined again
  CHECK(l3 > l2);
  CHECK(MapAggregation(l1, 0, l3) == 0);   // 1 lived on through l2
  CHECK(MapAggregation(l1, 1, l3) == -1);  // 2 did not
  EntityApply(&e, l1, 5000, 5000, in, 2);  // planned before the drops, applied after
  CHECK(count(e, view, 1) == 2);
  CHECK(count(e, view, 2) == 0);  // not the old 1 + 1
  // The view leaves the registry and comes back: nothing lives on, even
  // what was planned under its first definition.
  RetireView(view);
  const uint16_t l5 = layout(view, {1, 2});
  CHECK(MapAggregation(l3, 0, l5) == -1);
  EntityApply(&e, l3, 5000, 5000, in, 2);  // stale: dropped
  EntityApply(&e, l5, 5000, 5000, in, 2);
  CHECK(count(e, view, 1) == 1);
  CHECK(count(e, view, 2) == 1);
  EntityRecord::Destroy(e);
}

TEST_CASE("layouts: an older definition read from a snapshot does not become the view's latest, and its state carries over") {
  auto spec = [](uint64_t s) { return AggSpec{AggKind::kCount, s, 1000, 60'000, 0}; };
  const uint64_t view = 0xe5e5;
  ViewLayout reg_l;
  reg_l.view_id = view;
  reg_l.aggs = {spec(1), spec(2)};  // the registry's: 2 is new since the snapshot
  const uint16_t r1 = InternLayout(reg_l);
  ViewLayout old_l;
  old_l.view_id = view;
  old_l.aggs = {spec(1)};
  const uint16_t s = InternOlderLayout(old_l);
  CHECK(s > r1);
  CHECK(LatestLayout(view) == r1);
  CHECK(NewestOf(r1) == r1);
  CHECK(NewestOf(s) == r1);
  CHECK(MapAggregation(s, 0, r1) == 0);  // the snapshot's state of 1 carries over
  EntityRecord* e = EntityRecord::New();
  AggInput in[2];
  in[1].index = 1;
  EntityApply(&e, r1, 5000, 5000, in, 2);
  EntityRecord::View v;
  REQUIRE(e->FindView(view, &v));
  CHECK(v.layout_id == r1);
  CHECK(MergeTiles(AggKind::kCount, e->Section(v, 1), 0, 10).n == 1);  // 2 is applied
  EntityRecord::Destroy(e);
}

TEST_CASE("joins: an aggregation's signature follows its join and the joined features' definitions") {
  const std::string head = R"(
sources:
  orders: {topic: orders, format: json}
  products: {topic: products, format: json}
entities:
  user: {key: u}
  product: {key: pid}
views:
  product_info:
    entity: product
    source: products
    features:
)";
  const std::string user = R"(
  user_spend:
    entity: user
    source: orders
    join:
      product: {view: product_info, key: pid}
    features:
      spend: {agg: sum, field: product.price, windows: [1h]}
      orders: {agg: count, windows: [1h]}
)";
  auto sigs = [&](const std::string& price, const std::string& u) {
    auto reg = Registry::LoadText(head + "      price: " + price + "\n" + u, "joins");
    const ViewDef& v = reg->views()[static_cast<size_t>(reg->FindView("user_spend"))];
    return std::make_pair(v.aggs[0].signature, v.aggs[1].signature);
  };
  auto base = sigs("{agg: last, field: price}", user);
  auto redefined = sigs("{agg: last, field: cost}", user);
  CHECK(redefined.first != base.first);    // spend reads another price
  CHECK(redefined.second == base.second);  // orders reads no joined feature
  std::string other_key = user;
  other_key.replace(other_key.find("key: pid"), 8, "key: sku");
  CHECK(sigs("{agg: last, field: price}", other_key).first != base.first);
  CHECK(sigs("{agg: last, field: price}", user) == base);
  // A view that joins itself is refused.
  std::string self = user;
  self.replace(self.find("view: product_info"), 18, "view: user_spend");
  self.replace(self.find("product.price"), 13, "product.orders_1h");
  CHECK_THROWS_WITH_AS(Registry::LoadText(head + "      price: {agg: last, field: price}\n" + self, "joins"),
                       doctest::Contains("closes a cycle of joins"), RegistryError);
}

TEST_CASE("tables: the message key names the entity, the latest message wins, a tombstone deletes the view") {
  auto reg = Registry::LoadText(R"(
sources:
  products: {topic: products, kind: table, timestamp: {field: ts, unit: ms}}
  clicks: {topic: clicks}
entities:
  product: {key: pid}
views:
  info:
    entity: product
    source: products
    features:
      price: {agg: last, field: price}
  hits:
    entity: product
    source: clicks
    features:
      n: {agg: count, windows: [1h]}
)",
                                "tables");
  REQUIRE(reg->sources()[0].table);
  CHECK_FALSE(reg->sources()[1].table);
  const int64_t now = 1'700'000'000'000;
  EventPlanner p;
  IngestStats stats;
  ShardStore st;
  auto apply = [&](UpdateBatch& b) {
    for (size_t i = 0; i < b.size(); i++) {
      b[i].key_hash = HashKey(b.key(i));
      CHECK(ApplyViewUpdate(st, b, i, now, nullptr));
    }
    b.clear();
  };
  auto price = [&]() -> std::string {
    Record* r = st.Find("product:7", HashKey("product:7"), now);
    if (r == nullptr) return "(no key)";
    EntityRecord::View v;
    if (!r->entity()->FindView(reg->views()[0].id, &v)) return "(no view)";
    std::string out;
    ForEachLastItem(r->entity()->Section(v, 0), [&](int64_t, std::string_view value) { out = std::string(value); });
    return out;
  };
  UpdateBatch b;
  MessageMeta key7{"7", true, false};
  CHECK(p.Plan(*reg, 0, R"({"pid": 8, "price": 10, "ts": 1699999990000})", now, 0, &b, &stats, nullptr, nullptr, &key7) == "");
  REQUIRE(b.size() == 1);
  CHECK(b.key(0) == "product:7");  // the message key, not the value's pid
  CHECK(b.aggs(0)[0].replace);
  apply(b);
  CHECK(price() == "10");
  // An older event time replaces it still: the latest message wins.
  CHECK(p.Plan(*reg, 0, R"({"price": 9, "ts": 1699999000000})", now, 0, &b, &stats, nullptr, nullptr, &key7) == "");
  apply(b);
  CHECK(price() == "9");
  // Without a message key (FEVENT), the entity's key field names it.
  CHECK(p.Plan(*reg, 0, R"({"pid": 7, "price": 8, "ts": 1699998000000})", now, 0, &b, &stats) == "");
  apply(b);
  CHECK(price() == "8");
  // A message is the whole row: a field it lacks (or has null) is null
  // now; this row has no other, so it is a deletion (and the entity no
  // other view).
  CHECK(p.Plan(*reg, 0, R"({"price": null, "ts": 1699998000000})", now, 0, &b, &stats, nullptr, nullptr, &key7) == "");
  apply(b);
  CHECK(price() == "(no key)");
  CHECK(p.Plan(*reg, 0, R"({"price": 8, "ts": 1699998000000})", now, 0, &b, &stats, nullptr, nullptr, &key7) == "");
  apply(b);
  CHECK(price() == "8");
  CHECK(p.Plan(*reg, 1, R"({"pid": 7})", now, 0, &b, &stats) == "");  // another view of the entity
  apply(b);
  // A tombstone: the table's view goes, the entity stays for the other one.
  MessageMeta tomb7{"7", true, true}, keyless{"", false, true};
  CHECK(p.Plan(*reg, 0, "", now, 0, &b, &stats, nullptr, nullptr, &keyless) == "missing_key");
  CHECK(b.empty());
  CHECK(p.Plan(*reg, 0, "", now, 0, &b, &stats, nullptr, nullptr, &tomb7) == "");
  REQUIRE(b.size() == 1);
  CHECK(b.aggs(0).empty());
  apply(b);
  CHECK(price() == "(no view)");
  CHECK(stats.tombstones.load() == 1);
  // A second tombstone with the view gone changes nothing; a tombstone of
  // a stream source is not one (a message without a JSON value).
  CHECK(p.Plan(*reg, 0, "", now, 0, &b, &stats, nullptr, nullptr, &tomb7) == "");
  apply(b);
  MessageMeta tomb_stream{"7", true, true};
  CHECK(p.Plan(*reg, 1, "", now, 0, &b, &stats, nullptr, nullptr, &tomb_stream) == "invalid_json");
  // A row that clears every feature is a deletion too: the view goes at
  // once (and a new entity is not made of one).
  CHECK(p.Plan(*reg, 0, R"({"price": 3, "ts": 1699999990000})", now, 0, &b, &stats, nullptr, nullptr, &key7) == "");
  apply(b);
  CHECK(price() == "3");
  CHECK(p.Plan(*reg, 0, R"({"ts": 1699999990000})", now, 0, &b, &stats, nullptr, nullptr, &key7) == "");
  CHECK(b.CountByView().size() == 1);
  apply(b);
  CHECK(price() == "(no view)");
  MessageMeta key5{"5", true, false};
  CHECK(p.Plan(*reg, 0, R"({"ts": 1699999990000})", now, 0, &b, &stats, nullptr, nullptr, &key5) == "");
  apply(b);
  CHECK(st.Find("product:5", HashKey("product:5"), now) == nullptr);
  CHECK(p.Plan(*reg, 0, "", now, 0, &b, &stats, nullptr, nullptr, &tomb7) == "");
  CHECK(b.CountByView().empty());  // a tombstone is no applied event of the view
  b.clear();
  // With the last view gone, the key goes.
  CHECK(p.Plan(*reg, 0, R"({"price": 1})", now, 0, &b, &stats, nullptr, nullptr, &key7) == "missing_timestamp");
  MessageMeta key9{"9", true, false}, tomb9{"9", true, true};
  CHECK(p.Plan(*reg, 0, R"({"price": 1, "ts": 1699999990000})", now, 0, &b, &stats, nullptr, nullptr, &key9) == "");
  apply(b);
  CHECK(st.Find("product:9", HashKey("product:9"), now) != nullptr);
  CHECK(p.Plan(*reg, 0, "", now, 0, &b, &stats, nullptr, nullptr, &tomb9) == "");
  apply(b);
  CHECK(st.Find("product:9", HashKey("product:9"), now) == nullptr);
  CHECK(st.entities() == 1);
  // A table feeds views of one entity type, and only `last` features.
  CHECK_THROWS_WITH_AS(Registry::LoadText(R"(
sources:
  t: {topic: t, kind: table}
entities:
  a: {key: k}
  b: {key: k}
views:
  va: {entity: a, source: t, features: {x: {agg: last, field: x}}}
  vb: {entity: b, source: t, features: {x: {agg: last, field: x}}}
)", "tables"),
                       doctest::Contains("a table's message key names an entity of one type"), RegistryError);
  CHECK_THROWS_WITH_AS(Registry::LoadText(R"(
sources:
  t: {topic: t, kind: table}
entities:
  a: {key: k}
views:
  va: {entity: a, source: t, features: {x: {agg: last_n, field: x, n: 3}}}
)", "tables"),
                       doctest::Contains("its views hold only 'last' features"), RegistryError);
  CHECK_THROWS_WITH_AS(Registry::LoadText(R"(
sources:
  t: {topic: t, kind: table}
entities:
  a: {key: k}
views:
  va: {entity: a, source: t, backfill: true, features: {x: {agg: last, field: x}}}
)", "tables"),
                       doctest::Contains("is a table: its views load from the topic's start"), RegistryError);
  // A `where` that does not hold clears the feature: the row is whole.
  auto filtered = Registry::LoadText(R"(
sources:
  t: {topic: t, kind: table}
entities:
  a: {key: k}
views:
  va:
    entity: a
    source: t
    features:
      x: {agg: last, field: x, where: "x > 10"}
      y: {agg: last, field: y}
)", "tables");
  UpdateBatch fb;
  CHECK(p.Plan(*filtered, 0, R"({"k": 1, "x": 5, "y": 2})", now, 0, &fb, &stats) == "");
  REQUIRE(fb.aggs(0).size() == 2);
  CHECK(fb.aggs(0)[0].clear);
  CHECK_FALSE(fb.aggs(0)[1].clear);
}
