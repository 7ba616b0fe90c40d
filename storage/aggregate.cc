// Aggregate math: see aggregate.h.
#include "storage/aggregate.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

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

namespace tiles {

int Width(AggKind k) {
  switch (k) {
    case AggKind::kMean: return 2;    // sum, count
    case AggKind::kStddev: return 3;  // count, mean, m2
    default: return 1;                // count | sum | min | max
  }
}

namespace {
// First record of seg[0, len) whose index is >= t.
size_t LowerBound(const double* seg, size_t len, size_t stride, double t) {
  size_t n = len / stride;
  if (n == 0 || seg[(n - 1) * stride] < t) return n;  // in-order events: append
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (seg[mid * stride] < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
}  // namespace

size_t Add(std::vector<double>& arena, size_t off, size_t len, AggKind k, int64_t tile, double x) {
  const size_t stride = static_cast<size_t>(1 + Width(k));
  const double t = static_cast<double>(tile);
  size_t pos = LowerBound(arena.data() + off, len, stride, t);
  size_t inserted = 0;
  if (pos * stride >= len || arena[off + pos * stride] != t) {
    double init[4] = {t, 0, 0, 0};
    if (k == AggKind::kMin) init[1] = std::numeric_limits<double>::infinity();
    if (k == AggKind::kMax) init[1] = -std::numeric_limits<double>::infinity();
    arena.insert(arena.begin() + static_cast<std::ptrdiff_t>(off + pos * stride), init, init + stride);
    inserted = stride;
  }
  double* p = &arena[off + pos * stride + 1];
  switch (k) {
    case AggKind::kCount: p[0] += 1; break;
    case AggKind::kSum: p[0] += x; break;
    case AggKind::kMin: p[0] = std::min(p[0], x); break;
    case AggKind::kMax: p[0] = std::max(p[0], x); break;
    case AggKind::kMean:
      p[0] += x;
      p[1] += 1;
      break;
    case AggKind::kStddev: {
      p[0] += 1;
      double d = x - p[1];
      p[1] += d / p[0];
      p[2] += d * (x - p[1]);
      break;
    }
    default: break;
  }
  return inserted;
}

Accum Merge(const double* seg, size_t len, AggKind k, int64_t lo, int64_t hi) {
  Accum a;
  const size_t stride = static_cast<size_t>(1 + Width(k));
  const size_t n = len / stride;
  const double dlo = static_cast<double>(lo), dhi = static_cast<double>(hi);
  // Windows end near now, i.e. at the end of the series: for short series
  // walk back from the end (sequential, touches only what it needs); binary
  // search the start of long ones.
  size_t first, last;  // records [first, last) are inside [lo, hi]
  if (n <= 256) {
    last = n;
    while (last > 0 && seg[(last - 1) * stride] > dhi) last--;
    first = last;
    while (first > 0 && seg[(first - 1) * stride] >= dlo) first--;
  } else {
    first = LowerBound(seg, len, stride, dlo);
    last = first;
    while (last < n && seg[last * stride] <= dhi) last++;
  }
  for (size_t i = first; i < last; i++) {
    const double* p = &seg[i * stride + 1];
    switch (k) {
      case AggKind::kCount: a.n += p[0]; break;
      case AggKind::kSum:
        a.sum += p[0];
        a.n += 1;
        break;
      case AggKind::kMin:
        a.min = std::min(a.min, p[0]);
        a.n += 1;
        break;
      case AggKind::kMax:
        a.max = std::max(a.max, p[0]);
        a.n += 1;
        break;
      case AggKind::kMean:
        a.sum += p[0];
        a.n += p[1];
        break;
      case AggKind::kStddev: {
        Accum t;
        t.n = p[0];
        t.mean = p[1];
        t.m2 = p[2];
        double keep_min = a.min, keep_max = a.max;
        a.Merge(t);
        a.min = keep_min;
        a.max = keep_max;
        break;
      }
      default: break;
    }
  }
  return a;
}

size_t DropBefore(std::vector<double>& arena, size_t off, size_t len, AggKind k, int64_t min_tile) {
  const size_t stride = static_cast<size_t>(1 + Width(k));
  size_t i = 0;
  while (i < len && arena[off + i] < static_cast<double>(min_tile)) i += stride;
  if (i == 0) return 0;
  arena.erase(arena.begin() + static_cast<std::ptrdiff_t>(off), arena.begin() + static_cast<std::ptrdiff_t>(off + i));
  if (arena.capacity() > 4 * arena.size() + 16) arena.shrink_to_fit();
  return i;
}

}  // namespace tiles

void DistinctSeries::HllAdd(std::vector<uint8_t>* regs, uint64_t h) {
  size_t idx = static_cast<size_t>(h >> (64 - kP));
  uint64_t w = (h << kP) | (uint64_t{1} << (kP - 1));
  uint8_t rho = static_cast<uint8_t>(__builtin_clzll(w) + 1);
  if ((*regs)[idx] < rho) (*regs)[idx] = rho;
}

double DistinctSeries::Estimate(const std::vector<uint8_t>& regs) {
  const double m = static_cast<double>(kRegisters);
  double sum = 0;
  size_t zeros = 0;
  for (uint8_t r : regs) {
    sum += std::ldexp(1.0, -r);
    if (r == 0) zeros++;
  }
  double alpha = 0.7213 / (1 + 1.079 / m);
  double e = alpha * m * m / sum;
  if (e <= 2.5 * m && zeros > 0) e = m * std::log(m / static_cast<double>(zeros));
  return e;
}

void DistinctSeries::Add(int64_t tile, uint64_t h) {
  auto sk = std::lower_bound(sketches_.begin(), sketches_.end(), tile,
                             [](const auto& e, int64_t t) { return e.first < t; });
  if (sk != sketches_.end() && sk->first == tile) return HllAdd(sk->second.get(), h);
  std::pair<int64_t, uint64_t> v{tile, h};
  auto pos = std::lower_bound(exact_.begin(), exact_.end(), v);
  if (pos != exact_.end() && *pos == v) return;
  pos = exact_.insert(pos, v);
  auto first = std::lower_bound(exact_.begin(), pos, std::pair<int64_t, uint64_t>{tile, 0});
  auto last = std::upper_bound(pos, exact_.end(), std::pair<int64_t, uint64_t>{tile, UINT64_MAX});
  if (static_cast<size_t>(last - first) > kExactLimit) {  // this tile becomes a sketch
    auto regs = std::make_unique<std::vector<uint8_t>>(kRegisters, 0);
    for (auto it = first; it != last; ++it) HllAdd(regs.get(), it->second);
    exact_.erase(first, last);
    sketches_.insert(sk, {tile, std::move(regs)});
  }
}

uint64_t DistinctSeries::Count(int64_t lo, int64_t hi) const {
  thread_local std::vector<uint64_t> all;  // reused: no allocation per read
  all.clear();
  auto b = std::lower_bound(exact_.begin(), exact_.end(), std::pair<int64_t, uint64_t>{lo, 0});
  for (auto it = b; it != exact_.end() && it->first <= hi; ++it) all.push_back(it->second);
  auto sk = std::lower_bound(sketches_.begin(), sketches_.end(), lo, [](const auto& e, int64_t t) { return e.first < t; });
  bool sketch = sk != sketches_.end() && sk->first <= hi;
  if (!sketch) {
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    if (all.size() <= kExactLimit * 4) return all.size();
  }
  std::vector<uint8_t> regs(kRegisters, 0);
  for (uint64_t h : all) HllAdd(&regs, h);
  for (auto j = sk; j != sketches_.end() && j->first <= hi; ++j)
    for (size_t r = 0; r < kRegisters; r++) regs[r] = std::max(regs[r], (*j->second)[r]);
  return static_cast<uint64_t>(std::llround(Estimate(regs)));
}

size_t DistinctSeries::DropBefore(int64_t min_tile) {
  auto e = std::lower_bound(exact_.begin(), exact_.end(), std::pair<int64_t, uint64_t>{min_tile, 0});
  size_t n = static_cast<size_t>(e - exact_.begin());
  exact_.erase(exact_.begin(), e);
  if (exact_.capacity() > 4 * exact_.size() + 8) exact_.shrink_to_fit();
  auto s = std::lower_bound(sketches_.begin(), sketches_.end(), min_tile, [](const auto& x, int64_t t) { return x.first < t; });
  n += static_cast<size_t>(s - sketches_.begin());
  sketches_.erase(sketches_.begin(), s);
  return n;
}

size_t DistinctSeries::MemoryUsage() const {
  return sizeof(*this) + exact_.capacity() * sizeof(exact_[0]) + sketches_.capacity() * sizeof(sketches_[0]) +
         sketches_.size() * (kRegisters + sizeof(std::vector<uint8_t>));
}

void LastList::Add(int64_t ts, uint64_t seq, std::string_view value, size_t n) {
  // Newest first by (ts, seq).
  auto newer = [](int64_t ts1, uint64_t s1, const LastItem& b) { return ts1 > b.ts || (ts1 == b.ts && s1 > b.seq); };
  size_t pos = 0;
  while (pos < items_.size() && !newer(ts, seq, items_[pos])) pos++;
  if (pos >= n) return;  // older than everything kept
  items_.insert(items_.begin() + static_cast<std::ptrdiff_t>(pos), LastItem{ts, seq, std::string(value)});
  if (items_.size() > n) items_.resize(n);
}

size_t LastList::MemoryUsage() const {
  size_t m = sizeof(*this) + items_.capacity() * sizeof(LastItem);
  for (const auto& i : items_)
    if (i.value.capacity() > 15) m += i.value.capacity() + 1;
  return m;
}

}  // namespace fkv
