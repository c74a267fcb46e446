// The test binary's global operator new and delete (replaceable, [new.delete]):
// malloc and free, with one allocation of a chosen thread failing on demand.
#include "mpi/failing_new.hpp"

#include <cstdlib>
#include <new>

namespace {
thread_local long t_left = -1;  // allocations of this thread before the failing one; -1: none fails
thread_local bool t_failed = false;
thread_local bool t_all = false;  // every one from then on fails
thread_local std::size_t t_large = 0;  // fail_large_allocations: from this size on
thread_local long t_large_left = 0;    // how many more

bool fail_now(std::size_t n) noexcept {
  if (t_large_left > 0 && n >= t_large) {
    --t_large_left;
    t_failed = true;
    return true;
  }
  if (t_left < 0) return false;
  if (t_left != 0) {
    --t_left;
    return false;
  }
  t_failed = true;
  if (!t_all) t_left = -1;
  return true;
}
void* take(std::size_t n) noexcept { return std::malloc(n == 0 ? 1 : n); }
void* take_aligned(std::size_t n, std::align_val_t a) noexcept {
  void* p = nullptr;
  const auto align = static_cast<std::size_t>(a) < sizeof(void*) ? sizeof(void*) : static_cast<std::size_t>(a);
  return posix_memalign(&p, align, n == 0 ? 1 : n) == 0 ? p : nullptr;
}
}  // namespace

namespace tt {
void fail_allocation_after(long n) noexcept {
  t_failed = false;
  t_all = false;
  t_left = n;
}
void fail_allocations_from(long n) noexcept {
  fail_allocation_after(n);
  t_all = true;
}
void fail_large_allocations(std::size_t bytes, long count) noexcept {
  t_failed = false;
  t_large = bytes;
  t_large_left = count;
}
bool failed_yet() noexcept { return t_failed; }
bool stop_failing() noexcept {
  t_left = -1;
  t_all = false;
  t_large_left = 0;
  return t_failed;
}
}  // namespace tt

void* operator new(std::size_t n) {
  void* p = fail_now(n) ? nullptr : take(n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  void* p = fail_now(n) ? nullptr : take_aligned(n, a);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* operator new[](std::size_t n, std::align_val_t a) { return ::operator new(n, a); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return fail_now(n) ? nullptr : take(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return fail_now(n) ? nullptr : take(n); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return fail_now(n) ? nullptr : take_aligned(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return fail_now(n) ? nullptr : take_aligned(n, a);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
