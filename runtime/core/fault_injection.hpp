// Fault injection for tests (troupe/testing.hpp): process-wide counts of
// attempts that must find no memory, each taken where the real allocation
// would fail, so that the code around it takes its out-of-memory path.
#pragma once

#include <atomic>

namespace troupe::detail {

class FaultBudget {
 public:
  /// Whether this attempt must fail (one fewer is then left).
  bool take() noexcept {
    int n = left_.load(std::memory_order_relaxed);
    while (n > 0 && !left_.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
    }
    return n > 0;
  }
  /// How many attempts fail from now on. Returns how many were still left.
  int set(int n) noexcept { return left_.exchange(n, std::memory_order_relaxed); }

 private:
  std::atomic<int> left_{0};
};

/// Core::post's tasks (testing::fail_next_posts).
extern FaultBudget g_failing_posts;
/// ActorCell::add_monitor (testing::fail_next_monitors).
extern FaultBudget g_failing_monitors;
/// ActorCell::request_stop (testing::fail_next_stops).
extern FaultBudget g_failing_stops;

}  // namespace troupe::detail
