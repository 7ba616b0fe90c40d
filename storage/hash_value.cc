// HashValue: see hash_value.h.
#include "storage/hash_value.h"

namespace fkv {

const std::string* HashValue::Get(std::string_view field) const {
  if (map_.empty()) {
    for (const auto& [k, v] : flat_)
      if (k == field) return &v;
    return nullptr;
  }
  auto it = map_.find(field);
  return it == map_.end() ? nullptr : &it->second;
}

std::string* HashValue::GetMutable(std::string_view field) {
  return const_cast<std::string*>(static_cast<const HashValue*>(this)->Get(field));
}

bool HashValue::Set(std::string_view field, std::string_view value) {
  if (std::string* v = GetMutable(field)) {
    v->assign(value);
    return false;
  }
  if (map_.empty() && flat_.size() < kMaxFlat) {
    flat_.emplace_back(std::string(field), std::string(value));
    return true;
  }
  if (map_.empty()) {  // convert
    map_.reserve(flat_.size() * 2);
    for (auto& [k, v] : flat_) map_.emplace(std::move(k), std::move(v));
    flat_.clear();
    flat_.shrink_to_fit();
  }
  map_.emplace(std::string(field), std::string(value));
  return true;
}

bool HashValue::Del(std::string_view field) {
  if (map_.empty()) {
    for (size_t i = 0; i < flat_.size(); i++) {
      if (flat_[i].first == field) {
        flat_[i] = std::move(flat_.back());
        flat_.pop_back();
        return true;
      }
    }
    return false;
  }
  auto it = map_.find(field);
  if (it == map_.end()) return false;
  map_.erase(it);
  return true;
}

size_t HashValue::MemoryUsage() const {
  size_t n = sizeof(*this) + flat_.capacity() * sizeof(flat_[0]);
  ForEach([&](const std::string& k, const std::string& v) {
    if (k.capacity() > 15) n += k.capacity() + 1;
    if (v.capacity() > 15) n += v.capacity() + 1;
  });
  if (!map_.empty()) n += map_.size() * (sizeof(void*) * 2 + sizeof(std::pair<std::string, std::string>)) + map_.bucket_count() * sizeof(void*);
  return n;
}

}  // namespace fkv
