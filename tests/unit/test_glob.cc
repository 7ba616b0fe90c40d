// GlobPattern (storage/glob.h): Redis's stringmatchlen semantics, checked
// against a direct recursive reference on random short patterns, and a
// bound on the steps taken by adversarial patterns.
#include <doctest/doctest.h>

#include <random>
#include <string>

#include "storage/glob.h"

using fkv::GlobMatch;
using fkv::GlobPattern;

namespace {

// The reference: Redis 7's stringmatchlen written out recursively (no
// shortcut, exponential in the stars: for short inputs only).
int RefLower(int c) { return c >= 0 ? std::tolower(c) : c; }
bool Ref(const char* p, int plen, const char* s, int slen, bool nocase) {
  while (plen > 0 && slen > 0) {
    switch (p[0]) {
      case '*':
        while (plen > 1 && p[1] == '*') p++, plen--;
        if (plen == 1) return true;
        for (; slen > 0; s++, slen--)
          if (Ref(p + 1, plen - 1, s, slen, nocase)) return true;
        return false;
      case '?':
        s++, slen--;
        break;
      case '[': {
        p++, plen--;
        bool negate = plen > 0 && p[0] == '^';
        if (negate) p++, plen--;
        bool match = false;
        while (true) {
          if (plen >= 2 && p[0] == '\\') {
            p++, plen--;
            if (p[0] == s[0]) match = true;
          } else if (plen > 0 && p[0] == ']') {
            break;
          } else if (plen == 0) {
            p--, plen++;
            break;
          } else if (plen >= 3 && p[1] == '-') {
            int lo = p[0], hi = p[2], c = s[0];
            if (lo > hi) std::swap(lo, hi);
            if (nocase) lo = RefLower(lo), hi = RefLower(hi), c = RefLower(c);
            p += 2, plen -= 2;
            if (c >= lo && c <= hi) match = true;
          } else if (nocase ? RefLower(p[0]) == RefLower(s[0]) : p[0] == s[0]) {
            match = true;
          }
          p++, plen--;
        }
        if (negate) match = !match;
        if (!match) return false;
        s++, slen--;
        break;
      }
      case '\\':
        if (plen >= 2) p++, plen--;
        [[fallthrough]];
      default:
        if (nocase ? RefLower(p[0]) != RefLower(s[0]) : p[0] != s[0]) return false;
        s++, slen--;
        break;
    }
    p++, plen--;
    if (slen == 0) {
      while (plen > 0 && p[0] == '*') p++, plen--;
      break;
    }
  }
  return plen == 0 && slen == 0;
}
bool Ref(const std::string& p, const std::string& s, bool nocase = false) {
  return Ref(p.data(), static_cast<int>(p.size()), s.data(), static_cast<int>(s.size()), nocase);
}

}  // namespace

TEST_CASE("glob matching follows Redis's stringmatchlen") {
  CHECK(GlobMatch("user:*", "user:42"));
  CHECK_FALSE(GlobMatch("user:*", "product:1"));
  CHECK(GlobMatch("h?llo", "hello"));
  CHECK(GlobMatch("h[ae]llo", "hallo"));
  CHECK_FALSE(GlobMatch("h[^e]llo", "hello"));
  CHECK(GlobMatch("h[a-b]llo", "hbllo"));
  CHECK(GlobMatch("h[b-a]llo", "hallo"));  // reversed range
  CHECK(GlobMatch("h\\*llo", "h*llo"));
  CHECK_FALSE(GlobMatch("h\\*llo", "hello"));
  CHECK(GlobMatch("MAX*", "maxclients", true));
  CHECK_FALSE(GlobMatch("MAX*", "maxclients"));
  CHECK(GlobMatch("a[bc", "ab"));   // unterminated class ends with the pattern
  CHECK(GlobMatch("a[^", "ax"));    // "[^" accepts any one character
  CHECK_FALSE(GlobMatch("a[", "ax"));
  CHECK(GlobMatch("a\\", "a\\"));   // trailing backslash is literal
  CHECK(GlobMatch("[\\]]", "]"));
  CHECK(GlobMatch("a**", "a"));
  CHECK_FALSE(GlobMatch("*", ""));  // as Redis: only the empty pattern matches the empty key
  CHECK(GlobMatch("", ""));
  CHECK(GlobPattern("***").tokens() == 1);
  CHECK_FALSE(GlobMatch("a*b*c*d*e*f*g*h*i*j*k*l*m*n*o*p*q*r*s*t*u*v*w*x*y*z*1", std::string(200, 'a')));
}

TEST_CASE("glob matching equals the reference on random short patterns and keys") {
  std::mt19937 rng(20261201);
  const std::string pat_alphabet = "ab*?[]^-\\\x80\xff";
  const std::string key_alphabet = "abAB-]^\\*?\x80\xff";
  auto pick = [&](const std::string& alpha, size_t max_len) {
    std::string s(std::uniform_int_distribution<size_t>(0, max_len)(rng), ' ');
    for (char& c : s) c = alpha[std::uniform_int_distribution<size_t>(0, alpha.size() - 1)(rng)];
    return s;
  };
  int matches = 0;
  for (int i = 0; i < 200000; i++) {
    std::string p = pick(pat_alphabet, 8), k = pick(key_alphabet, 8);
    bool nocase = (i & 1) != 0;
    bool want = Ref(p, k, nocase);
    matches += want ? 1 : 0;
    if (GlobPattern(p, nocase).Match(k) != want) {
      INFO("pattern=", p, " key=", k, " nocase=", nocase);
      CHECK(GlobPattern(p, nocase).Match(k) == want);
      break;
    }
  }
  CHECK(matches > 1000);  // the generator reaches both outcomes
}

TEST_CASE("adversarial patterns finish within (len+1) x (tokens+2) steps") {
  struct Case {
    std::string pattern, key;
  };
  std::string stars20;
  for (int i = 0; i < 20; i++) stars20 += "a*";
  std::string nested;
  for (int i = 0; i < 500; i++) nested += "*?";
  std::string classes;
  for (int i = 0; i < 300; i++) classes += "*[a-c]";
  std::string escapes;
  for (int i = 0; i < 300; i++) escapes += "*\\a";
  std::vector<Case> cases = {
      {stars20 + "b", std::string(40, 'a')},                         // the KEYS denial of service
      {std::string(1000, '*') + "b", std::string(100000, 'a')},
      {nested + "b", std::string(5000, 'a')},
      {classes + "d", std::string(5000, 'a')},
      {escapes + "b", std::string(5000, 'a')},
      {"*" + std::string(3000, 'a') + "b", std::string(6000, 'a')},  // the worst case: O(n x m)
  };
  for (const Case& c : cases) {
    GlobPattern g(c.pattern);
    uint64_t steps = 0;
    CHECK_FALSE(g.Match(c.key, &steps));
    uint64_t bound = (c.key.size() + 1) * (g.tokens() + 2);
    INFO("pattern length ", c.pattern.size(), " key length ", c.key.size());
    CHECK(steps <= bound);
  }
  // The 40-character key of the report: a linear number of steps.
  uint64_t steps = 0;
  CHECK_FALSE(GlobPattern(stars20 + "b").Match(std::string(40, 'a'), &steps));
  CHECK(steps < 200);
}
