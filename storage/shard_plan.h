// ShardPlan: the keys of one request (a multi-key command, FMGET, FEVENT,
// a Kafka batch) grouped by the shard that owns each, built once from the
// key hashes. Commands run their per-shard work over plan.shards() and read
// plan.indexes(shard); nothing else groups keys by hand. A plan is immutable
// once built, so the shards may read it concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "storage/key_table.h"

namespace fkv {

// The shard of a key hash among n: the high 32 bits (the table uses the low ones).
inline int ShardOfHash(uint64_t hash, int nshards) {
  return static_cast<int>(((hash >> 32) * static_cast<uint64_t>(nshards)) >> 32);
}

class ShardPlan {
 public:
  // n keys; key(i) gives the i-th (a string_view, hashed here).
  template <class KeyAt>
  static ShardPlan Build(int nshards, size_t n, KeyAt&& key) {
    ShardPlan p;
    p.Rebuild(nshards, n, key);
    return p;
  }
  // The same in place: a plan kept by a thread is rebuilt in the memory it
  // already has (no allocation once it has grown).
  template <class KeyAt>
  void Rebuild(int nshards, size_t n, KeyAt&& key) {
    hashes_.resize(n);
    for (size_t i = 0; i < n; i++) hashes_[i] = HashKey(key(i));
    Group(nshards);
  }
  // n keys whose hashes are known.
  static ShardPlan FromHashes(int nshards, std::vector<uint64_t> hashes) {
    ShardPlan p;
    p.hashes_ = std::move(hashes);
    p.Group(nshards);
    return p;
  }

  // The shards holding at least one key, ascending.
  const std::vector<int>& shards() const { return shards_; }
  // The indexes (0..n-1, ascending) of the keys owned by `shard`.
  std::span<const uint32_t> indexes(int shard) const {
    size_t s = static_cast<size_t>(shard);
    return {order_.data() + start_[s], start_[s + 1] - start_[s]};
  }
  uint64_t hash(size_t i) const { return hashes_[i]; }
  size_t size() const { return hashes_.size(); }

 private:
  void Group(int nshards) {
    thread_local std::vector<int> owner;  // each key's shard (scratch)
    owner.resize(hashes_.size());
    shards_.clear();
    start_.assign(static_cast<size_t>(nshards) + 1, 0);
    for (size_t i = 0; i < hashes_.size(); i++) {
      owner[i] = ShardOfHash(hashes_[i], nshards);
      start_[static_cast<size_t>(owner[i]) + 1]++;
    }
    for (size_t s = 0; s < static_cast<size_t>(nshards); s++) {
      if (start_[s + 1] > 0) shards_.push_back(static_cast<int>(s));
      start_[s + 1] += start_[s];
    }
    order_.resize(hashes_.size());
    // Each key to its shard's next place; start_ serves as the cursor and
    // is moved back after.
    for (size_t i = 0; i < hashes_.size(); i++) order_[start_[static_cast<size_t>(owner[i])]++] = static_cast<uint32_t>(i);
    for (size_t s = static_cast<size_t>(nshards); s > 0; s--) start_[s] = start_[s - 1];
    start_[0] = 0;
  }

  std::vector<uint64_t> hashes_;
  std::vector<int> shards_;
  std::vector<size_t> start_;     // per shard, where its indexes begin in order_
  std::vector<uint32_t> order_;  // key indexes grouped by shard
};

}  // namespace fkv
