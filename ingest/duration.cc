// ParseDurationMs: see duration.h.
#include "ingest/duration.h"

#include <cctype>
#include <charconv>
#include <string>

namespace fkv {

bool ParseDurationMs(std::string_view s, int64_t* out) {
  std::string l(s);
  for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  int64_t mul = 1000;
  size_t cut = 0;
  auto ends = [&](std::string_view suf) { return l.size() > suf.size() && l.compare(l.size() - suf.size(), suf.size(), suf) == 0; };
  if (ends("ms")) mul = 1, cut = 2;
  else if (ends("s")) mul = 1000, cut = 1;
  else if (ends("m")) mul = 60'000, cut = 1;
  else if (ends("h")) mul = 3'600'000, cut = 1;
  else if (ends("d")) mul = 86'400'000, cut = 1;
  std::string_view num(l.data(), l.size() - cut);
  int64_t v = 0;
  if (num.empty()) return false;
  auto r = std::from_chars(num.data(), num.data() + num.size(), v);
  if (r.ec != std::errc() || r.ptr != num.data() + num.size() || v < 0) return false;
  if (v > INT64_MAX / mul) return false;
  *out = v * mul;
  return true;
}

}  // namespace fkv
