// Command statistics and the slow log: see command_stats.h.
#include "server/command_stats.h"

#include <time.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <string>

namespace fkv {

CommandStats::CommandStats(size_t ncommands)
    : slots_(std::make_unique<std::atomic<CommandCounters*>[]>(ncommands)), n_(ncommands) {
  for (size_t i = 0; i < n_; i++) slots_[i].store(nullptr, std::memory_order_relaxed);
}

CommandCounters& CommandStats::At(size_t cmd) {
  CommandCounters* c = slots_[cmd].load(std::memory_order_relaxed);
  if (c == nullptr) {  // first call of this command on this shard
    owned_.push_back(std::make_unique<CommandCounters>());
    c = owned_.back().get();
    slots_[cmd].store(c, std::memory_order_release);
  }
  return *c;
}

void CommandStats::Call(size_t cmd, uint64_t ns, bool failed, bool track_latency) {
  CommandCounters& c = At(cmd);
  LatencyHistogram::Bump(c.calls, 1);
  LatencyHistogram::Bump(c.nanos, ns);
  if (failed) LatencyHistogram::Bump(c.failed, 1);
  if (track_latency) c.latency.Add(ns);
}

void CommandStats::Reject(size_t cmd) { LatencyHistogram::Bump(At(cmd).rejected, 1); }

void CommandStats::Reset() {
  for (auto& c : owned_) {
    c->calls.store(0, std::memory_order_relaxed);
    c->nanos.store(0, std::memory_order_relaxed);
    c->failed.store(0, std::memory_order_relaxed);
    c->rejected.store(0, std::memory_order_relaxed);
    c->latency.Reset();
  }
}

std::vector<CommandTotals> SumCommandStats(const std::vector<const CommandStats*>& shards, size_t ncommands) {
  std::vector<CommandTotals> out;
  for (size_t i = 0; i < ncommands; i++) {
    CommandTotals t;
    t.index = i;
    bool seen = false;
    for (const CommandStats* s : shards) {
      const CommandCounters* c = s->Find(i);
      if (c == nullptr) continue;
      seen = true;
      t.calls += c->calls.load(std::memory_order_relaxed);
      t.nanos += c->nanos.load(std::memory_order_relaxed);
      t.failed += c->failed.load(std::memory_order_relaxed);
      t.rejected += c->rejected.load(std::memory_order_relaxed);
      t.latency.Add(c->latency);
    }
    if (seen) out.push_back(std::move(t));
  }
  return out;
}

std::vector<std::string> SlowLog::CutArgs(const ArgList& args) {
  // As Redis's slowlogCreateEntry: at most 32 arguments (the last one saying
  // how many more there were), each cut to 128 bytes.
  constexpr size_t kMaxArgc = 32, kMaxString = 128;
  std::vector<std::string> out;
  size_t n = std::min(args.size(), kMaxArgc);
  for (size_t i = 0; i < n; i++) {
    if (n != args.size() && i == n - 1) {
      out.push_back("... (" + std::to_string(args.size() - kMaxArgc + 1) + " more arguments)");
      break;
    }
    std::string_view a = args[i];
    if (a.size() > kMaxString) {
      out.push_back(std::string(a.substr(0, kMaxString)) + "... (" + std::to_string(a.size() - kMaxString) + " more bytes)");
    } else {
      out.emplace_back(a);
    }
  }
  // Passwords never reach the log (Redis 7 shows "(redacted)" in their place).
  auto is = [&](size_t i, std::string_view w) {
    if (i >= out.size() || out[i].size() != w.size()) return false;
    for (size_t k = 0; k < w.size(); k++)
      if (std::tolower(static_cast<unsigned char>(out[i][k])) != w[k]) return false;
    return true;
  };
  if (is(0, "auth")) {
    for (size_t i = 1; i < out.size(); i++) out[i] = "(redacted)";
  } else if (is(0, "hello")) {
    for (size_t i = 2; i < out.size(); i++)
      if (is(i, "auth")) {
        for (size_t k = i + 1; k <= i + 2 && k < out.size(); k++) out[k] = "(redacted)";
        i += 2;
      }
  } else if (is(0, "config") && is(1, "set")) {
    for (size_t i = 2; i + 1 < out.size(); i += 2)
      if (is(i, "requirepass") || is(i, "masterauth")) out[i + 1] = "(redacted)";
  }
  return out;
}

void SlowLog::Add(SlowLogEntry e, size_t max_len) {
  entries_.push_front(std::move(e));
  Trim(max_len);
}

void SlowLog::Trim(size_t max_len) {
  while (entries_.size() > max_len) entries_.pop_back();
}

namespace {
std::atomic<uint64_t> g_next_slowlog_id{0};
}

uint64_t SlowLog::NextId() { return g_next_slowlog_id.fetch_add(1, std::memory_order_relaxed); }

namespace {
uint64_t ClockNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Every command reads the clock twice, so the clock is the cost of command
// statistics: clock_gettime takes ~30 ns on a KVM guest, the TSC ~13 ns.
// The TSC is used when the kernel itself keeps time with it (then it is
// invariant and synchronized across CPUs), scaled by a rate measured once
// against CLOCK_MONOTONIC over 2 ms.
struct TscClock {
  bool usable = false;
  uint64_t base_ticks = 0, base_ns = 0;
  double ns_per_tick = 0;
  TscClock() {
#if defined(__x86_64__)
    std::ifstream f("/sys/devices/system/clocksource/clocksource0/current_clocksource");
    std::string source;
    if (!(f >> source) || source != "tsc") return;
    uint64_t t0 = ClockNs(), c0 = __rdtsc(), t1 = t0, c1 = c0;
    while (t1 - t0 < 2'000'000) {
      t1 = ClockNs();
      c1 = __rdtsc();
    }
    if (c1 <= c0) return;
    ns_per_tick = static_cast<double>(t1 - t0) / static_cast<double>(c1 - c0);
    base_ticks = c1;
    base_ns = t1;
    usable = true;
#endif
  }
};
}  // namespace

uint64_t MonotonicNs() {
  static const TscClock tsc;
#if defined(__x86_64__)
  if (tsc.usable) {
    uint64_t ticks = __rdtsc();
    if (ticks < tsc.base_ticks) return tsc.base_ns;
    return tsc.base_ns + static_cast<uint64_t>(static_cast<double>(ticks - tsc.base_ticks) * tsc.ns_per_tick);
  }
#endif
  return ClockNs();
}

}  // namespace fkv
