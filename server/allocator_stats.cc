// ReadAllocatorStats: see allocator_stats.h.
#include "server/allocator_stats.h"

#include <unistd.h>

#include <cstdio>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
// From the ASan / TSan runtime (sanitizer/allocator_interface.h, which g++'s
// packages do not install).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#elif defined(FKV_ALLOC_JEMALLOC)
#include <jemalloc/jemalloc.h>
#elif defined(FKV_ALLOC_MIMALLOC)
#include <mimalloc.h>
#else
#include <malloc.h>
#endif

namespace fkv {

namespace {
uint64_t ResidentBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0, rss = 0;
  int n = std::fscanf(f, "%lu %lu", &size, &rss);
  std::fclose(f);
  return n == 2 ? static_cast<uint64_t>(rss) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
}
}  // namespace

AllocatorStats ReadAllocatorStats() {
  AllocatorStats s;
  s.resident = ResidentBytes();
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // The sanitizer replaces malloc: ask its allocator (mallinfo2 would say 0).
  s.allocated = __sanitizer_get_current_allocated_bytes();
#if defined(__SANITIZE_THREAD__)
  s.name = "tsan";
#else
  s.name = "asan";
#endif
#elif defined(FKV_ALLOC_JEMALLOC)
  uint64_t epoch = 1;
  size_t sz = sizeof(epoch);
  mallctl("epoch", &epoch, &sz, &epoch, sz);
  size_t allocated = 0;
  sz = sizeof(allocated);
  if (mallctl("stats.allocated", &allocated, &sz, nullptr, 0) == 0) s.allocated = allocated;
  const char* ver = nullptr;
  sz = sizeof(ver);
  s.name = "jemalloc";
  if (mallctl("version", &ver, &sz, nullptr, 0) == 0 && ver != nullptr) s.name = std::string("jemalloc-") + ver;
#elif defined(FKV_ALLOC_MIMALLOC)
  size_t elapsed, user, sys, rss, peak_rss, commit, peak_commit, faults;
  mi_process_info(&elapsed, &user, &sys, &rss, &peak_rss, &commit, &peak_commit, &faults);
  s.allocated = commit;  // mimalloc has no cheap "allocated" figure; committed is the closest
  s.name = "mimalloc-" + std::to_string(mi_version());
#else
  struct mallinfo2 mi = mallinfo2();
  s.allocated = mi.uordblks + mi.hblkhd;
  s.name = "libc";
#endif
  return s;
}

}  // namespace fkv
