// GlobMatch: see glob.h.
#include "storage/glob.h"

#include <cctype>

namespace fkv {

namespace {
char Fold(char c, bool nocase) { return nocase ? static_cast<char>(std::tolower(static_cast<unsigned char>(c))) : c; }

bool Match(const char* p, const char* pe, const char* s, const char* se, bool nocase, int depth) {
  if (depth > 1000) return false;  // pathological patterns
  while (p < pe) {
    switch (*p) {
      case '*':
        while (p + 1 < pe && p[1] == '*') p++;
        if (p + 1 == pe) return true;
        for (const char* t = s; t <= se; t++)
          if (Match(p + 1, pe, t, se, nocase, depth + 1)) return true;
        return false;
      case '?':
        if (s == se) return false;
        s++;
        break;
      case '[': {
        if (s == se) return false;
        p++;
        bool negate = p < pe && *p == '^';
        if (negate) p++;
        bool matched = false;
        while (p < pe && *p != ']') {
          if (*p == '\\' && p + 1 < pe) {
            p++;
            if (Fold(*p, nocase) == Fold(*s, nocase)) matched = true;
          } else if (p + 2 < pe && p[1] == '-' && p[2] != ']') {
            char a = Fold(p[0], nocase), b = Fold(p[2], nocase), c = Fold(*s, nocase);
            if (a > b) std::swap(a, b);
            if (c >= a && c <= b) matched = true;
            p += 2;
          } else if (Fold(*p, nocase) == Fold(*s, nocase)) {
            matched = true;
          }
          p++;
        }
        if (p == pe) p--;  // unterminated class: Redis treats the end as ']'
        if (negate) matched = !matched;
        if (!matched) return false;
        s++;
        break;
      }
      case '\\':
        if (p + 1 < pe) p++;
        [[fallthrough]];
      default:
        if (s == se || Fold(*p, nocase) != Fold(*s, nocase)) return false;
        s++;
        break;
    }
    p++;
  }
  return s == se;
}
}  // namespace

bool GlobMatch(std::string_view pattern, std::string_view str, bool nocase) {
  return Match(pattern.data(), pattern.data() + pattern.size(), str.data(), str.data() + str.size(), nocase, 0);
}

}  // namespace fkv
