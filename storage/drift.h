// Feature drift (docs/operations.md, "Feature drift"): the distribution of a
// numeric feature's current value across a view's entities, binned at the
// deciles of a stored baseline, and the population stability index (PSI)
// of the current distribution against it. This module is the arithmetic
// and the baseline's encoding in snapshots; server/drift.cc walks the
// shards and keeps the results.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fkv::drift {

inline constexpr size_t kBins = 10;         // deciles
inline constexpr double kFloor = 1e-4;      // an empty bin's fraction in the PSI sum
inline constexpr size_t kSample = 8192;     // values sampled per feature and shard for a baseline

// A uniform random sample of up to `cap` values of a stream (Vitter's
// algorithm R), with the number of values seen.
class Reservoir {
 public:
  explicit Reservoir(size_t cap = kSample, uint64_t seed = 0x9E3779B97F4A7C15ull) : cap_(cap), rng_(seed | 1) {}
  void Add(double v);
  uint64_t seen() const { return seen_; }
  const std::vector<double>& values() const { return values_; }

 private:
  uint64_t Next();
  size_t cap_;
  uint64_t rng_;
  uint64_t seen_ = 0;
  std::vector<double> values_;
};

// The baseline of one feature.
struct FeatureBaseline {
  std::string feature;     // as FGET names it ("clicks_1h")
  uint64_t signature = 0;  // of its aggregation: a changed definition voids the baseline
  int64_t window_ms = 0;
  uint64_t n = 0;          // entities that had a value
  // Ascending and distinct; bin i < edges.size() holds values v with
  // edges[i-1] < v <= edges[i], the last bin the values above every edge.
  std::vector<double> edges;
  std::vector<double> fractions;  // edges.size() + 1 of them, summing to 1
};

struct ViewBaseline {
  std::string view;
  int64_t created_ms = 0;
  std::vector<FeatureBaseline> features;
};

// Fills b->n, b->edges and b->fractions from the samples of every shard. A
// value of a sample stands for seen()/values().size() values of its shard,
// so shards of different sizes weigh what they hold. Edges are the
// smallest values at which the weighted cumulative share reaches k/10
// (k = 1..9), ties merged, so a feature that is 0 for 70% of the entities
// gets one bin for all of them.
void BuildBaseline(std::span<const Reservoir* const> samples, FeatureBaseline* b);
// The bin of value v under `edges`.
size_t BinOf(const std::vector<double>& edges, double v);
// PSI = sum over bins of (c - b) * ln(c / b), c and b the current and
// baseline shares floored at kFloor. NaN when either side counted nothing.
double Psi(const FeatureBaseline& base, std::span<const uint64_t> counts, uint64_t n);

// The DRIFT frame of a snapshot: every view's baseline.
std::string EncodeBaselines(const std::vector<ViewBaseline>& views);
// Decodes and validates it (finite ascending edges, shares in [0, 1]
// summing to 1); false with *err on malformed input.
bool DecodeBaselines(std::string_view payload, std::vector<ViewBaseline>* views, std::string* err);

}  // namespace fkv::drift
