// Redis-style glob matching (* ? [abc] [^a-z] \x) for KEYS, SCAN MATCH and
// CONFIG GET. Same semantics as Redis's stringmatchlen.
#pragma once

#include <string_view>

namespace fkv {

bool GlobMatch(std::string_view pattern, std::string_view str, bool nocase = false);

}  // namespace fkv
