#include "troupe/clock.hpp"

#include <algorithm>
#include <ctime>

namespace troupe {
namespace {

// Every envelope reads the clock: the coarse real-time clock (the kernel's tick,
// a few ms, read without touching the TSC) costs a few ns instead of ~25. The
// logical counter orders events within a tick, as it does within a millisecond.
std::uint64_t wall_ms() noexcept {
  timespec ts{};
#ifdef CLOCK_REALTIME_COARSE
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
#else
  clock_gettime(CLOCK_REALTIME, &ts);
#endif
  const auto ms = static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1'000'000;
  return ms & ((std::uint64_t{1} << 48) - 1);
}

constexpr std::uint64_t kMaxPhysical = (std::uint64_t{1} << 48) - 1;

std::uint64_t pack(std::uint64_t l, std::uint64_t c) noexcept { return (l << 16) | (c & 0xffff); }

/// The next timestamp after (l, c) when the counter is full: a millisecond
/// borrowed, or, at the very end of the 48-bit range (a remote clock that
/// merged in an absurd value), the last timestamp there is. Never a wrap to 0.
std::uint64_t after_full(std::uint64_t l) noexcept { return l < kMaxPhysical ? pack(l + 1, 0) : pack(kMaxPhysical, 0xffff); }

}  // namespace

HlcTimestamp HybridClock::now() noexcept {
  const std::uint64_t pt = wall_ms();
  std::uint64_t cur = state_.load(std::memory_order_relaxed);
  while (true) {
    const std::uint64_t l = cur >> 16, c = cur & 0xffff;
    // The counter saturating (65536 events in one millisecond) borrows a millisecond.
    const std::uint64_t next = pt > l ? pack(pt, 0) : (c == 0xffff ? after_full(l) : pack(l, c + 1));
    if (state_.compare_exchange_weak(cur, next, std::memory_order_acq_rel)) return HlcTimestamp{next};
  }
}

HlcTimestamp HybridClock::merge(HlcTimestamp remote) noexcept {
  const std::uint64_t pt = wall_ms();
  const std::uint64_t rl = remote.raw >> 16, rc = remote.raw & 0xffff;
  std::uint64_t cur = state_.load(std::memory_order_relaxed);
  while (true) {
    const std::uint64_t l = cur >> 16, c = cur & 0xffff;
    const std::uint64_t nl = std::max({l, rl, pt});
    std::uint64_t nc;
    if (nl == l && nl == rl) nc = std::max(c, rc) + 1;
    else if (nl == l) nc = c + 1;
    else if (nl == rl) nc = rc + 1;
    else nc = 0;
    const std::uint64_t next = nc > 0xffff ? after_full(nl) : pack(nl, nc);
    if (state_.compare_exchange_weak(cur, next, std::memory_order_acq_rel)) return HlcTimestamp{next};
  }
}

}  // namespace troupe
