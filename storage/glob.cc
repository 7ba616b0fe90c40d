// GlobPattern: see glob.h and docs/architecture.md, "Glob matching".
//
// The pattern is compiled into tokens: a star, or a set of the bytes one
// character may be. Every non-star token consumes exactly one character, so
// only the most recent star ever needs to be retried: on a mismatch, that
// star takes one more character and matching resumes right after it. This
// is the classic wildcard algorithm; it never backtracks further, so the
// work is bounded by (key length + 1) x (tokens + 2), where the recursive
// matcher it replaces was exponential in the number of stars.
#include "storage/glob.h"

#include <cctype>

namespace fkv {

namespace {
int Lower(int c) { return c >= 0 ? std::tolower(c) : c; }

// The bytes accepted by the class whose body starts at p[i] (just after '['
// and an optional '^'); sets *end to the index just past the class. Parsing
// follows Redis's stringmatchlen: an escape, then ']', then the end of the
// pattern (an unterminated class ends there), then a range "x-y" (taken
// whenever three characters remain, even "x-]"), then a literal.
std::bitset<256> ParseClass(std::string_view p, size_t i, bool negate, bool nocase, size_t* end) {
  struct Item {
    enum { kEscaped, kRange, kLiteral } kind;
    unsigned char a, b;
  };
  std::vector<Item> items;
  size_t e = p.size();
  while (true) {
    if (i < e && p[i] == '\\' && e - i >= 2) {
      i++;
      items.push_back({Item::kEscaped, static_cast<unsigned char>(p[i]), 0});
    } else if (i < e && p[i] == ']') {
      break;
    } else if (i >= e) {
      i = e - 1;  // unterminated: the class ends with the pattern
      break;
    } else if (e - i >= 3 && p[i + 1] == '-') {
      items.push_back({Item::kRange, static_cast<unsigned char>(p[i]), static_cast<unsigned char>(p[i + 2])});
      i += 2;
    } else {
      items.push_back({Item::kLiteral, static_cast<unsigned char>(p[i]), 0});
    }
    i++;
  }
  *end = i + 1;
  std::bitset<256> set;
  for (int c = 0; c < 256; c++) {
    bool match = false;
    for (const Item& it : items) {
      switch (it.kind) {
        case Item::kEscaped: match |= c == it.a; break;  // Redis compares escaped class members exactly
        case Item::kRange: {
          // Redis compares ranges as (signed) chars: bytes >= 0x80 sort first.
          int lo = static_cast<signed char>(it.a), hi = static_cast<signed char>(it.b);
          int x = static_cast<signed char>(c);
          if (lo > hi) std::swap(lo, hi);
          if (nocase) lo = Lower(lo), hi = Lower(hi), x = Lower(x);
          match |= x >= lo && x <= hi;
          break;
        }
        case Item::kLiteral: match |= nocase ? Lower(c) == Lower(it.a) : c == it.a; break;
      }
    }
    set[static_cast<size_t>(c)] = match != negate;
  }
  return set;
}

std::bitset<256> Literal(unsigned char ch, bool nocase) {
  std::bitset<256> set;
  for (int c = 0; c < 256; c++) set[static_cast<size_t>(c)] = nocase ? Lower(c) == Lower(ch) : c == ch;
  return set;
}
}  // namespace

GlobPattern::GlobPattern(std::string_view p, bool nocase) {
  size_t i = 0;
  while (i < p.size()) {
    Token t;
    switch (p[i]) {
      case '*':
        if (!tokens_.empty() && tokens_.back().star) {
          i++;
          continue;
        }
        t.star = true;
        i++;
        break;
      case '?':
        t.chars.set();
        i++;
        break;
      case '[': {
        i++;
        bool negate = i < p.size() && p[i] == '^';
        if (negate) i++;
        t.chars = ParseClass(p, i, negate, nocase, &i);
        break;
      }
      case '\\':
        if (i + 1 < p.size()) i++;  // a trailing backslash is a literal one
        [[fallthrough]];
      default:
        t.chars = Literal(static_cast<unsigned char>(p[i]), nocase);
        i++;
        break;
    }
    tokens_.push_back(t);
  }
}

bool GlobPattern::Match(std::string_view str, uint64_t* steps) const {
  // As Redis: the empty string matches only the empty pattern (callers
  // treat a lone "*" as "everything" before matching).
  if (str.empty()) return tokens_.empty();
  const size_t n = str.size(), nt = tokens_.size();
  constexpr size_t kNone = static_cast<size_t>(-1);
  size_t s = 0, t = 0, star_t = kNone, star_s = 0;
  uint64_t count = 0;
  bool matched = false;
  while (true) {
    count++;
    if (s == n) {
      while (t < nt && tokens_[t].star) t++;
      matched = t == nt;
      break;
    }
    if (t < nt && tokens_[t].star) {
      if (t + 1 == nt) {  // a final star takes the rest
        matched = true;
        break;
      }
      star_t = t++;
      star_s = s;
      continue;
    }
    if (t < nt && tokens_[t].chars[static_cast<unsigned char>(str[s])]) {
      t++;
      s++;
      continue;
    }
    if (star_t == kNone) break;
    t = star_t + 1;  // the last star takes one more character
    s = ++star_s;
  }
  if (steps != nullptr) *steps += count;
  return matched;
}

bool GlobMatch(std::string_view pattern, std::string_view str, bool nocase) {
  return GlobPattern(pattern, nocase).Match(str);
}

}  // namespace fkv
