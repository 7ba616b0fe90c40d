// LatencyHistogram: durations in log-linear buckets, for command latencies
// (INFO latencystats, /metrics) and the event-to-servable delay of Kafka
// ingest. See docs/operations.md, "Metrics".
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fkv {

// A log-linear histogram of durations in nanoseconds, as HdrHistogram with
// 3 sub-bucket bits: values below 8 ns have a bucket each, then every power
// of two is split in 8 equal buckets (relative error <= 12.5%), up to 2^40
// ns (~18 minutes; longer durations count in the last bucket). Power-of-two
// nanosecond values are bucket boundaries, which is what /metrics exposes.
class LatencyHistogram {
 public:
  static constexpr int kSubBits = 3;
  static constexpr int kMaxExp = 40;
  static constexpr size_t kBuckets = (1u << kSubBits) + (kMaxExp - kSubBits + 1) * (1u << kSubBits);
  static size_t BucketOf(uint64_t ns);
  static uint64_t LowerBound(size_t b);  // the smallest value of bucket b
  static uint64_t UpperBound(size_t b);  // one past the largest

  // The owning thread only.
  void Add(uint64_t ns) { Bump(counts_[BucketOf(ns)], 1); }
  void Reset() {
    for (auto& c : counts_) c.store(0, std::memory_order_relaxed);
  }
  // Any thread.
  uint64_t count(size_t b) const { return counts_[b].load(std::memory_order_relaxed); }
  static void Bump(std::atomic<uint64_t>& c, uint64_t n) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

 private:
  std::array<std::atomic<uint64_t>, kBuckets> counts_{};
};

// A histogram's counts summed over shards, for percentiles and exposition.
// Also a plain histogram for one writer under a lock (Add(ns)).
struct HistogramSnapshot {
  std::vector<uint64_t> counts = std::vector<uint64_t>(LatencyHistogram::kBuckets, 0);
  uint64_t total = 0;
  void Add(const LatencyHistogram& h);
  void Add(uint64_t ns) {
    counts[LatencyHistogram::BucketOf(ns)]++;
    total++;
  }
  // The q-th percentile (0-100) in nanoseconds: the largest value of the
  // bucket holding that rank (0 when empty).
  uint64_t Percentile(double q) const;
  // How many values are below `ns` (ns must be a bucket boundary: a power of two).
  uint64_t CountBelow(uint64_t ns) const;
};

}  // namespace fkv
