// Record: one key of a shard's table in a single allocation: chain link,
// header, optional expiry, key bytes, then the value (inline string bytes, or
// a pointer to a hash / entity object). Used by KeyTable and ShardStore only.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace fkv {

enum class ValueType : uint8_t { kString = 0, kHash = 1, kFeature = 2 };

class HashValue;
class EntityRecord;  // the feature entity type (entity.h)

struct Record {
  static constexpr uint8_t kHasExpiry = 1;
  static constexpr uint8_t kRawString = 2;  // changed in place by APPEND/SETRANGE (OBJECT ENCODING says raw, as Redis)

  Record* next;
  uint32_t key_len;
  ValueType type;
  uint8_t flags;
  uint16_t snap_epoch;  // the last snapshot that has this record (ShardStore)

  // Layout after the header: [int64 expire_at_ms if kHasExpiry] key value.
  bool has_expiry() const { return flags & kHasExpiry; }
  int64_t expire_at() const {
    if (!has_expiry()) return 0;
    int64_t v;
    std::memcpy(&v, tail(), sizeof v);
    return v;
  }
  void set_expire_at(int64_t v) {  // only when has_expiry()
    std::memcpy(tail(), &v, sizeof v);
  }
  std::string_view key() const { return {key_ptr(), key_len}; }

  // String values: [uint32 len][bytes].
  std::string_view string_value() const {
    uint32_t len;
    std::memcpy(&len, value_ptr(), sizeof len);
    return {value_ptr() + sizeof len, len};
  }
  char* mutable_string_data() { return value_ptr() + sizeof(uint32_t); }

  // Object values (hash, entity): an owning pointer.
  void* object() const {
    void* p;
    std::memcpy(&p, value_ptr(), sizeof p);
    return p;
  }
  void set_object(void* p) { std::memcpy(value_ptr(), &p, sizeof p); }
  HashValue* hash_value() const { return static_cast<HashValue*>(object()); }
  EntityRecord* entity() const { return static_cast<EntityRecord*>(object()); }

  static size_t AllocSize(size_t key_len, bool expiry, ValueType type, size_t value_len) {
    size_t v = type == ValueType::kString ? sizeof(uint32_t) + value_len : sizeof(void*);
    return sizeof(Record) + (expiry ? sizeof(int64_t) : 0) + key_len + v;
  }
  // Allocates a record. Strings copy `value`; objects take ownership of `obj`.
  static Record* NewString(std::string_view key, std::string_view value, int64_t expire_at);
  static Record* NewObject(std::string_view key, ValueType type, void* obj, int64_t expire_at);
  // Frees the record and the object it owns.
  static void Free(Record* r);
  // Frees the record only (ownership of the object was moved elsewhere).
  static void FreeShell(Record* r);
  size_t alloc_size() const;

 private:
  char* tail() const { return const_cast<char*>(reinterpret_cast<const char*>(this + 1)); }
  char* key_ptr() const { return tail() + (has_expiry() ? sizeof(int64_t) : 0); }
  char* value_ptr() const { return key_ptr() + key_len; }
};

static_assert(sizeof(Record) == 16, "Record header must stay 16 bytes");

}  // namespace fkv
