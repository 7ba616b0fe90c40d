// KeyTable: the hash table of one shard. Chained buckets (a power of two) of
// intrusive Records; grows at load 1 and shrinks at load 1/8. A resize is
// incremental, as Redis's dict: the new table is allocated and the old one's
// buckets move over in order, two per lookup or insert and more from the
// shard's cron (RehashFor), so no request waits for a whole table to be
// rehashed (tens of milliseconds at a million keys). While both tables exist,
// a key lives in the old one if its old bucket has not moved yet, else in
// the new one. Scan() uses Redis's reverse-binary cursor over both tables,
// so a full scan returns every key present for its whole duration at least
// once, across any resizes between calls. Single-threaded: owned by the
// shard's thread.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <utility>

#include "storage/record.h"

namespace fkv {

uint64_t HashKey(std::string_view key);  // xxHash3, 64-bit

// A prefetch the compiler keeps: GCC may find a function that only
// prefetches free of side effects and drop calls to it; the empty volatile
// asm is a side effect it must keep.
inline void PrefetchLine(const void* p) {
  __builtin_prefetch(p);
  asm volatile("" : : "r"(p));
}

class KeyTable {
 public:
  KeyTable();
  ~KeyTable();
  KeyTable(const KeyTable&) = delete;
  KeyTable& operator=(const KeyTable&) = delete;

  size_t size() const { return size_; }
  // Buckets of the table; while rehashing, of the larger of the two (the
  // index range of SweepBucket that covers both).
  size_t bucket_count() const { return std::max(mask_, mask1_) + 1; }
  bool rehashing() const { return buckets1_ != nullptr; }
  // Moves buckets to the new table for up to `micros` (the cron); true when
  // a rehash is still under way.
  bool RehashFor(int64_t micros);

  // Pointer to the link that points at the record with `key`, or to the null
  // link ending its chain. Valid until the next mutation of the table.
  Record** FindLink(std::string_view key, uint64_t hash);
  Record* Find(std::string_view key, uint64_t hash) { return *FindLink(key, hash); }
  // Inserts a record whose key is known to be absent.
  void Insert(Record* r, uint64_t hash);
  // Replaces the record at `link` (from FindLink) with `r`; returns the old one.
  Record* ReplaceAt(Record** link, Record* r);
  // Unlinks the record at `link`; returns it. May shrink the table.
  Record* RemoveAt(Record** link);
  // Removes and frees every record.
  void Clear();

  // Calls f(Record*) for every record of the bucket(s) at `cursor`; returns
  // the next cursor (0 when the scan is complete).
  template <class F>
  uint64_t Scan(uint64_t cursor, F&& f) {
    if (!rehashing()) {
      VisitChain(buckets_[cursor & mask_], f);
      return NextCursor(cursor, mask_);
    }
    // Both tables (Redis's dictScan): the small table's bucket, then every
    // bucket of the large one that it expands to.
    Record** small = buckets_;
    Record** large = buckets1_;
    uint64_t ms = mask_, ml = mask1_;
    if (ms > ml) {
      std::swap(small, large);
      std::swap(ms, ml);
    }
    VisitChain(small[cursor & ms], f);
    do {
      VisitChain(large[cursor & ml], f);
      cursor = NextCursor(cursor, ml);
    } while (cursor & (ms ^ ml));
    return cursor;
  }
  // Visits bucket `index` (< bucket_count()) of the table, and while
  // rehashing of both tables, masked to each one's size (plain order, for
  // the expiry sweep); should_remove(r) true unlinks and frees r.
  template <class F>
  size_t SweepBucket(size_t index, F&& should_remove) {
    size_t removed = 0;
    if (rehashing()) removed += SweepChain(&buckets_[index & mask_], should_remove);
    return removed + SweepChain(rehashing() ? &buckets1_[index & mask1_] : &buckets_[index & mask_], should_remove);
  }
  // A record picked at random (nullptr when empty), as Redis's
  // dictGetRandomKey: a random non-empty bucket (64 random tries, then the
  // next non-empty one after a random start), then a random record of its
  // chain. `rnd` supplies uniform 64-bit numbers.
  Record* Random(const std::function<uint64_t()>& rnd) const;
  // Prefetch stages for a batch of lookups (storage/shard_store.h).
  void PrefetchBucket(uint64_t hash) const { PrefetchLine(BucketOf(hash)); }
  Record* BucketHead(uint64_t hash) const { return *BucketOf(hash); }
  void MaybeShrink();
  size_t MemoryOverhead() const { return (mask_ + 1 + (rehashing() ? mask1_ + 1 : 0)) * sizeof(Record*); }

 private:
  static uint64_t Reverse(uint64_t v) { return BitReverse(v); }
  static uint64_t BitReverse(uint64_t v);
  static uint64_t NextCursor(uint64_t cursor, uint64_t mask) {
    cursor |= ~mask;
    cursor = Reverse(cursor);
    cursor++;
    return Reverse(cursor);
  }
  template <class F>
  static void VisitChain(Record* r, F& f) {
    while (r != nullptr) {
      Record* next = r->next;  // f may not remove, but be safe on reads
      f(r);
      r = next;
    }
  }
  template <class F>
  size_t SweepChain(Record** link, F& should_remove) {
    size_t removed = 0;
    while (*link != nullptr) {
      Record* r = *link;
      if (should_remove(r)) {
        *link = r->next;
        size_--;
        Record::Free(r);
        removed++;
      } else {
        link = &r->next;
      }
    }
    return removed;
  }
  // The bucket that holds (or would hold) a key of this hash.
  Record** BucketOf(uint64_t hash) const {
    if (rehashing() && (hash & mask_) < rehash_idx_) return &buckets1_[hash & mask1_];
    return &buckets_[hash & mask_];
  }
  void StartResize(size_t buckets);
  // Moves up to n buckets of the old table (visiting at most 10 n empty ones).
  void RehashStep(size_t n);

  Record** buckets_;       // the table (the old one while rehashing)
  uint64_t mask_;
  Record** buckets1_ = nullptr;  // the new table while rehashing
  uint64_t mask1_ = 0;
  uint64_t rehash_idx_ = 0;  // buckets_[0, rehash_idx_) have moved
  size_t size_ = 0;
};

}  // namespace fkv
