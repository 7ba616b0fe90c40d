// ShardStore: see shard_store.h.
#include "storage/shard_store.h"

#include <stdexcept>

#include "storage/snapshot.h"

namespace fkv {

void DestroyEntity(EntityRecord* e);  // storage/entity.cc

void ShardStore::Unlink(Record** link) {
  Record* r = table_.RemoveAt(link);
  if (r->has_expiry()) expires_--;
  if (r->type == ValueType::kFeature) entities_--;
  Record::Free(r);
}

Record* ShardStore::Find(std::string_view key, uint64_t hash, int64_t now_ms) {
  Record** link = table_.FindLink(key, hash);
  Record* r = *link;
  if (r != nullptr) BeforeWrite(r);  // the caller may change it
  if (r != nullptr && r->has_expiry() && r->expire_at() <= now_ms) {
    Unlink(link);
    stats_.expired_keys++;
    return nullptr;
  }
  return r;
}

DetachedValue& DetachedValue::operator=(DetachedValue&& o) noexcept {
  if (this == &o) return *this;
  Reset();
  present_ = o.present_;
  type_ = o.type_;
  expire_at_ = o.expire_at_;
  string_ = std::move(o.string_);
  object_ = o.object_;
  o.object_ = nullptr;
  o.present_ = false;
  return *this;
}

void DetachedValue::Reset() {
  if (object_ != nullptr) {
    if (type_ == ValueType::kHash) delete static_cast<HashValue*>(object_);
    else DestroyEntity(static_cast<EntityRecord*>(object_));
  }
  object_ = nullptr;
  present_ = false;
}

DetachedValue ShardStore::Take(std::string_view key, uint64_t hash, int64_t now_ms) {
  DetachedValue v;
  Record** link = table_.FindLink(key, hash);
  Record* r = *link;
  if (r == nullptr) return v;
  BeforeWrite(r);
  if (r->has_expiry() && r->expire_at() <= now_ms) {
    Unlink(link);
    stats_.expired_keys++;
    return v;
  }
  v.present_ = true;
  v.type_ = r->type;
  v.expire_at_ = r->expire_at();
  if (r->type == ValueType::kString) v.string_.assign(r->string_value());
  else v.object_ = r->object();
  table_.RemoveAt(link);
  if (r->has_expiry()) expires_--;
  if (r->type == ValueType::kFeature) entities_--;
  Record::FreeShell(r);  // the object now belongs to v
  table_.MaybeShrink();
  return v;
}

DetachedValue ShardStore::Copy(const Record& r) {
  DetachedValue v;
  v.present_ = true;
  v.type_ = r.type;
  v.expire_at_ = r.expire_at();
  switch (r.type) {
    case ValueType::kString: v.string_.assign(r.string_value()); break;
    case ValueType::kHash: v.object_ = new HashValue(*r.hash_value()); break;
    case ValueType::kFeature: v.object_ = r.entity()->Clone(); break;
  }
  return v;
}

void ShardStore::Put(std::string_view key, uint64_t hash, DetachedValue v) {
  if (v.empty()) return;
  Record** link = table_.FindLink(key, hash);
  if (*link != nullptr) {
    BeforeWrite(*link);
    Unlink(link);
  }
  if (v.type_ == ValueType::kString) {
    AdoptString(key, hash, v.string_, v.expire_at_);
  } else {
    AdoptObject(key, hash, v.type_, v.object_, v.expire_at_);
    v.object_ = nullptr;
  }
  v.present_ = false;
}

size_t ShardStore::MemoryUsage(const Record& r) {
  size_t n = r.alloc_size();
  if (r.type == ValueType::kHash) n += r.hash_value()->MemoryUsage();
  if (r.type == ValueType::kFeature) n += r.entity()->MemoryUsage();
  return n;
}

Record* ShardStore::RandomLive(const std::function<uint64_t()>& rnd, int64_t now_ms) {
  for (int attempt = 0; attempt < 100; attempt++) {
    Record* r = table_.Random(rnd);
    if (r == nullptr) return nullptr;
    if (!r->has_expiry() || r->expire_at() > now_ms) return r;
    std::string key(r->key());
    Find(key, HashKey(key), now_ms);  // removes the expired key, as a lookup would
  }
  return nullptr;
}

Record* ShardStore::Lookup(std::string_view key, uint64_t hash, int64_t now_ms) {
  Record* r = Find(key, hash, now_ms);
  if (r != nullptr) stats_.keyspace_hits++;
  else stats_.keyspace_misses++;
  return r;
}

Record* ShardStore::PutString(std::string_view key, uint64_t hash, std::string_view value, int64_t expire_at) {
  Record** link = table_.FindLink(key, hash);
  Record* old = *link;
  if (old != nullptr) BeforeWrite(old);
  if (old != nullptr && old->type == ValueType::kString && old->string_value().size() == value.size() &&
      old->has_expiry() == (expire_at != 0)) {
    // Same shape: overwrite in place, no allocation.
    std::memcpy(old->mutable_string_data(), value.data(), value.size());
    if (expire_at != 0) old->set_expire_at(expire_at);
    old->flags &= static_cast<uint8_t>(~Record::kRawString);  // a new value, no longer "changed in place"
    return old;
  }
  Record* r = Stamp(Record::NewString(key, value, expire_at));
  if (expire_at != 0) expires_++;
  if (old != nullptr) {
    table_.ReplaceAt(link, r);
    if (old->has_expiry()) expires_--;
    if (old->type == ValueType::kFeature) entities_--;
    Record::Free(old);
  } else {
    table_.Insert(r, hash);
  }
  return r;
}

HashValue* ShardStore::GetOrCreateHash(std::string_view key, uint64_t hash, int64_t now_ms) {
  Record* r = Find(key, hash, now_ms);
  if (r != nullptr) return r->type == ValueType::kHash ? r->hash_value() : nullptr;
  auto* h = new HashValue();
  table_.Insert(Stamp(Record::NewObject(key, ValueType::kHash, h, 0)), hash);
  return h;
}

bool ShardStore::Erase(std::string_view key, uint64_t hash, int64_t now_ms) {
  Record** link = table_.FindLink(key, hash);
  Record* r = *link;
  if (r == nullptr) return false;
  BeforeWrite(r);
  bool live = !(r->has_expiry() && r->expire_at() <= now_ms);
  if (!live) stats_.expired_keys++;
  Unlink(link);
  table_.MaybeShrink();
  return live;
}

bool ShardStore::SetExpire(std::string_view key, uint64_t hash, int64_t at, int64_t now_ms) {
  Record** link = table_.FindLink(key, hash);
  Record* r = *link;
  if (r == nullptr) return false;
  BeforeWrite(r);
  if (r->has_expiry() && r->expire_at() <= now_ms) {  // already expired: gone, as Find would say
    Unlink(link);
    stats_.expired_keys++;
    return false;
  }
  if (at != 0 && at <= now_ms) {
    Unlink(link);
    table_.MaybeShrink();
    return true;
  }
  if (r->has_expiry() == (at != 0)) {
    if (at != 0) r->set_expire_at(at);
    return true;
  }
  // The expiry field appears or disappears: rebuild the record around the
  // same value (objects are moved, not copied).
  Record* nr = Stamp(r->type == ValueType::kString ? Record::NewString(r->key(), r->string_value(), at)
                                                   : Record::NewObject(r->key(), r->type, r->object(), at));
  nr->flags |= r->flags & Record::kRawString;
  table_.ReplaceAt(link, nr);
  if (at != 0) expires_++;
  else expires_--;
  Record::FreeShell(r);
  return true;
}

Record* ShardStore::GetOrCreateEntityRecord(std::string_view key, uint64_t hash, int64_t now_ms, bool expiring) {
  Record* r = Find(key, hash, now_ms);
  if (r != nullptr) return r->type == ValueType::kFeature ? r : nullptr;
  EntityRecord* e = EntityRecord::New();
  // The placeholder is far in the future (2^60 ms) but inside what a
  // snapshot could hold, should one ever see it.
  const int64_t at = expiring ? int64_t{1} << 60 : 0;
  r = Stamp(Record::NewObject(key, ValueType::kFeature, e, at));
  table_.Insert(r, hash);
  entities_++;
  if (at != 0) expires_++;
  return r;
}

EntityRecord* ShardStore::GetOrCreateEntity(std::string_view key, uint64_t hash, int64_t now_ms) {
  Record* r = GetOrCreateEntityRecord(key, hash, now_ms);
  return r ? r->entity() : nullptr;
}

void ShardStore::UpdateEntityExpiry(Record* r, uint64_t hash, int64_t now_ms) {
  int64_t at = r->entity()->ExpireAt();
  if (r->has_expiry() && at > now_ms) {
    r->set_expire_at(at);  // the common case: in place, no lookup
    return;
  }
  if (at == r->expire_at() && !r->entity()->empty()) return;
  SyncEntity(r->key(), hash, now_ms);
}

void ShardStore::SyncEntity(std::string_view key, uint64_t hash, int64_t now_ms) {
  Record** link = table_.FindLink(key, hash);
  Record* r = *link;
  if (r == nullptr || r->type != ValueType::kFeature) return;
  BeforeWrite(r);
  if (r->entity()->empty()) {
    Unlink(link);
    table_.MaybeShrink();
    return;
  }
  if (r->entity()->ttl_override()) return;  // EXPIRE/PERSIST rule until the next event
  int64_t at = r->entity()->ExpireAt();
  if (at != r->expire_at()) SetExpire(key, hash, at, now_ms);
}

void ShardStore::Clear() {
  FinishSnapshot();
  table_.Clear();
  entities_ = 0;
  expires_ = 0;
  sweep_cursor_ = 0;
}

size_t ShardStore::SweepExpired(int64_t now_ms, size_t max_buckets, const std::function<bool(std::string_view)>& spare) {
  if (expires_ == 0 && entities_ == 0) return 0;
  size_t removed = 0;
  size_t n = table_.bucket_count();
  if (max_buckets > n) max_buckets = n;
  for (size_t i = 0; i < max_buckets; i++) {
    if (sweep_cursor_ >= table_.bucket_count()) sweep_cursor_ = 0;
    removed += table_.SweepBucket(sweep_cursor_++, [&](Record* r) {
      if (spare && spare(r->key())) return false;
      BeforeWrite(r);
      bool remove = r->has_expiry() && r->expire_at() <= now_ms;
      if (!remove && r->type == ValueType::kFeature) {
        EntityRecord* e = r->entity();
        remove = EntityTrim(&e, now_ms);
        r->set_object(e);
      }
      if (remove) {
        if (r->has_expiry()) expires_--;
        if (r->type == ValueType::kFeature) entities_--;
      }
      return remove;
    });
  }
  stats_.expired_keys += removed;
  if (removed > 0) table_.MaybeShrink();
  return removed;
}

void ShardStore::Emit(Record* r) {
  r->snap_epoch = epoch_;
  // Expired at the cut: not part of the snapshot.
  if (!r->has_expiry() || r->expire_at() > snap_cut_ms_) snap_emit_(*r);
}

void ShardStore::BeginSnapshot(SnapshotEmit emit, int64_t cut_ms) {
  snap_emit_ = std::move(emit);
  snap_cut_ms_ = cut_ms;
  snap_cursor_ = 0;
  snap_done_ = false;
  // Every record now carries an older epoch (records are stamped with the
  // current one when created); wrapping is harmless because every record is
  // re-stamped by each snapshot, so none is ever 65,535 snapshots behind.
  epoch_ = static_cast<uint16_t>(epoch_ + 1);
  if (epoch_ == 0) epoch_ = 1;
}

bool ShardStore::SnapshotStep(size_t max_records) {
  if (!snap_emit_ || snap_done_) return true;
  size_t seen = 0;
  do {
    snap_cursor_ = table_.Scan(snap_cursor_, [&](Record* r) {
      seen++;
      BeforeWrite(r);
    });
    if (snap_cursor_ == 0) snap_done_ = true;
  } while (!snap_done_ && seen < max_records);
  return snap_done_;
}

void ShardStore::FinishSnapshot() {
  while (snap_emit_ && !SnapshotStep(SIZE_MAX)) {
  }
}

void ShardStore::EndSnapshot() { snap_emit_ = nullptr; }

void ShardStore::AdoptString(std::string_view key, uint64_t hash, std::string_view value, int64_t expire_at) {
  table_.Insert(Stamp(Record::NewString(key, value, expire_at)), hash);
  if (expire_at != 0) expires_++;
}

void ShardStore::AdoptObject(std::string_view key, uint64_t hash, ValueType type, void* obj, int64_t expire_at) {
  table_.Insert(Stamp(Record::NewObject(key, type, obj, expire_at)), hash);
  if (expire_at != 0) expires_++;
  if (type == ValueType::kFeature) entities_++;
}

}  // namespace fkv
