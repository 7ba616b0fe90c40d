// KeyTable: the hash table of one shard. Chained buckets (a power of two) of
// intrusive Records; grows at load 1 and shrinks at load 1/8, in one step.
// Scan() uses Redis's reverse-binary cursor, so a full scan returns every key
// present for its whole duration at least once, across any resizes between
// calls. Single-threaded: owned by the shard's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

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
  size_t bucket_count() const { return mask_ + 1; }

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
    uint64_t m = mask_;
    for (Record* r = buckets_[cursor & m]; r != nullptr;) {
      Record* next = r->next;  // f may not remove, but be safe on reads
      f(r);
      r = next;
    }
    cursor |= ~m;
    cursor = Reverse(cursor);
    cursor++;
    return Reverse(cursor);
  }
  // Visits bucket `index` (plain order, for the expiry sweep); f may return
  // true to ask that the record be removed, then it is passed to `freer`.
  template <class F>
  size_t SweepBucket(size_t index, F&& should_remove) {
    size_t removed = 0;
    Record** link = &buckets_[index & mask_];
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
  // A record picked at random (nullptr when empty), as Redis's
  // dictGetRandomKey: a random non-empty bucket (64 random tries, then the
  // next non-empty one after a random start), then a random record of its
  // chain. `rnd` supplies uniform 64-bit numbers.
  Record* Random(const std::function<uint64_t()>& rnd) const;
  // Prefetch stages for a batch of lookups (storage/shard_store.h).
  void PrefetchBucket(uint64_t hash) const { PrefetchLine(&buckets_[hash & mask_]); }
  Record* BucketHead(uint64_t hash) const { return buckets_[hash & mask_]; }
  void MaybeShrink();
  size_t MemoryOverhead() const { return bucket_count() * sizeof(Record*); }

 private:
  static uint64_t Reverse(uint64_t v) { return BitReverse(v); }
  static uint64_t BitReverse(uint64_t v);
  void Resize(size_t buckets);

  Record** buckets_;
  uint64_t mask_;
  size_t size_ = 0;
};

}  // namespace fkv
