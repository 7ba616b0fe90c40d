// Drift arithmetic (storage/drift.h): deciles, the weighting of shard
// samples, PSI, and the DRIFT frame's encoding against malformed input.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "storage/drift.h"

using namespace fkv;
using namespace fkv::drift;

namespace {
FeatureBaseline FromValues(const std::vector<std::vector<double>>& shards) {
  std::vector<Reservoir> rs;
  for (size_t s = 0; s < shards.size(); s++) {
    rs.emplace_back(kSample, s + 7);
    for (double v : shards[s]) rs.back().Add(v);
  }
  std::vector<const Reservoir*> ptrs;
  for (auto& r : rs) ptrs.push_back(&r);
  FeatureBaseline b;
  BuildBaseline(ptrs, &b);
  return b;
}

std::vector<uint64_t> Counts(const FeatureBaseline& b, const std::vector<double>& values) {
  std::vector<uint64_t> c(b.edges.size() + 1, 0);
  for (double v : values) c[BinOf(b.edges, v)]++;
  return c;
}
}  // namespace

TEST_CASE("the deciles of 1..1000 are 100, 200, ..., 900 with a tenth in each bin") {
  std::vector<double> v;
  for (int i = 1000; i >= 1; i--) v.push_back(i);  // order does not matter
  FeatureBaseline b = FromValues({v});
  CHECK(b.n == 1000);
  REQUIRE(b.edges.size() == 9);
  for (size_t k = 0; k < 9; k++) CHECK(b.edges[k] == doctest::Approx(100.0 * static_cast<double>(k + 1)));
  REQUIRE(b.fractions.size() == 10);
  for (double f : b.fractions) CHECK(f == doctest::Approx(0.1));
  CHECK(BinOf(b.edges, 100) == 0);  // an edge belongs to the bin it closes
  CHECK(BinOf(b.edges, 100.5) == 1);
  CHECK(BinOf(b.edges, 5000) == 9);
  CHECK(Psi(b, Counts(b, v), 1000) == doctest::Approx(0.0));
}

TEST_CASE("ties merge into one bin: a feature that is 0 for 70% of the entities") {
  std::vector<double> v(700, 0.0);
  for (int i = 1; i <= 300; i++) v.push_back(i);
  FeatureBaseline b = FromValues({v});
  REQUIRE(!b.edges.empty());
  CHECK(b.edges[0] == 0);
  CHECK(b.fractions[0] == doctest::Approx(0.7));
  for (size_t k = 1; k < b.edges.size(); k++) CHECK(b.edges[k - 1] < b.edges[k]);
  double sum = 0;
  for (double f : b.fractions) sum += f;
  CHECK(sum == doctest::Approx(1.0));
  // A constant feature: one edge, everything in its first bin.
  FeatureBaseline c = FromValues({std::vector<double>(50, 3.0)});
  REQUIRE(c.edges.size() == 1);
  CHECK(c.fractions[0] == doctest::Approx(1.0));
  CHECK(c.fractions[1] == 0);
}

TEST_CASE("sampled shards weigh what they hold, not what they sampled") {
  // Shard 0 holds 100,000 values in [0, 1), shard 1 holds 1,000 in [1, 2):
  // both samples have 8,192 or fewer values, yet the deciles are those of
  // the union (nearly all of it in [0, 1)).
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<double> a, b;
  for (int i = 0; i < 100000; i++) a.push_back(u(rng));
  for (int i = 0; i < 1000; i++) b.push_back(1 + u(rng));
  FeatureBaseline base = FromValues({a, b});
  CHECK(base.n == 101000);
  REQUIRE(base.edges.size() == 9);
  for (size_t k = 0; k < 9; k++) CHECK(std::fabs(base.edges[k] - 0.1 * static_cast<double>(k + 1) * 1.01) < 0.03);
  // The sample's error: the same distribution drawn again stays far below 0.1.
  std::vector<double> again;
  for (int i = 0; i < 100000; i++) again.push_back(u(rng));
  for (int i = 0; i < 1000; i++) again.push_back(1 + u(rng));
  CHECK(Psi(base, Counts(base, again), again.size()) < 0.01);
}

TEST_CASE("PSI: a shifted distribution scores high, the formula with its floor") {
  std::vector<double> v;
  for (int i = 0; i < 1000; i++) v.push_back(i);
  FeatureBaseline b = FromValues({v});
  std::vector<double> shifted;
  for (int i = 0; i < 1000; i++) shifted.push_back(i + 300);
  CHECK(Psi(b, Counts(b, shifted), 1000) > 0.2);
  // By hand: everything in the last bin.
  std::vector<uint64_t> last(10, 0);
  last[9] = 1000;
  double expect = 9 * (kFloor - 0.1) * std::log(kFloor / 0.1) + (1.0 - 0.1) * std::log(1.0 / 0.1);
  CHECK(Psi(b, last, 1000) == doctest::Approx(expect));
  CHECK(std::isnan(Psi(b, last, 0)));
  FeatureBaseline empty = FromValues({{}});
  CHECK(empty.n == 0);
  CHECK(std::isnan(Psi(empty, std::vector<uint64_t>{5}, 5)));
}

TEST_CASE("baselines round-trip through the DRIFT frame; malformed payloads are refused") {
  std::vector<ViewBaseline> views(2);
  views[0].view = "spend";
  views[0].created_ms = 1700000000000;
  std::vector<double> v;
  for (int i = 0; i < 100; i++) v.push_back(i * 1.5);
  FeatureBaseline f = FromValues({v});
  f.feature = "amount_1h";
  f.signature = 0xABCDEF;
  f.window_ms = 3600000;
  views[0].features.push_back(f);
  FeatureBaseline none = FromValues({{}});
  none.feature = "peak_1h";
  views[0].features.push_back(none);
  views[1].view = "other";
  std::string enc = EncodeBaselines(views);
  std::vector<ViewBaseline> back;
  std::string err;
  REQUIRE(DecodeBaselines(enc, &back, &err));
  REQUIRE(back.size() == 2);
  CHECK(back[0].view == "spend");
  CHECK(back[0].created_ms == 1700000000000);
  REQUIRE(back[0].features.size() == 2);
  CHECK(back[0].features[0].feature == "amount_1h");
  CHECK(back[0].features[0].signature == 0xABCDEF);
  CHECK(back[0].features[0].window_ms == 3600000);
  CHECK(back[0].features[0].n == 100);
  CHECK(back[0].features[0].edges == f.edges);
  CHECK(back[0].features[0].fractions == f.fractions);
  CHECK(back[0].features[1].n == 0);
  CHECK(back[1].features.empty());
  // Every truncation is refused, and so is a byte more.
  for (size_t cut = 0; cut < enc.size(); cut++) CHECK_FALSE(DecodeBaselines(enc.substr(0, cut), &back, &err));
  CHECK_FALSE(DecodeBaselines(enc + "x", &back, &err));
  // Edges out of order.
  std::vector<ViewBaseline> bad = views;
  std::swap(bad[0].features[0].edges[0], bad[0].features[0].edges[1]);
  CHECK_FALSE(DecodeBaselines(EncodeBaselines(bad), &back, &err));
  CHECK(err.find("ascending") != std::string::npos);
  // Shares that do not sum to 1.
  bad = views;
  bad[0].features[0].fractions[0] += 0.5;
  CHECK_FALSE(DecodeBaselines(EncodeBaselines(bad), &back, &err));
  bad = views;
  bad[0].features[0].edges[3] = std::nan("");
  CHECK_FALSE(DecodeBaselines(EncodeBaselines(bad), &back, &err));
}
