// The latency histogram behind INFO latencystats and /metrics, and the slow
// log's argument cutting, against brute force.
#include <doctest/doctest.h>

#include <time.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "server/command_stats.h"

using namespace fkv;

TEST_CASE("every duration falls in the bucket whose bounds hold it, within 12.5%") {
  std::mt19937_64 rng(5);
  for (int i = 0; i < 200000; i++) {
    uint64_t v = rng() >> (rng() % 64);
    size_t b = LatencyHistogram::BucketOf(v);
    REQUIRE(b < LatencyHistogram::kBuckets);
    if (b == LatencyHistogram::kBuckets - 1 && v >= LatencyHistogram::LowerBound(b)) continue;  // the overflow bucket
    CHECK(LatencyHistogram::LowerBound(b) <= v);
    CHECK(v < LatencyHistogram::UpperBound(b));
    uint64_t width = LatencyHistogram::UpperBound(b) - LatencyHistogram::LowerBound(b);
    CHECK(width * 8 <= std::max<uint64_t>(8, LatencyHistogram::LowerBound(b)));
  }
  // Buckets tile the line: each starts where the previous ends.
  for (size_t b = 1; b < LatencyHistogram::kBuckets; b++)
    CHECK(LatencyHistogram::LowerBound(b) == LatencyHistogram::UpperBound(b - 1));
  // Powers of two start buckets (what /metrics exposes as `le`).
  for (int k = 3; k <= 40; k++) CHECK(LatencyHistogram::LowerBound(LatencyHistogram::BucketOf(uint64_t{1} << k)) == uint64_t{1} << k);
}

TEST_CASE("percentiles and counts below a boundary agree with the sorted values") {
  std::mt19937_64 rng(9);
  LatencyHistogram h;
  std::vector<uint64_t> vals;
  for (int i = 0; i < 20000; i++) {
    uint64_t v = 500 + rng() % 2'000'000;  // 0.5 us .. 2 ms
    vals.push_back(v);
    h.Add(v);
  }
  std::sort(vals.begin(), vals.end());
  HistogramSnapshot s;
  s.Add(h);
  s.Add(h);  // two shards with the same figures
  CHECK(s.total == 40000);
  for (double q : {50.0, 90.0, 99.0, 99.9, 100.0}) {
    uint64_t exact = vals[static_cast<size_t>(std::ceil(q / 100 * vals.size())) - 1];
    uint64_t got = s.Percentile(q);
    CHECK(got >= exact);
    CHECK(static_cast<double>(got) <= static_cast<double>(exact) * 1.125 + 1);
  }
  for (int k = 10; k <= 22; k++) {
    uint64_t edge = uint64_t{1} << k;
    uint64_t below = static_cast<uint64_t>(std::lower_bound(vals.begin(), vals.end(), edge) - vals.begin());
    CHECK(s.CountBelow(edge) == 2 * below);
  }
  HistogramSnapshot empty;
  CHECK(empty.Percentile(99) == 0);
}

TEST_CASE("the slow log keeps arguments as Redis does") {
  std::vector<std::string> storage;
  for (int i = 0; i < 40; i++) storage.push_back("k" + std::to_string(i));
  storage.insert(storage.begin(), "DEL");
  storage.push_back(std::string(300, 'v'));
  ArgList args;
  for (auto& s : storage) args.push_back(s);
  auto cut = SlowLog::CutArgs(args);
  REQUIRE(cut.size() == 32);
  CHECK(cut[0] == "DEL");
  CHECK(cut[31] == "... (11 more arguments)");
  ArgList two{"SET", std::string_view(storage.back())};
  auto c2 = SlowLog::CutArgs(two);
  CHECK(c2[1] == std::string(128, 'v') + "... (172 more bytes)");
  CHECK(SlowLog::CutArgs(ArgList{"auth", "user", "pw"}) == std::vector<std::string>{"auth", "(redacted)", "(redacted)"});
  CHECK(SlowLog::CutArgs(ArgList{"HELLO", "3", "AUTH", "u", "p", "SETNAME", "x"}) ==
        std::vector<std::string>{"HELLO", "3", "AUTH", "(redacted)", "(redacted)", "SETNAME", "x"});
  CHECK(SlowLog::CutArgs(ArgList{"config", "set", "requirepass", "pw", "hz", "5"}) ==
        std::vector<std::string>{"config", "set", "requirepass", "(redacted)", "hz", "5"});
  SlowLog log;
  for (int i = 0; i < 5; i++) {
    SlowLogEntry e;
    e.id = static_cast<uint64_t>(i);
    log.Add(std::move(e), 3);
  }
  REQUIRE(log.entries().size() == 3);
  CHECK(log.entries().front().id == 4);  // newest first
  CHECK(log.entries().back().id == 2);
}

TEST_CASE("the command clock runs at the rate of CLOCK_MONOTONIC and never goes back") {
  auto mono = [] {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  };
  MonotonicNs();  // the first call measures the TSC's rate (2 ms)
  int64_t m0 = mono();
  uint64_t c0 = MonotonicNs(), prev = c0;
  while (mono() - m0 < 50'000'000) {  // 50 ms of reads
    uint64_t c = MonotonicNs();
    REQUIRE(c >= prev);
    prev = c;
  }
  int64_t dm = mono() - m0;
  int64_t dc = static_cast<int64_t>(MonotonicNs() - c0);
  CHECK(std::abs(static_cast<double>(dc - dm)) < 0.02 * static_cast<double>(dm) + 100'000);
}
