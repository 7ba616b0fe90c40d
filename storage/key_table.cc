// KeyTable: see key_table.h.
#include "storage/key_table.h"

#include <cstdlib>
#include <new>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace fkv {

namespace {
constexpr size_t kMinBuckets = 16;
}

uint64_t HashKey(std::string_view key) { return XXH3_64bits(key.data(), key.size()); }

uint64_t KeyTable::BitReverse(uint64_t v) {
  v = ((v >> 1) & 0x5555555555555555ULL) | ((v & 0x5555555555555555ULL) << 1);
  v = ((v >> 2) & 0x3333333333333333ULL) | ((v & 0x3333333333333333ULL) << 2);
  v = ((v >> 4) & 0x0F0F0F0F0F0F0F0FULL) | ((v & 0x0F0F0F0F0F0F0F0FULL) << 4);
  return __builtin_bswap64(v);
}

KeyTable::KeyTable() {
  buckets_ = static_cast<Record**>(std::calloc(kMinBuckets, sizeof(Record*)));
  if (buckets_ == nullptr) throw std::bad_alloc();
  mask_ = kMinBuckets - 1;
}

KeyTable::~KeyTable() {
  Clear();
  std::free(buckets_);
}

Record** KeyTable::FindLink(std::string_view key, uint64_t hash) {
  Record** link = &buckets_[hash & mask_];
  while (*link != nullptr) {
    Record* r = *link;
    if (r->key_len == key.size() && std::memcmp(r->key().data(), key.data(), key.size()) == 0) return link;
    link = &r->next;
  }
  return link;
}

void KeyTable::Insert(Record* r, uint64_t hash) {
  if (size_ + 1 > bucket_count()) {
    Resize(bucket_count() * 2);
  }
  Record** b = &buckets_[hash & mask_];
  r->next = *b;
  *b = r;
  size_++;
}

Record* KeyTable::Random(const std::function<uint64_t()>& rnd) const {
  if (size_ == 0) return nullptr;
  Record* head = nullptr;
  for (int i = 0; i < 64 && head == nullptr; i++) head = buckets_[rnd() & mask_];
  for (uint64_t start = rnd(), i = 0; head == nullptr && i <= mask_; i++) head = buckets_[(start + i) & mask_];
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
  if (bucket_count() > kMinBuckets && size_ * 8 < bucket_count()) {
    size_t want = kMinBuckets;
    while (want < size_ * 2) want *= 2;
    Resize(want);
  }
}

void KeyTable::Clear() {
  for (size_t i = 0; i <= mask_; i++) {
    Record* r = buckets_[i];
    while (r != nullptr) {
      Record* next = r->next;
      Record::Free(r);
      r = next;
    }
    buckets_[i] = nullptr;
  }
  size_ = 0;
  Resize(kMinBuckets);
}

void KeyTable::Resize(size_t buckets) {
  auto* nb = static_cast<Record**>(std::calloc(buckets, sizeof(Record*)));
  if (nb == nullptr) throw std::bad_alloc();
  uint64_t nmask = buckets - 1;
  for (size_t i = 0; i <= mask_; i++) {
    Record* r = buckets_[i];
    while (r != nullptr) {
      Record* next = r->next;
      uint64_t h = HashKey(r->key());
      Record** b = &nb[h & nmask];
      r->next = *b;
      *b = r;
      r = next;
    }
  }
  std::free(buckets_);
  buckets_ = nb;
  mask_ = nmask;
}

}  // namespace fkv
