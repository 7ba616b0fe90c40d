// Aggregate math: see aggregate.h.
#include "storage/aggregate.h"

#include <algorithm>
#include <cmath>

namespace fkv {

const char* AggName(AggKind k) {
  switch (k) {
    case AggKind::kCount: return "count";
    case AggKind::kSum: return "sum";
    case AggKind::kMin: return "min";
    case AggKind::kMax: return "max";
    case AggKind::kMean: return "mean";
    case AggKind::kStddev: return "stddev";
    case AggKind::kCountDistinct: return "count_distinct";
    case AggKind::kLast: return "last";
    case AggKind::kLastN: return "last_n";
    case AggKind::kQuantile: return "quantile";
    case AggKind::kSession: return "session";
  }
  return "?";
}

void Accum::Add(double x) {
  n += 1;
  sum += x;
  min = std::min(min, x);
  max = std::max(max, x);
  double d = x - mean;
  mean += d / n;
  m2 += d * (x - mean);
}

void Accum::Merge(const Accum& o) {
  if (o.n == 0) return;
  if (n == 0) {
    *this = o;
    return;
  }
  double tn = n + o.n;
  double d = o.mean - mean;
  mean += d * o.n / tn;
  m2 += o.m2 + d * d * n * o.n / tn;
  n = tn;
  sum += o.sum;
  min = std::min(min, o.min);
  max = std::max(max, o.max);
}

namespace hll {
double Estimate(const uint8_t* regs) {
  const double m = static_cast<double>(kRegisters);
  double sum = 0;
  size_t zeros = 0;
  for (size_t i = 0; i < kRegisters; i++) {
    sum += std::ldexp(1.0, -regs[i]);
    if (regs[i] == 0) zeros++;
  }
  double alpha = 0.7213 / (1 + 1.079 / m);
  double e = alpha * m * m / sum;
  if (e <= 2.5 * m && zeros > 0) e = m * std::log(m / static_cast<double>(zeros));
  return e;
}
}  // namespace hll

}  // namespace fkv
