// LatencyHistogram and HistogramSnapshot: see histogram.h.
#include "storage/histogram.h"

#include <algorithm>
#include <cmath>

namespace fkv {

size_t LatencyHistogram::BucketOf(uint64_t ns) {
  constexpr uint64_t kLinear = 1u << kSubBits;
  if (ns < kLinear) return static_cast<size_t>(ns);
  int e = 63 - __builtin_clzll(ns);
  if (e > kMaxExp) return kBuckets - 1;
  uint64_t m = (ns >> (e - kSubBits)) & (kLinear - 1);
  return static_cast<size_t>(kLinear + static_cast<uint64_t>(e - kSubBits) * kLinear + m);
}

uint64_t LatencyHistogram::LowerBound(size_t b) {
  constexpr uint64_t kLinear = 1u << kSubBits;
  if (b < kLinear) return b;
  uint64_t e = (b - kLinear) / kLinear + kSubBits, m = (b - kLinear) % kLinear;
  return (kLinear + m) << (e - kSubBits);
}

uint64_t LatencyHistogram::UpperBound(size_t b) {
  constexpr uint64_t kLinear = 1u << kSubBits;
  if (b < kLinear) return b + 1;
  uint64_t e = (b - kLinear) / kLinear + kSubBits, m = (b - kLinear) % kLinear;
  return (kLinear + m + 1) << (e - kSubBits);
}

void HistogramSnapshot::Add(const LatencyHistogram& h) {
  for (size_t b = 0; b < counts.size(); b++) {
    uint64_t n = h.count(b);
    counts[b] += n;
    total += n;
  }
}

uint64_t HistogramSnapshot::Percentile(double q) const {
  if (total == 0) return 0;
  uint64_t rank = static_cast<uint64_t>(std::ceil(q / 100.0 * static_cast<double>(total)));
  rank = std::clamp<uint64_t>(rank, 1, total);
  uint64_t seen = 0;
  for (size_t b = 0; b < counts.size(); b++) {
    seen += counts[b];
    if (seen >= rank) return LatencyHistogram::UpperBound(b) - 1;
  }
  return LatencyHistogram::UpperBound(counts.size() - 1) - 1;
}

uint64_t HistogramSnapshot::CountBelow(uint64_t ns) const {
  size_t end = LatencyHistogram::BucketOf(ns);
  uint64_t n = 0;
  for (size_t b = 0; b < end; b++) n += counts[b];
  return n;
}

}  // namespace fkv
