// Duration texts of the registry and config: 500ms, 30s, 5m, 1h, 7d (a bare
// number is seconds). Shared by ingest/registry and server/config.
#pragma once

#include <cstdint>
#include <string_view>

namespace fkv {

bool ParseDurationMs(std::string_view s, int64_t* out);

}  // namespace fkv
