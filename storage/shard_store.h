// ShardStore: the keys of one shard and their expiry. Owned and used by one
// shard thread only (server/shard_set.h routes every key to its owner), so
// nothing here locks. Time is passed in (Unix ms) so tests control it.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "storage/entity.h"
#include "storage/hash_value.h"
#include "storage/key_table.h"
#include "storage/record.h"

namespace fkv {

// A value taken out of a store (or copied from one) with its expiry, on its
// way to a key of possibly another shard (RENAME, COPY). Owns the object it
// holds until a ShardStore adopts it. Move-only; may cross threads.
class DetachedValue {
 public:
  DetachedValue() = default;
  DetachedValue(DetachedValue&& o) noexcept { *this = std::move(o); }
  DetachedValue& operator=(DetachedValue&& o) noexcept;
  DetachedValue(const DetachedValue&) = delete;
  DetachedValue& operator=(const DetachedValue&) = delete;
  ~DetachedValue() { Reset(); }

  bool empty() const { return !present_; }
  ValueType type() const { return type_; }
  int64_t expire_at() const { return expire_at_; }

 private:
  friend class ShardStore;
  void Reset();
  bool present_ = false;
  ValueType type_ = ValueType::kString;
  int64_t expire_at_ = 0;
  std::string string_;      // kString
  void* object_ = nullptr;  // kHash, kFeature: owned
};

// Counters of one shard, read by INFO.
struct ShardStats {
  uint64_t expired_keys = 0;      // removed by lazy or active expiry
  uint64_t keyspace_hits = 0;
  uint64_t keyspace_misses = 0;
};

// Where a shard logs the direct writes applied to it (the append-only
// file, server/aof.h). Kinds are aof::Kind. Appended by the thread that
// owns the store (or by whoever holds every shard, inside EXEC).
class WriteLog {
 public:
  virtual ~WriteLog() = default;
  virtual void Append(uint8_t kind, int64_t now_ms, std::span<const std::string_view> args) = 0;
};

class ShardStore {
 public:
  ShardStore() = default;

  // The log of this shard's direct writes; null when appendonly is off (and
  // while the log is replayed at start).
  WriteLog* write_log() const { return write_log_; }
  void set_write_log(WriteLog* l) { write_log_ = l; }

  size_t size() const { return table_.size(); }
  size_t expires_count() const { return expires_; }
  ShardStats& stats() { return stats_; }

  // Prefetching for a batch of lookups by hash, a few keys ahead of use:
  // stage 0 the bucket slot, stage 1 the chain's first record (its slot
  // must be cached by then), stage 2 an entity's block (the record too).
  void Prefetch(uint64_t hash, int stage) const {
    if (stage == 0) return table_.PrefetchBucket(hash);
    Record* r = table_.BucketHead(hash);
    if (r == nullptr) return;
    if (stage == 1) return PrefetchLine(r);
    if (r->type == ValueType::kFeature) PrefetchLine(r->object());
  }
  // The three stages over a batch: before using key k of n (hash_at(i) is
  // key i's hash), prefetches the slot 16 keys ahead, the record 8 ahead
  // and the block 4 ahead, so the misses of a batch overlap.
  template <class H>
  void PrefetchAhead(size_t k, size_t n, H&& hash_at) const {
    constexpr size_t kAhead = 16;
    if (k + kAhead < n) Prefetch(hash_at(k + kAhead), 0);
    if (k + kAhead / 2 < n) Prefetch(hash_at(k + kAhead / 2), 1);
    if (k + kAhead / 4 < n) Prefetch(hash_at(k + kAhead / 4), 2);
  }

  // The live record for key, or nullptr (an expired one is removed here).
  Record* Find(std::string_view key, uint64_t hash, int64_t now_ms);
  // Find + hit/miss accounting, for read commands.
  Record* Lookup(std::string_view key, uint64_t hash, int64_t now_ms);

