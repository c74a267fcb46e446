#include "core/thread_name.hpp"

#include <cstring>

#if defined(__linux__)
#include <pthread.h>
#endif

namespace troupe::detail {

namespace {
#if defined(__linux__)
void set_name(pthread_t t, const char* name) noexcept {
  char cut[16];  // the kernel's limit, with the terminating zero
  std::strncpy(cut, name, sizeof cut - 1);
  cut[sizeof cut - 1] = '\0';
  pthread_setname_np(t, cut);
}
#endif
}  // namespace

void name_this_thread(const char* name) noexcept {
#if defined(__linux__)
  set_name(pthread_self(), name);
#else
  (void)name;
#endif
}

void name_thread(std::thread& t, const char* name) noexcept {
#if defined(__linux__)
  if (t.joinable()) set_name(t.native_handle(), name);
#else
  (void)t;
  (void)name;
#endif
}

std::string this_thread_name() {
#if defined(__linux__)
  char buf[16] = {};
  if (pthread_getname_np(pthread_self(), buf, sizeof buf) == 0) return buf;
#endif
  return {};
}

}  // namespace troupe::detail
