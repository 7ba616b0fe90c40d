// Memory figures of the allocator chosen at build time (jemalloc, mimalloc
// or the system's), for INFO memory and maxmemory. Thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace fkv {

struct AllocatorStats {
  uint64_t allocated = 0;  // bytes handed out to the program
  uint64_t resident = 0;   // bytes of RSS (from /proc)
  std::string name;        // "jemalloc-5.3.0", "mimalloc", "libc"
};

AllocatorStats ReadAllocatorStats();

}  // namespace fkv
