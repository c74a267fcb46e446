#include "troupe/detail/fresh_memory.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace troupe::detail {

bool huge_pages_wanted() noexcept {
  // TROUPE_HUGE_PAGES=0: never ask for huge pages (blocks are still mapped in
  // one step), for systems where transparent huge pages do more harm than good.
  static const bool wanted = [] {
    const char* v = std::getenv("TROUPE_HUGE_PAGES");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return wanted;
}

void prepare_fresh_memory(void* p, std::size_t bytes) noexcept {
#if defined(__linux__)
  if (p == nullptr || bytes < kFreshMemoryFrom) return;
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  const auto end = begin + bytes;
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const std::uintptr_t pb = (begin + page - 1) & ~(page - 1);
  const std::uintptr_t pe = end & ~(page - 1);
  if (pe <= pb) return;
  // Memory the allocator hands out again (a heap it keeps) is mapped already:
  // leave it alone. Only new memory is worth the calls below; its middle page
  // tells (an allocator may have written its first bytes: a header, or the
  // fill pattern of a sanitizer's malloc).
  const std::uintptr_t mid = (begin + bytes / 2) & ~(page - 1);
  unsigned char there = 0;
  if (::mincore(reinterpret_cast<void*>(mid), page, &there) != 0 || (there & 1) != 0) return;
#if defined(MADV_HUGEPAGE)
  // Only whole huge pages inside the block: its neighbours are left alone.
  constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
  const std::uintptr_t hb = (begin + huge - 1) & ~(huge - 1);
  const std::uintptr_t he = end & ~(huge - 1);
  if (he > hb && huge_pages_wanted()) (void)::madvise(reinterpret_cast<void*>(hb), he - hb, MADV_HUGEPAGE);
#endif
#if defined(MADV_POPULATE_WRITE)
  // Linux 5.14 and later; an older kernel answers EINVAL and the first
  // writes fault the pages in as before.
  (void)::madvise(reinterpret_cast<void*>(pb), pe - pb, MADV_POPULATE_WRITE);
#endif
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace troupe::detail
