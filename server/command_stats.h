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
#include "storage/histogram.h"

namespace fkv {

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

// One command's counters summed over shards (INFO commandstats and
// latencystats, /metrics).
struct CommandTotals {
  size_t index = 0;  // in the command table
  uint64_t calls = 0, nanos = 0, failed = 0, rejected = 0;
  HistogramSnapshot latency;
};
// The commands called (or refused) on any of `shards`, in table order.
std::vector<CommandTotals> SumCommandStats(const std::vector<const CommandStats*>& shards, size_t ncommands);

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
