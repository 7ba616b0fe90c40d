// HashValue: the value of a Redis hash key (HSET/HGET...). Small hashes are a
// flat vector scanned linearly (cache friendly, little memory); past
// kMaxFlat fields they convert to an unordered_map. Owned by a Record.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fkv {

class HashValue {
 public:
  static constexpr size_t kMaxFlat = 64;

  size_t size() const { return map_.empty() ? flat_.size() : map_.size(); }
  // Returns the value or nullptr.
  const std::string* Get(std::string_view field) const;
  std::string* GetMutable(std::string_view field);
  // Returns true when the field was created (false: overwritten).
  bool Set(std::string_view field, std::string_view value);
  // Returns true when the field existed.
  bool Del(std::string_view field);
  template <class F>
  void ForEach(F&& f) const {
    if (map_.empty()) {
      for (const auto& [k, v] : flat_) f(k, v);
    } else {
      for (const auto& [k, v] : map_) f(k, v);
    }
  }
  size_t MemoryUsage() const;

 private:
  struct SvHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::vector<std::pair<std::string, std::string>> flat_;
  std::unordered_map<std::string, std::string, SvHash, std::equal_to<>> map_;
};

}  // namespace fkv
