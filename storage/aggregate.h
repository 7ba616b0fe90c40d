// Aggregate math of the feature views: tile partials for count, sum, min,
// max, mean, stddev (Welford/Chan, numerically stable), count_distinct
// (exact sets, HyperLogLog past a bound), and the last / last_n lists. Pure
// data structures: no registry, no clock; used by storage/entity.h.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace fkv {

enum class AggKind : uint8_t { kCount, kSum, kMin, kMax, kMean, kStddev, kCountDistinct, kLast, kLastN };
const char* AggName(AggKind k);
inline bool IsWindowed(AggKind k) { return k != AggKind::kLast && k != AggKind::kLastN; }

// What storage needs to know of an aggregation definition.
struct AggSpec {
  AggKind kind = AggKind::kCount;
  uint64_t signature = 0;    // hash of the definition: state survives reloads while unchanged
  int64_t resolution_ms = 0; // tile width (windowed kinds)
  int64_t max_window_ms = 0; // retention (windowed kinds)
  int n = 0;                 // last_n
};

// Running merge of tiles (or of raw values, in the reference model).
struct Accum {
  double n = 0;    // count of values
  double sum = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  double mean = 0, m2 = 0;  // Welford
  void Add(double x);
  void Merge(const Accum& o);
};

// Numeric tiles of one windowed aggregation, sparse and sorted by tile
// index: [index, partial...] records of 1 + Width(kind) doubles, stored in
// a segment [off, off + len) of a vector shared with other series (an
// entity view keeps all its aggregations' tiles in one such arena, so a read
// of every feature touches one contiguous block).
namespace tiles {
int Width(AggKind k);  // doubles of partial per tile
// Adds x to its tile; returns how many doubles were inserted (0 or 1 + width).
size_t Add(std::vector<double>& arena, size_t off, size_t len, AggKind k, int64_t tile, double x);
// Merge of the tiles with lo <= index <= hi.
Accum Merge(const double* seg, size_t len, AggKind k, int64_t lo, int64_t hi);
// Drops tiles with index < min_tile; returns how many doubles were removed.
size_t DropBefore(std::vector<double>& arena, size_t off, size_t len, AggKind k, int64_t min_tile);
}  // namespace tiles

// One series in a vector of its own (tests, the reference computations).
class TileSeries {
 public:
  static int Width(AggKind k) { return tiles::Width(k); }
  void Add(AggKind k, int64_t tile, double x) { tiles::Add(data_, 0, data_.size(), k, tile, x); }
  Accum Merge(AggKind k, int64_t lo, int64_t hi) const { return tiles::Merge(data_.data(), data_.size(), k, lo, hi); }
  size_t DropBefore(AggKind k, int64_t min_tile) {
    return tiles::DropBefore(data_, 0, data_.size(), k, min_tile) / static_cast<size_t>(1 + Width(k));
  }
  bool empty() const { return data_.empty(); }

 private:
  std::vector<double> data_;
};

// count_distinct: per tile a sorted set of 64-bit value hashes while small,
// a HyperLogLog (p = 12, 4096 registers, standard error 1.04/sqrt(4096) =
// 1.6%) once a tile or a merged window passes kExactLimit values.
class DistinctSeries {
 public:
  static constexpr size_t kExactLimit = 64;
  static constexpr int kP = 12;
  static constexpr size_t kRegisters = size_t{1} << kP;

  void Add(int64_t tile, uint64_t value_hash);
  // Number of distinct values over tiles lo..hi (exact while the union
  // holds at most kExactLimit * 4 values and no tile is a sketch).
  uint64_t Count(int64_t lo, int64_t hi) const;
  size_t DropBefore(int64_t min_tile);
  bool empty() const { return exact_.empty() && sketches_.empty(); }
  size_t MemoryUsage() const;
  static double Estimate(const std::vector<uint8_t>& regs);
  // The raw state, for snapshots.
  using Exact = std::vector<std::pair<int64_t, uint64_t>>;
  using Sketches = std::vector<std::pair<int64_t, std::unique_ptr<std::vector<uint8_t>>>>;
  const Exact& exact() const { return exact_; }
  const Sketches& sketches() const { return sketches_; }
  // Replaces the state; the caller has checked that both are sorted, exact
  // pairs are unique and sketches hold kRegisters registers.
  void Restore(Exact exact, Sketches sketches) {
    exact_ = std::move(exact);
    sketches_ = std::move(sketches);
  }
  static void HllAdd(std::vector<uint8_t>* regs, uint64_t h);

 private:
  // Exact tiles: one flat array of (tile, hash), sorted, unique: 16 bytes
  // a value and one allocation for the whole series.
  std::vector<std::pair<int64_t, uint64_t>> exact_;
  // Tiles that passed kExactLimit values (rare), sorted by tile.
  std::vector<std::pair<int64_t, std::unique_ptr<std::vector<uint8_t>>>> sketches_;
};

// last / last_n: values ordered by event time (ties: arrival), newest first.
struct LastItem {
  int64_t ts;
  uint64_t seq;
  std::string value;
};
class LastList {
 public:
  // Inserts keeping at most n items (the newest by (ts, seq)).
  void Add(int64_t ts, uint64_t seq, std::string_view value, size_t n);
  const std::vector<LastItem>& items() const { return items_; }
  // Replaces the items (newest first, as items() gives them), for snapshots.
  void Restore(std::vector<LastItem> items) { items_ = std::move(items); }
  bool empty() const { return items_.empty(); }
  size_t MemoryUsage() const;

 private:
  std::vector<LastItem> items_;
};

}  // namespace fkv
