// The sketch of `agg: quantile` (docs/architecture.md, "Quantiles"): a
// DDSketch (Masson, Rim and Lee, VLDB 2019) with relative accuracy 1%.
// A value x != 0 goes to bucket i = ceil(log_gamma |x|), gamma = 1.01/0.99,
// of the positive or the negative store; zeros are counted apart. The
// q-quantile is the bucket holding the value of rank floor(q (n - 1)) in
// sorted order (q (n - 1) rounded up when within 1e-12 of a whole number),
// answered as 2 gamma^i / (gamma + 1): within 1% of that value. Sketches
// merge exactly (counts add), so a window's sketch is the sum of its
// tiles' and is as accurate as one built from every value, as long as no
// store folded (below).
//
// A tile value (storage/entity.h) is
//   varint L | zeros | npos | npos x (key, count) | nneg | nneg x (key, count)
// L bytes after L, all varints; keys ascend, the first zigzag, the next the
// difference to the one before (>= 1); counts >= 1. A store keeps at most
// kMaxBuckets buckets: past that its smallest magnitudes fold into one bucket
// (their quantiles are then answered with the fold's bucket).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fkv::dds {

inline constexpr double kAlpha = 0.01;
inline constexpr double kGamma = (1 + kAlpha) / (1 - kAlpha);
inline constexpr size_t kMaxBuckets = 2048;  // per store: |x| spanning a factor of 6.2e17

int32_t Index(double magnitude);  // magnitude > 0, finite
double Value(int32_t index);      // the bucket's answer, within 1% of any value in it

class Sketch {
 public:
  void Clear();
  bool empty() const { return count() == 0; }
  uint64_t count() const { return zeros_ + Total(pos_) + Total(neg_); }
  void Add(double x);
  // Merges the tile value at p (trusted bytes: the entity's own).
  void MergeEncoded(const uint8_t* p);
  // The q-quantile (0 <= q <= 1); false when empty.
  bool Quantile(double q, double* out) const;
  // Appends the tile value (with its length prefix).
  void Encode(std::string* out) const;
  // Decodes the tile value at p (replacing this sketch).
  void Decode(const uint8_t* p);

 private:
  using Store = std::vector<std::pair<int32_t, uint64_t>>;  // (index, count), ascending
  static uint64_t Total(const Store& s);
  static void Bump(Store& s, int32_t index, uint64_t n);
  static void MergeInto(Store& s, const uint8_t** p, uint64_t n, Store& scratch);
  static void Fold(Store& s);
  Store pos_, neg_, scratch_;
  uint64_t zeros_ = 0;
};

// Adds x to the tile value at p without changing its size when x falls in
// a bucket it has and the count keeps its width (a busy tile's usual
// case); false leaves it unchanged (then decode, Add, encode).
bool AddInPlace(uint8_t* p, double x);
// The size of the tile value at p, length prefix included (trusted bytes).
size_t EncodedSize(const uint8_t* p);
// Checks a tile value read from outside (a snapshot, an append-only PUT):
// "" and *p past it, or the problem.
std::string Check(const uint8_t** p, const uint8_t* end);

}  // namespace fkv::dds
