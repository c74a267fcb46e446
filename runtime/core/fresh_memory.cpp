#include "troupe/detail/fresh_memory.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "sanitizers.hpp"

namespace troupe::detail {
namespace {

/// True when the environment sets `name` to "0".
bool turned_off(const char* name) noexcept {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, "0") == 0;
}

constexpr std::uintptr_t kHugePage = std::uintptr_t{2} << 20;

/// [first, end) of the whole huge pages inside [p, p + bytes) (empty: end <= first).
std::pair<std::uintptr_t, std::uintptr_t> whole_huge_pages(const void* p, std::size_t bytes) noexcept {
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  return {(begin + kHugePage - 1) & ~(kHugePage - 1), (begin + bytes) & ~(kHugePage - 1)};
}

/// [first, end) of the huge pages that hold any byte of [p, p + bytes).
std::pair<std::uintptr_t, std::uintptr_t> huge_pages_holding(const void* p, std::size_t bytes) noexcept {
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  return {begin & ~(kHugePage - 1), (begin + bytes + kHugePage - 1) & ~(kHugePage - 1)};
}

}  // namespace

bool huge_pages_wanted() noexcept {
  // TROUPE_HUGE_PAGES=0: never ask for huge pages (blocks are still mapped in
  // one step), for systems where transparent huge pages do more harm than good.
  static const bool wanted = !turned_off("TROUPE_HUGE_PAGES");
  return wanted;
}

bool keep_freed_memory() noexcept {
  static const bool kept = [] {
    if (turned_off("TROUPE_KEEP_FREED_MEMORY")) return false;
#if defined(__GLIBC__) && !defined(TROUPE_ASAN) && !defined(TROUPE_TSAN)
    // By default glibc maps each block from 128 KiB on by itself and unmaps it
    // when freed, and gives the heap's free top back past 128 KiB (both
    // thresholds then rise with the blocks freed, the mapping one to 32 MiB at
    // most). A receiver that makes a new vector for each message then faults
    // in and zeroes fresh pages for every one. With the settings below, 16 MiB
    // vectors over TCP moved at 0.61-0.85 of raw MPI instead of 0.31-0.47
    // (docs/benchmarks.md). 32 MiB is the largest mapping threshold glibc
    // takes; blocks above it are prepared by prepare_fresh_memory instead.
    return ::mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && ::mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
#else
    return false;  // another allocator, or a sanitizer's: its own policy stands
#endif
  }();
  return kept;
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
  const auto [hb, he] = whole_huge_pages(p, bytes);
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

namespace {
std::atomic<std::uint64_t> g_sent_gathered{0};
std::atomic<std::uint64_t> g_pages_asked{0};
/// steady_clock ticks before which nothing is gathered (after a slow collapse).
std::atomic<std::int64_t> g_gather_resumes{0};
/// A page gathered slower than this pauses gathering (tests change it).
std::atomic<std::int64_t> g_slow_page_ns{1'000'000};
}  // namespace

void set_slow_gather_for_tests(std::chrono::nanoseconds slow_page, bool end_pause) noexcept {
  g_slow_page_ns.store(slow_page.count(), std::memory_order_relaxed);
  if (end_pause) g_gather_resumes.store(0, std::memory_order_relaxed);
}

std::uint64_t sent_bytes_gathered() noexcept { return g_sent_gathered.load(std::memory_order_relaxed); }
std::uint64_t sent_pages_asked() noexcept { return g_pages_asked.load(std::memory_order_relaxed); }

namespace {

/// Whether the system lets processes have transparent huge pages at all.
/// MADV_COLLAPSE works even when they are "never", but a site that sets that
/// (to keep the kernel's page work off its nodes, say) means it.
bool thp_not_forbidden() noexcept {
  static const bool allowed = [] {
    std::FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f == nullptr) return true;  // no such setting: the kernel refuses the call if it cannot
    char mode[128] = {};
    const std::size_t n = std::fread(mode, 1, sizeof mode - 1, f);
    std::fclose(f);
    mode[n] = '\0';
    return std::strstr(mode, "[never]") == nullptr;
  }();
  return allowed;
}

/// Huge pages this process gathered (or found huge) lately, by address,
/// direct-mapped: a page found here is not asked about again. Every call
/// costs the kernel's page work on other cores too (it drains their page
/// lists), once per page per message otherwise. An entry goes stale only if
/// its memory is unmapped and mapped again (a heap trimmed, then grown): that
/// page is then sent from small pages, no worse than without gathering.
constexpr std::size_t kKnownPages = 1024;
std::array<std::atomic<std::uintptr_t>, kKnownPages> g_known_huge{};

std::atomic<std::uintptr_t>& known_slot(std::uintptr_t page) noexcept {
  return g_known_huge[(page / kHugePage) % kKnownPages];
}

}  // namespace

