#include "troupe/testing.hpp"

#include "deterministic_scheduler.hpp"
#include "fault_injection.hpp"
#include "memory_patience.hpp"

namespace troupe::testing {

Scheduler::Scheduler(Runtime& rt) : s_(dynamic_cast<detail::DeterministicScheduler*>(&rt.core().scheduler())) {
  if (s_ == nullptr) throw Error("troupe::testing::Scheduler needs a runtime made with testing::deterministic()");
}

bool Scheduler::step() { return s_->step(); }
bool Scheduler::step_actor(ActorId id) { return s_->step_actor(id); }

std::size_t Scheduler::run(std::size_t max) {
  std::size_t n = 0;
  while (n < max && s_->step()) ++n;
  return n;
}

std::size_t Scheduler::advance(std::chrono::nanoseconds d) { return s_->timers().advance(d); }
std::size_t Scheduler::pending() const { return s_->pending(); }
std::chrono::nanoseconds Scheduler::now() const { return s_->timers().now().time_since_epoch(); }

void fail_next_turns(int n) noexcept { detail::refuse_turns_for_testing(n); }
int fail_next_posts(int n) noexcept { return detail::g_failing_posts.set(n); }
int fail_next_monitors(int n) noexcept { return detail::g_failing_monitors.set(n); }
int fail_next_stops(int n) noexcept { return detail::g_failing_stops.set(n); }

std::chrono::milliseconds set_memory_patience(std::chrono::milliseconds p) noexcept {
  return std::chrono::duration_cast<std::chrono::milliseconds>(detail::set_memory_patience(p));
}

}  // namespace troupe::testing
