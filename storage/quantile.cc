// DDSketch of agg: quantile: see quantile.h.
#include "storage/quantile.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "storage/entity.h"

namespace fkv::dds {

namespace {
const double kLogGamma = std::log(kGamma);
// Index() of the smallest subnormal double is -37,220 and of the largest
// double 35,489: a bucket past these bounds in a file is corrupt.
constexpr int64_t kMinIndex = -37'300, kMaxIndex = 35'500;
constexpr uint64_t kMaxCount = uint64_t{1} << 53;

void Put(std::string* out, uint64_t v) {
  uint8_t b[10];
  out->append(reinterpret_cast<const char*>(b), varint::Put(b, v));
}

size_t StoreBytes(const std::vector<std::pair<int32_t, uint64_t>>& s) {
  uint8_t b[10];
  size_t n = varint::Put(b, s.size());
  int32_t prev = 0;
  for (size_t i = 0; i < s.size(); i++) {
    n += varint::Put(b, i == 0 ? varint::ZigZag(s[i].first) : static_cast<uint64_t>(s[i].first - prev));
    n += varint::Put(b, s[i].second);
    prev = s[i].first;
  }
  return n;
}

void PutStore(std::string* out, const std::vector<std::pair<int32_t, uint64_t>>& s) {
  Put(out, s.size());
  int32_t prev = 0;
  for (size_t i = 0; i < s.size(); i++) {
    Put(out, i == 0 ? varint::ZigZag(s[i].first) : static_cast<uint64_t>(s[i].first - prev));
    Put(out, s[i].second);
    prev = s[i].first;
  }
}

// Bounded varint reads over untrusted bytes.
bool Get(const uint8_t** p, const uint8_t* end, uint64_t* v) {
  uint64_t r = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return false;
    uint8_t b = *(*p)++;
    r |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}
}  // namespace

int32_t Index(double magnitude) { return static_cast<int32_t>(std::ceil(std::log(magnitude) / kLogGamma)); }

double Value(int32_t index) {
  // (the bucket of the largest doubles would answer past them: infinity)
  return std::min(2 * std::pow(kGamma, index) / (kGamma + 1), std::numeric_limits<double>::max());
}

void Sketch::Clear() {
  pos_.clear();
  neg_.clear();
  zeros_ = 0;
}

uint64_t Sketch::Total(const Store& s) {
  uint64_t n = 0;
  for (auto& b : s) n += b.second;
  return n;
}

void Sketch::Fold(Store& s) {
  if (s.size() <= kMaxBuckets) return;
  size_t excess = s.size() - kMaxBuckets;
  for (size_t i = 0; i < excess; i++) s[excess].second += s[i].second;
  s.erase(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(excess));
}

void Sketch::Bump(Store& s, int32_t index, uint64_t n) {
  auto it = std::lower_bound(s.begin(), s.end(), index, [](const auto& b, int32_t i) { return b.first < i; });
  if (it != s.end() && it->first == index) it->second += n;
  else s.insert(it, {index, n});
  Fold(s);
}

void Sketch::Add(double x) {
  if (x == 0 || !std::isfinite(x)) {
    zeros_ += x == 0;
    return;
  }
  Bump(x > 0 ? pos_ : neg_, Index(std::fabs(x)), 1);
}

void Sketch::MergeInto(Store& s, const uint8_t** p, uint64_t n, Store& scratch) {
  scratch.clear();
  scratch.reserve(s.size() + n);
  size_t i = 0;
  int64_t key = 0;
  for (uint64_t j = 0; j < n; j++) {
    uint64_t k, c;
    *p = varint::Get(*p, &k);
    *p = varint::Get(*p, &c);
    key = j == 0 ? varint::UnZigZag(k) : key + static_cast<int64_t>(k);
    while (i < s.size() && s[i].first < key) scratch.push_back(s[i++]);
    if (i < s.size() && s[i].first == key) {
      scratch.push_back({s[i].first, s[i].second + c});
      i++;
    } else {
      scratch.push_back({static_cast<int32_t>(key), c});
    }
  }
  while (i < s.size()) scratch.push_back(s[i++]);
  s.swap(scratch);
  Fold(s);
}

void Sketch::MergeEncoded(const uint8_t* p) {
  uint64_t len, z, n;
  p = varint::Get(p, &len);
  p = varint::Get(p, &z);
  zeros_ += z;
  p = varint::Get(p, &n);
  MergeInto(pos_, &p, n, scratch_);
  p = varint::Get(p, &n);
  MergeInto(neg_, &p, n, scratch_);
}

void Sketch::Decode(const uint8_t* p) {
  Clear();
  MergeEncoded(p);
}

void Sketch::Encode(std::string* out) const {
  uint8_t b[10];
  size_t len = varint::Put(b, zeros_) + StoreBytes(pos_) + StoreBytes(neg_);
  Put(out, len);
  Put(out, zeros_);
  PutStore(out, pos_);
  PutStore(out, neg_);
}

bool Sketch::Quantile(double q, double* out) const {
  const uint64_t n = count();
  if (n == 0) return false;
  // The rank of the value asked for, 0-based, in ascending order:
  // negatives (largest magnitude first), zeros, positives. q (n - 1) is
  // rounded up when within 1e-12 of a whole number: 0.29 x 100 is
  // 28.999999999999996 in doubles, and means rank 29.
  const double exact = std::clamp(q, 0.0, 1.0) * static_cast<double>(n - 1);
  const auto rank = std::min(n - 1, static_cast<uint64_t>(std::floor(exact * (1 + 1e-12))));
  uint64_t seen = 0;
  for (auto it = neg_.rbegin(); it != neg_.rend(); ++it) {
    seen += it->second;
    if (seen > rank) {
      *out = -Value(it->first);
      return true;
    }
  }
  seen += zeros_;
  if (seen > rank) {
    *out = 0;
    return true;
  }
  for (const auto& b : pos_) {
    seen += b.second;
    if (seen > rank) {
      *out = Value(b.first);
      return true;
    }
  }
  *out = pos_.empty() ? 0 : Value(pos_.back().first);
  return true;
}

bool AddInPlace(uint8_t* p, double x) {
  if (!std::isfinite(x)) return false;
  uint64_t v;
  p = const_cast<uint8_t*>(varint::Get(p, &v));  // the length
  // Increments the varint at q when its width stays.
  auto bump = [](uint8_t* q) {
    uint64_t c;
    uint8_t* after = const_cast<uint8_t*>(varint::Get(q, &c));
    uint8_t b[10];
    if (varint::Put(b, c + 1) != static_cast<size_t>(after - q)) return false;
    std::memcpy(q, b, static_cast<size_t>(after - q));
    return true;
  };
  if (x == 0) return bump(p);
  p = const_cast<uint8_t*>(varint::Get(p, &v));  // zeros
  const int32_t want = Index(std::fabs(x));
  for (int store = 0; store < 2; store++) {
    uint64_t n;
    p = const_cast<uint8_t*>(varint::Get(p, &n));
    int64_t key = 0;
    for (uint64_t j = 0; j < n; j++) {
      uint64_t k, c;
      p = const_cast<uint8_t*>(varint::Get(p, &k));
      key = j == 0 ? varint::UnZigZag(k) : key + static_cast<int64_t>(k);
      if (store == (x > 0 ? 0 : 1) && key == want) return bump(p);
      p = const_cast<uint8_t*>(varint::Get(p, &c));
    }
    if (store == (x > 0 ? 0 : 1)) return false;
  }
  return false;
}

size_t EncodedSize(const uint8_t* p) {
  uint64_t len;
  const uint8_t* q = varint::Get(p, &len);
  return static_cast<size_t>(q - p) + len;
}

std::string Check(const uint8_t** pp, const uint8_t* end) {
  uint64_t len;
  if (!Get(pp, end, &len) || len > static_cast<uint64_t>(end - *pp)) return "truncated quantile sketch";
  const uint8_t* p = *pp;
  const uint8_t* stop = p + len;
  uint64_t zeros, total = 0;
  if (!Get(&p, stop, &zeros) || zeros > kMaxCount) return "bad quantile sketch";
  total = zeros;
  for (int store = 0; store < 2; store++) {
    uint64_t n;
    if (!Get(&p, stop, &n) || n > kMaxBuckets) return "bad quantile sketch size";
    int64_t key = 0;
    for (uint64_t j = 0; j < n; j++) {
      uint64_t k, c;
      if (!Get(&p, stop, &k) || !Get(&p, stop, &c)) return "truncated quantile sketch";
      const uint64_t span = static_cast<uint64_t>(kMaxIndex - kMinIndex);
      if (j == 0) {
        if (k > 2 * span) return "bad quantile bucket";
        key = varint::UnZigZag(k);
      } else {
        if (k == 0 || k > span) return "quantile buckets out of order";
        key += static_cast<int64_t>(k);
      }
      if (key < kMinIndex || key > kMaxIndex) return "bad quantile bucket";
      if (c == 0 || c > kMaxCount - total) return "bad quantile bucket count";
      total += c;
    }
  }
  if (p != stop) return "bytes left in a quantile sketch";
  if (total == 0 || total > kMaxCount) return "bad quantile sketch count";
  *pp = stop;
  return "";
}

}  // namespace fkv::dds
