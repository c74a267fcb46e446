// Which sanitizer this translation unit is built with (GCC names it with
// __SANITIZE_*__, clang with __has_feature).
#pragma once

#if defined(__SANITIZE_THREAD__)
#define TROUPE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TROUPE_TSAN 1
#endif
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TROUPE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TROUPE_ASAN 1
#endif
#endif

#if defined(TROUPE_TSAN)
extern "C" void __tsan_mutex_destroy(void* addr, unsigned flags);
#endif

namespace troupe::detail {

/// Tells TSan these mutexes are gone. A std::mutex tells nobody when it goes
/// (libstdc++ never calls pthread_mutex_destroy), so a mutex made later at
/// the same address (on a stack) would be taken for it, lock order and all:
/// false lock-order inversions between objects that never lived together.
/// For an object with several mutexes, as its destructor ends.
template <class... M>
inline void tsan_forget_mutexes([[maybe_unused]] M&... m) noexcept {
#if defined(TROUPE_TSAN)
  (__tsan_mutex_destroy(&m, 0), ...);
#endif
}

}  // namespace troupe::detail