void forget_gathered_pages_for_tests() noexcept {
  for (auto& slot : g_known_huge) slot.store(0, std::memory_order_relaxed);
}

void prepare_sent_memory(const void* p, std::size_t bytes, std::size_t allocated) noexcept {
#if defined(__linux__)
  // glibc's malloc maps a request on its own from its mmap threshold (32 MiB
  // at most, what keep_freed_memory sets), counted with its 8-byte header
  // rounded up to 16: such memory is new for every vector.
  constexpr std::size_t kMallocHeader = 32;
  if (p == nullptr || bytes < kFreshMemoryFrom || std::max(allocated, bytes) + kMallocHeader > kGatherUpTo ||
      !huge_pages_wanted() || !thp_not_forbidden())
    return;
  // Every huge page that holds part of the block, the two at its ends
  // included: a 1 MiB block holds no whole one, and a 4 MiB block's ends are a
  // quarter to a half of it. The bytes around the block in those pages are
  // copied with it, unchanged (malloc's neighbouring chunks): once, for
  // memory that malloc hands out again. An end page that reaches into another
  // mapping stays small: the kernel skips a huge page that two mappings
  // share (and answers success), and refuses one with a hole (ENOMEM).
  const auto [hb, he] = huge_pages_holding(p, bytes);
#if defined(MADV_COLLAPSE)
  constexpr int collapse = MADV_COLLAPSE;
#else
  constexpr int collapse = 25;  // Linux's number for it; C libraries older than the call lack the name
#endif
  // Whether the kernel has the call (6.1 and later), asked once with a zero
  // length: EINVAL from a real call may also mean memory that cannot take huge
  // pages (a file mapping, MADV_NOHUGEPAGE), which must not turn it off.
  static const bool supported = ::madvise(reinterpret_cast<void*>(hb), 0, collapse) == 0;
  if (!supported) return;
  using clock = std::chrono::steady_clock;
  // A page already huge (memory malloc hands out again after an earlier
  // gather) costs about a microsecond; a page copied, 0.5-0.75 ms. Some
  // pages take far longer: 5 ms each, for every page of a first process on
  // the development machine (a virtual one whose balloon reports free memory
  // to its host; the kernel counted no compaction), 0.74 ms in the same
  // program run again at once. That is slower than sending from the small
  // pages, so then nothing is gathered for a second. (Each call also holds
  // the process's memory map lock while it copies: page faults wait meanwhile.)
  const auto slow_page = std::chrono::nanoseconds(g_slow_page_ns.load(std::memory_order_relaxed));
  constexpr auto kPause = std::chrono::seconds(1);
  bool asked = false;
  clock::time_point now{};
  for (std::uintptr_t page = hb; page < he; page += kHugePage) {
    auto& known = known_slot(page);
    if (known.load(std::memory_order_relaxed) == page) {
      g_sent_gathered.fetch_add(kHugePage, std::memory_order_relaxed);
      continue;
    }
    if (!asked) {
      asked = true;
      now = clock::now();
      if (now.time_since_epoch().count() < g_gather_resumes.load(std::memory_order_relaxed)) return;
    }
    // Accepted (0): gathered, or huge already, or shared with another mapping
    // (left small). EAGAIN, ENOMEM, EINVAL: this page stays small.
    g_pages_asked.fetch_add(1, std::memory_order_relaxed);
    if (::madvise(reinterpret_cast<void*>(page), kHugePage, collapse) == 0) {
      g_sent_gathered.fetch_add(kHugePage, std::memory_order_relaxed);
      known.store(page, std::memory_order_relaxed);
    }
    const auto after = clock::now();
    if (after - now > slow_page) {
      g_gather_resumes.store((after + kPause).time_since_epoch().count(), std::memory_order_relaxed);
      return;
    }
    now = after;
  }
#else
  (void)p;
  (void)bytes;
  (void)allocated;
#endif
}

}  // namespace troupe::detail
