// Test helpers: whether this kernel gathers pages onto huge ones on request,
// and the gathering threshold set for one test.
#pragma once

#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <cstring>

#include "troupe/detail/fresh_memory.hpp"

namespace test_support {

/// Whether `pages` huge pages can be gathered now (MADV_COLLAPSE, Linux 6.1+,
/// transparent huge pages not off, that many free).
inline bool kernel_collapses(std::size_t pages = 1) {
  constexpr std::size_t huge = std::size_t{2} << 20;
  const std::size_t bytes = pages * huge;
  void* raw = ::mmap(nullptr, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return false;
  auto* p = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(raw) + huge - 1) & ~(huge - 1));
  std::memset(p, 1, bytes);
  const bool ok = ::madvise(p, bytes, 25 /* MADV_COLLAPSE */) == 0;
  ::munmap(raw, bytes + huge);
  return ok;
}

/// For one test: a gathered page slower than `slow` pauses gathering (the
/// runtime's 1 ms again afterwards, whatever the test's assertions did), and
/// no page is remembered as gathered from before (a test's new mappings may
/// lie where an earlier test's were).
struct SlowGatherThreshold {
  explicit SlowGatherThreshold(std::chrono::nanoseconds slow) {
    troupe::detail::set_slow_gather_for_tests(slow);
    troupe::detail::forget_gathered_pages_for_tests();
  }
  ~SlowGatherThreshold() { troupe::detail::set_slow_gather_for_tests(std::chrono::milliseconds(1)); }
  SlowGatherThreshold(const SlowGatherThreshold&) = delete;
  SlowGatherThreshold& operator=(const SlowGatherThreshold&) = delete;
};

}  // namespace test_support
