// Record allocation: see record.h.
#include "storage/record.h"

#include <cstdlib>
#include <new>

#include "storage/hash_value.h"

namespace fkv {

void DestroyEntity(EntityRecord* e);  // storage/entity.cc

namespace {
Record* Alloc(std::string_view key, ValueType type, size_t value_len, int64_t expire_at) {
  size_t sz = Record::AllocSize(key.size(), expire_at != 0, type, value_len);
  auto* r = static_cast<Record*>(std::malloc(sz));
  if (r == nullptr) throw std::bad_alloc();
  r->next = nullptr;
  r->key_len = static_cast<uint32_t>(key.size());
  r->type = type;
  r->flags = expire_at != 0 ? Record::kHasExpiry : 0;
  r->snap_epoch = 0;
  if (expire_at != 0) r->set_expire_at(expire_at);
  std::memcpy(const_cast<char*>(r->key().data()), key.data(), key.size());
  return r;
}
}  // namespace

Record* Record::NewString(std::string_view key, std::string_view value, int64_t expire_at) {
  Record* r = Alloc(key, ValueType::kString, value.size(), expire_at);
  uint32_t len = static_cast<uint32_t>(value.size());
  std::memcpy(r->value_ptr(), &len, sizeof len);
  if (!value.empty()) std::memcpy(r->value_ptr() + sizeof len, value.data(), value.size());
  return r;
}

Record* Record::NewObject(std::string_view key, ValueType type, void* obj, int64_t expire_at) {
  Record* r = Alloc(key, type, 0, expire_at);
  std::memcpy(r->value_ptr(), &obj, sizeof obj);
  return r;
}

void Record::Free(Record* r) {
  switch (r->type) {
    case ValueType::kString: break;
    case ValueType::kHash: delete r->hash_value(); break;
    case ValueType::kFeature: DestroyEntity(r->entity()); break;
  }
  std::free(r);
}

void Record::FreeShell(Record* r) { std::free(r); }

size_t Record::alloc_size() const {
  return AllocSize(key_len, has_expiry(), type, type == ValueType::kString ? string_value().size() : 0);
}

}  // namespace fkv
