// Deterministic execution for tests: one thread, explicit order, virtual time.
//
//   troupe::Runtime rt(troupe::testing::deterministic());
//   troupe::testing::Scheduler sched(rt);
//   ref.tell<&A::m>(1);
//   sched.step(ref);             // handle exactly that actor's next message
//   sched.advance(1s);           // fire timers due within one virtual second
//   sched.run();                 // run until nothing is queued
//
// Future::get() on such a runtime runs queued turns (and advances virtual time
// to the next timer) until the value is there.
#pragma once

#include <chrono>
#include <cstddef>
#include <limits>

#include "troupe/actor_ref.hpp"
#include "troupe/config.hpp"
#include "troupe/runtime.hpp"

namespace troupe {
namespace detail {
class DeterministicScheduler;
}

namespace testing {

/// A config for a deterministic runtime; batch 1 so each step is one message.
inline Config deterministic(Config base = {}) {
  base.scheduler = SchedulerKind::deterministic;
  base.batch = 1;
  return base;
}

class Scheduler {
 public:
  /// Throws troupe::Error unless rt was made with SchedulerKind::deterministic.
  explicit Scheduler(Runtime& rt);

  /// Runs the oldest queued turn (or task). False if nothing is queued.
  bool step();
  /// Runs the next turn of this actor, ahead of the others. False if it has none queued.
  template <class T>
  bool step(const ActorRef<T>& ref) {
    return step_actor(ref.id());
  }
  /// Runs turns until nothing is queued (or max turns ran). Returns turns run.
  std::size_t run(std::size_t max = std::numeric_limits<std::size_t>::max());
  /// Moves virtual time forward, firing due timers (their messages are queued,
  /// not yet handled). Returns how many timers fired.
  std::size_t advance(std::chrono::nanoseconds d);
  /// Queued turns and tasks.
  std::size_t pending() const;
  /// Virtual time since the runtime started.
  std::chrono::nanoseconds now() const;

 private:
  bool step_actor(ActorId id);
  detail::DeterministicScheduler* s_;
};

/// Fault injection: the next n attempts of this thread to queue an actor's
/// turn find no memory (as when oneTBB's allocation fails); a retry of a
/// parked turn on this thread is an attempt too. Each refused turn is parked
/// and runs once one can be queued: retried after the scheduler's next turn
/// or task, by the timer thread every millisecond, or, deterministic, at the
/// next step (which runs it itself if it still cannot be queued).
void fail_next_turns(int n) noexcept;

/// Fault injection: the next n tasks posted to any runtime of this process
/// (not actors' turns: the tasks a runtime runs beside them, such as a remote
/// spawn's constructor) find no memory, as when oneTBB's allocation fails.
/// Returns how many were still to fail from the call before.
int fail_next_posts(int n) noexcept;

/// Fault injection: the next n monitors added to actors of this process (by
/// Runtime::monitor, or for another node's watch) find no memory, as when the
/// actor's list of monitors cannot grow. Returns how many were still to fail
/// from the call before.
int fail_next_monitors(int n) noexcept;

/// Fault injection: the next n stops of actors of this process (ActorRef::stop
/// of a local actor, or another node's stop) find no memory for their stop
/// message. Returns how many were still to fail from the call before.
int fail_next_stops(int n) noexcept;

/// How long a step of the runtimes of this process that finds no memory is
/// tried again before it is given up (10 s unless set): a peer's frame waiting
/// to be received, a reply or exit notice owed to another node, a watch from
/// another node, a lost node's entries in a replicated map. Returns the one
/// before. For tests of what happens once a shortage outlasts it.
std::chrono::milliseconds set_memory_patience(std::chrono::milliseconds p) noexcept;

}  // namespace testing
}  // namespace troupe
