// Redis-style glob matching (* ? [abc] [^a-z] \x) for KEYS, SCAN MATCH,
// HSCAN MATCH and CONFIG GET: the semantics of Redis's stringmatchlen, in
// worst-case O(pattern x key) time (docs/architecture.md, "Glob matching").
// A GlobPattern is compiled once per command and then matched against many
// keys; it is immutable after construction, so any thread may use it.
#pragma once

#include <bitset>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace fkv {

class GlobPattern {
 public:
  explicit GlobPattern(std::string_view pattern, bool nocase = false);

  // True when `str` matches. `steps`, when given, is increased by the number
  // of steps taken (at most (len(str) + 1) x (tokens + 2)): tests bound it.
  bool Match(std::string_view str, uint64_t* steps = nullptr) const;
  size_t tokens() const { return tokens_.size(); }

 private:
  struct Token {
    bool star = false;
    std::bitset<256> chars;  // the bytes a one-character token accepts
  };
  std::vector<Token> tokens_;  // consecutive stars are collapsed into one
};

// One-shot convenience: GlobPattern(pattern, nocase).Match(str).
bool GlobMatch(std::string_view pattern, std::string_view str, bool nocase = false);

}  // namespace fkv
