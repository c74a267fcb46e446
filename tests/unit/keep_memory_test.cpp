// Config::keep_freed_memory: a large block that is freed stays mapped in the
// allocator's heap, so the next one of its size reuses warm pages (a received
// std::vector no longer faults in and zero-fills fresh ones). Each case runs in
// a process of its own (tests/unit/CMakeLists.txt): malloc's thresholds are
// process-wide and move with what was freed before.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "troupe/detail/fresh_memory.hpp"
#include "troupe/runtime.hpp"

namespace {

constexpr std::size_t kBytes = std::size_t{16} << 20;

std::size_t page_size() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

/// The share of the pages under [p, p + bytes) that are resident (mincore
/// touches nothing).
double resident_share(void* p, std::size_t bytes) {
  const auto begin = reinterpret_cast<std::uintptr_t>(p) & ~(page_size() - 1);
  const std::size_t span = reinterpret_cast<std::uintptr_t>(p) + bytes - begin;
  std::vector<unsigned char> vec((span + page_size() - 1) / page_size());
  if (::mincore(reinterpret_cast<void*>(begin), span, vec.data()) != 0) return -1;
  std::size_t n = 0;
  for (unsigned char c : vec) n += c & 1;
  return static_cast<double>(n) / static_cast<double>(vec.size());
}

/// Frees a written 16 MiB block, then asks for one of the same size: the share
/// of the new block's pages that are resident before anything writes them.
double reused_warm() {
  auto* first = static_cast<char*>(std::malloc(kBytes));
  if (first == nullptr) return -1;
  std::memset(first, 1, kBytes);
  asm volatile("" : : "r"(first) : "memory");  // the writes happen (a store before free() may be dropped)
  std::free(first);
  auto* second = static_cast<char*>(std::malloc(kBytes));
  if (second == nullptr) return -1;
  const double share = resident_share(second, kBytes);
  std::free(second);
  return share;
}

bool sanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#else
  return false;
#endif
}

bool turned_off() {
  const char* v = std::getenv("TROUPE_KEEP_FREED_MEMORY");
  return v != nullptr && std::string(v) == "0";
}

}  // namespace

TEST(KeepFreedMemory, AFreedLargeBlockIsReusedWarm) {
  if (turned_off()) GTEST_SKIP() << "runs without TROUPE_KEEP_FREED_MEMORY=0";
  troupe::Runtime rt;  // the default Config keeps freed memory
  if (!troupe::detail::keep_freed_memory()) GTEST_SKIP() << "this allocator takes no such settings";
  EXPECT_EQ(reused_warm(), 1.0) << "every page of the second block was the first's, still mapped";
}

TEST(KeepFreedMemory, CanBeTurnedOff) {
  if (!turned_off()) GTEST_SKIP() << "runs with TROUPE_KEEP_FREED_MEMORY=0";
  if (sanitized()) GTEST_SKIP() << "a sanitizer's allocator has its own policy";
  troupe::Runtime rt;
  EXPECT_FALSE(troupe::detail::keep_freed_memory());
  // glibc's own policy: the first block was mapped alone and unmapped when
  // freed; the second comes from fresh pages.
  EXPECT_LT(reused_warm(), 0.5);
}
