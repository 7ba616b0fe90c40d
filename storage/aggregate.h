// Aggregate math of the feature views: the aggregation kinds and specs, the
// running merge of tile partials for count, sum, min, max, mean, stddev
// (Welford/Chan, numerically stable) and the HyperLogLog estimate of
// count_distinct. No registry, no clock; the encoding is storage/entity.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace fkv {

enum class AggKind : uint8_t { kCount, kSum, kMin, kMax, kMean, kStddev, kCountDistinct, kLast, kLastN, kQuantile, kSession };
const char* AggName(AggKind k);
inline bool IsWindowed(AggKind k) { return k != AggKind::kLast && k != AggKind::kLastN && k != AggKind::kSession; }
// The operations a session aggregation may run over its sessions.
inline bool IsSessionOp(AggKind k) {
  return k == AggKind::kCount || k == AggKind::kSum || k == AggKind::kMin || k == AggKind::kMax ||
         k == AggKind::kMean || k == AggKind::kCountDistinct || k == AggKind::kLast;
}
// Kinds whose field must be a number.
inline bool IsNumeric(AggKind k) {
  return k == AggKind::kSum || k == AggKind::kMin || k == AggKind::kMax || k == AggKind::kMean ||
         k == AggKind::kStddev || k == AggKind::kQuantile;
}

// What storage needs to know of an aggregation definition.
struct AggSpec {
  AggKind kind = AggKind::kCount;
  uint64_t signature = 0;    // hash of the definition: state survives reloads while unchanged
  int64_t resolution_ms = 0; // tile width (windowed kinds)
  int64_t max_window_ms = 0; // retention (windowed kinds)
  int n = 0;                 // last_n; session: the operation (an AggKind)
  // Session aggregations (kind kSession) keep sessions of events closer
  // than resolution_ms (the gap); max_window_ms is the largest window of
  // sessions_<W> (0: none).
};
inline AggKind SessionOp(const AggSpec& a) { return static_cast<AggKind>(a.n); }
// A session of a session aggregation closes for good once its last event
// is `horizon` old (by the clock of the apply): later events no longer join
// it, reads no longer see it, the trim frees it; an event that reaches no
// open session and is itself that old is too old (docs/architecture.md,
// "Session windows").
inline int64_t SessionHorizon(const AggSpec& a) { return std::max(a.max_window_ms, a.resolution_ms); }
// What an event gives the aggregation: its own kind, or a session's operation.
inline AggKind InputKind(const AggSpec& a) { return a.kind == AggKind::kSession ? SessionOp(a) : a.kind; }

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

// HyperLogLog of count_distinct past the exact sets (storage/entity.h):
// p = 12, 4096 registers, standard error 1.04/sqrt(4096) = 1.6%, over
// 32-bit value hashes (the top 12 bits pick the register, the rank comes
// from the other 20, so ranks are 1..21).
namespace hll {
inline constexpr int kP = 12;
inline constexpr size_t kRegisters = size_t{1} << kP;
inline constexpr uint8_t kMaxRank = 32 - kP + 1;
inline uint16_t Register(uint32_t h) { return static_cast<uint16_t>(h >> (32 - kP)); }
inline uint8_t Rank(uint32_t h) {
  uint32_t w = (h << kP) | (uint32_t{1} << (kP - 1));
  return static_cast<uint8_t>(__builtin_clz(w) + 1);
}
double Estimate(const uint8_t* regs);  // kRegisters registers
}  // namespace hll

}  // namespace fkv