  // Stores a string, replacing any value of any type. expire_at 0 = none.
  // Returns the record (valid until the next change to this store).
  Record* PutString(std::string_view key, uint64_t hash, std::string_view value, int64_t expire_at);
  // Returns the hash of key, creating it when absent; nullptr if the key
  // holds another type (WRONGTYPE).
  HashValue* GetOrCreateHash(std::string_view key, uint64_t hash, int64_t now_ms);
  // Returns the entity at key, creating it when absent; nullptr if the key
  // holds another type.
  EntityRecord* GetOrCreateEntity(std::string_view key, uint64_t hash, int64_t now_ms);
  // The same, returning the record (for UpdateEntityExpiry); nullptr on
  // WRONGTYPE. `expiring`: the event's view has a TTL, so a new record is
  // made with room for an expiry (a far-future one UpdateEntityExpiry
  // replaces in place) instead of being rebuilt around one right after.
  Record* GetOrCreateEntityRecord(std::string_view key, uint64_t hash, int64_t now_ms, bool expiring = false);
  // After an event changed the entity of `r` (from GetOrCreateEntityRecord,
  // no other mutation since): sets the key expiry from its views without a
  // second lookup when the record already carries an expiry.
  void UpdateEntityExpiry(Record* r, uint64_t hash, int64_t now_ms);
  // After an entity changed: removes it when empty, else sets the key's
  // expiry from its views (the view TTLs).
  void SyncEntity(std::string_view key, uint64_t hash, int64_t now_ms);
  size_t entities() const { return entities_; }
  // A live key picked at random, or nullptr when none was found (empty, or
  // only expired keys met in 100 tries: those are removed on the way).
  Record* RandomLive(const std::function<uint64_t()>& rnd, int64_t now_ms);
  // RENAME/COPY: Take removes a live key and returns its value (empty when
  // the key does not exist); Copy returns a deep copy of a record's value;
  // Put stores a value at key, replacing whatever is there. Expiries travel
  // with the value; entity state (views, tiles, TTL override) moves whole.
  DetachedValue Take(std::string_view key, uint64_t hash, int64_t now_ms);
  static DetachedValue Copy(const Record& r);
  void Put(std::string_view key, uint64_t hash, DetachedValue v);
  // Bytes a record takes with everything it owns (MEMORY USAGE).
  static size_t MemoryUsage(const Record& r);
  // Removes key; true if it existed (and was live).
  bool Erase(std::string_view key, uint64_t hash, int64_t now_ms);
  // Sets (at > 0) or clears (at == 0) the expiry of a live key; false if the
  // key does not exist. An `at` in the past deletes the key (as Redis does).
  bool SetExpire(std::string_view key, uint64_t hash, int64_t at, int64_t now_ms);
  void Clear();

  // Scan step over this shard: calls f(Record*) on live records; returns the
  // next cursor, 0 at the end.
  template <class F>
  uint64_t Scan(uint64_t cursor, int64_t now_ms, F&& f) {
    return table_.Scan(cursor, [&](Record* r) {
      if (!r->has_expiry() || r->expire_at() > now_ms) f(r);
    });
  }
  // Active expiry: visits buckets from where the last call stopped until
  // `max_buckets` were visited or the whole table was; removes the expired
  // records found, and trims entities (old tiles, expired views). Returns the number removed. Called on a timer with a
  // budget by the shard thread (see server/shard_set.cc).
  // `spare` (when set) keeps the keys it returns true for, whatever their
  // expiry (cluster mode: the keys of a partition being restored).
  size_t SweepExpired(int64_t now_ms, size_t max_buckets, const std::function<bool(std::string_view)>& spare = {});
  size_t bucket_count() const { return table_.bucket_count(); }
  // Moves hash table buckets of a resize under way for up to `micros` (the
  // cron, as Redis's incremental rehash); true while one is still under way.
  bool Rehash(int64_t micros) { return table_.RehashFor(micros); }

  // ---- Snapshots without fork (server/snapshot.cc drives them). The cut is
  // BeginSnapshot: every record that exists then is emitted exactly once, in
  // its state at that instant, either by SnapshotStep (table order, in
  // slices between requests) or by the first access after the cut that
  // could change it (BeforeWrite, called by every lookup and write here),
  // whichever comes first. Records created after the cut are not emitted.
  // A record's snap_epoch says whether the current snapshot has it.
  using SnapshotEmit = std::function<void(const Record&)>;
  void BeginSnapshot(SnapshotEmit emit, int64_t cut_ms);
  // Emits up to `max_records` more; true when the whole table is done.
  bool SnapshotStep(size_t max_records);
  // Emits everything left now (before a change to the whole store).
  void FinishSnapshot();
  void EndSnapshot();
  bool snapshotting() const { return static_cast<bool>(snap_emit_); }
  void BeforeWrite(Record* r) {
    if (snap_emit_ && r->snap_epoch != epoch_) Emit(r);
  }
  // Adds a record read from a snapshot (the key must be absent).
  void AdoptString(std::string_view key, uint64_t hash, std::string_view value, int64_t expire_at);
  void AdoptObject(std::string_view key, uint64_t hash, ValueType type, void* obj, int64_t expire_at);

 private:
  void Emit(Record* r);
  Record* Stamp(Record* r) {
    r->snap_epoch = epoch_;
    return r;
  }
  void Unlink(Record** link);
  KeyTable table_;
  WriteLog* write_log_ = nullptr;
  size_t expires_ = 0;   // live records with an expiry
  size_t entities_ = 0;  // records of type kFeature
  size_t sweep_cursor_ = 0;
  ShardStats stats_;
  SnapshotEmit snap_emit_;
  uint16_t epoch_ = 0;
  uint64_t snap_cursor_ = 0;
  bool snap_done_ = false;
  int64_t snap_cut_ms_ = 0;
};

}  // namespace fkv
