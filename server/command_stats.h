// Per-shard command statistics (docs/operations.md, "Metrics"): for every
// command its calls, time, failed and rejected calls and a latency
// histogram, plus the slow log. A shard's thread is the only writer of its
// figures; any thread reads them (INFO commandstats / latencystats, SLOWLOG
// through a fan-out, the /metrics endpoint), so a read never waits for a
// shard and a shard never waits for a read.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/resp_parser.h"

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
struct HistogramSnapshot {
  std::vector<uint64_t> counts = std::vector<uint64_t>(LatencyHistogram::kBuckets, 0);
  uint64_t total = 0;
  void Add(const LatencyHistogram& h);
  // The q-th percentile (0-100) in nanoseconds: the largest value of the
  // bucket holding that rank (0 when empty).
  uint64_t Percentile(double q) const;
  // How many values are below `ns` (ns must be a bucket boundary: a power of two).
  uint64_t CountBelow(uint64_t ns) const;
};

struct CommandCounters {
  std::atomic<uint64_t> calls{0}, nanos{0}, failed{0}, rejected{0};
  LatencyHistogram latency;
};

// One shard's counters of every command of the table (by index).
class CommandStats {
 public:
  explicit CommandStats(size_t ncommands);
  // The owning shard's thread.
  void Call(size_t cmd, uint64_t ns, bool failed, bool track_latency);
  void Reject(size_t cmd);
  void Reset();  // CONFIG RESETSTAT, on the owning thread
  // Any thread: the counters of cmd, or null when it was never called here.
  const CommandCounters* Find(size_t cmd) const { return slots_[cmd].load(std::memory_order_acquire); }

 private:
  CommandCounters& At(size_t cmd);
  std::unique_ptr<std::atomic<CommandCounters*>[]> slots_;
  size_t n_;
  std::vector<std::unique_ptr<CommandCounters>> owned_;
};

// One slow log entry, in the shape of Redis's.
struct SlowLogEntry {
  uint64_t id = 0;
  int64_t time_s = 0;
  uint64_t duration_us = 0;
  std::vector<std::string> args;  // cut as Redis does: 32 arguments, 128 bytes each
  std::string peer, name;
};

// One shard's slow log: the newest `max_len` entries. Written by the shard;
// read and reset through fan-outs on the same thread.
class SlowLog {
 public:
  // The arguments as Redis keeps them (sensitive ones redacted).
  static std::vector<std::string> CutArgs(const ArgList& args);
  void Add(SlowLogEntry e, size_t max_len);
  void Trim(size_t max_len);
  const std::deque<SlowLogEntry>& entries() const { return entries_; }
  void Reset() { entries_.clear(); }
  // Ids are process-wide, so the shards' logs merge in order (RESET keeps
  // counting, as Redis).
  static uint64_t NextId();

 private:
  std::deque<SlowLogEntry> entries_;  // newest first
};

// Monotonic nanoseconds for command timing.
uint64_t MonotonicNs();

}  // namespace fkv
