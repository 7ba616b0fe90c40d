// KeyTable: see key_table.h.
#include "storage/key_table.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <new>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace fkv {

namespace {
constexpr size_t kMinBuckets = 16;
// A zeroed bucket array (calloc: a large one is zeroed lazily, page by page
// as the incremental rehash reaches it, not in one pause).
Record** AllocBuckets(size_t n) {
  void* p = std::calloc(n, sizeof(Record*));
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<Record**>(p);
}
}  // namespace

uint64_t HashKey(std::string_view key) { return XXH3_64bits(key.data(), key.size()); }

uint64_t KeyTable::BitReverse(uint64_t v) {
  v = ((v >> 1) & 0x5555555555555555ULL) | ((v & 0x5555555555555555ULL) << 1);
  v = ((v >> 2) & 0x3333333333333333ULL) | ((v & 0x3333333333333333ULL) << 2);
  v = ((v >> 4) & 0x0F0F0F0F0F0F0F0FULL) | ((v & 0x0F0F0F0F0F0F0F0FULL) << 4);
  return __builtin_bswap64(v);
}

KeyTable::KeyTable() {
  buckets_ = AllocBuckets(kMinBuckets);
  mask_ = kMinBuckets - 1;
}

KeyTable::~KeyTable() {
  Clear();
  std::free(buckets_);
}

void KeyTable::StartResize(size_t buckets) {
  buckets1_ = AllocBuckets(buckets);
  mask1_ = buckets - 1;
  rehash_idx_ = 0;
}

void KeyTable::RehashStep(size_t n) {
  size_t empty_visits = 10 * n;
  // The records the next step moves: each is a random miss (its key is
  // hashed again), fetched while this step moves its own.
  if (rehashing())
    for (uint64_t j = rehash_idx_ + n, end = std::min<uint64_t>(rehash_idx_ + 2 * n, mask_ + 1); j < end; j++)
      if (Record* r = buckets_[j]) __builtin_prefetch(r);
  while (n > 0 && rehashing()) {
    if (rehash_idx_ > mask_) {  // every bucket moved: the new table is the table
      std::free(buckets_);
      buckets_ = buckets1_;
      mask_ = mask1_;
      buckets1_ = nullptr;
      mask1_ = 0;
      rehash_idx_ = 0;
      return;
    }
    Record* r = buckets_[rehash_idx_];
    if (r == nullptr) {
      rehash_idx_++;
      if (--empty_visits == 0) return;
      continue;
    }
    while (r != nullptr) {
      Record* next = r->next;
      Record** b = &buckets1_[HashKey(r->key()) & mask1_];
      r->next = *b;
      *b = r;
      r = next;
    }
    buckets_[rehash_idx_++] = nullptr;
    n--;
  }
}

bool KeyTable::RehashFor(int64_t micros) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(micros);
  while (rehashing()) {
    RehashStep(100);
    if (std::chrono::steady_clock::now() >= deadline) break;
  }
  return rehashing();
}

Record** KeyTable::FindLink(std::string_view key, uint64_t hash) {
  if (rehashing()) RehashStep(2);
  Record** link = BucketOf(hash);
  while (*link != nullptr) {
    Record* r = *link;
    if (r->key_len == key.size() && std::memcmp(r->key().data(), key.data(), key.size()) == 0) return link;
    link = &r->next;
  }
  return link;
}

void KeyTable::Insert(Record* r, uint64_t hash) {
  if (rehashing()) RehashStep(2);
  else if (size_ + 1 > mask_ + 1) StartResize(2 * (mask_ + 1));
  Record** b = BucketOf(hash);
  r->next = *b;
  *b = r;
  size_++;
}

Record* KeyTable::Random(const std::function<uint64_t()>& rnd) const {
  if (size_ == 0) return nullptr;
  // While rehashing, a bucket index over both tables (the old one first).
  const uint64_t n0 = mask_ + 1, n = n0 + (rehashing() ? mask1_ + 1 : 0);
  auto bucket = [&](uint64_t i) { return i < n0 ? buckets_[i] : buckets1_[i - n0]; };
  Record* head = nullptr;
  for (int i = 0; i < 64 && head == nullptr; i++) head = bucket(rnd() % n);
  for (uint64_t start = rnd(), i = 0; head == nullptr && i < n; i++) head = bucket((start + i) % n);
  size_t len = 0;
  for (Record* r = head; r != nullptr; r = r->next) len++;
  Record* r = head;
  for (uint64_t k = rnd() % len; k > 0; k--) r = r->next;
  return r;
}

Record* KeyTable::ReplaceAt(Record** link, Record* r) {
  Record* old = *link;
  r->next = old->next;
  *link = r;
  return old;
}

Record* KeyTable::RemoveAt(Record** link) {
  Record* old = *link;
  *link = old->next;
  old->next = nullptr;
  size_--;
  return old;
}

void KeyTable::MaybeShrink() {
  if (!rehashing() && mask_ + 1 > kMinBuckets && size_ * 8 < mask_ + 1) {
    size_t want = kMinBuckets;
    while (want < size_ * 2) want *= 2;
    StartResize(want);
  }
}

void KeyTable::Clear() {
  for (Record** t : {buckets_, buckets1_}) {
    if (t == nullptr) continue;
    for (size_t i = 0, n = (t == buckets_ ? mask_ : mask1_) + 1; i < n; i++) {
      Record* r = t[i];
      while (r != nullptr) {
        Record* next = r->next;
        Record::Free(r);
        r = next;
      }
      t[i] = nullptr;
    }
  }
  std::free(buckets1_);
  buckets1_ = nullptr;
  mask1_ = 0;
  rehash_idx_ = 0;
  size_ = 0;
  if (mask_ + 1 != kMinBuckets) {
    std::free(buckets_);
    buckets_ = AllocBuckets(kMinBuckets);
    mask_ = kMinBuckets - 1;
  }
}

}  // namespace fkv
