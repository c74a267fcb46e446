// Scheduler: runs actor turns and posted tasks. Two implementations: the oneTBB
// work-stealing arena (tbb_scheduler) and the deterministic test scheduler.
#pragma once

#include <cstddef>
#include <memory>

#include "troupe/detail/actor_cell.hpp"
#include "troupe/detail/future_state.hpp"
#include "troupe/detail/unique_function.hpp"

namespace troupe::detail {

/// Where worker threads go: implemented in runtime/topology with hwloc.
class ThreadPlacement {
 public:
  virtual ~ThreadPlacement() = default;
  /// Called on a worker thread when it joins the arena, with its slot index.
  virtual void on_thread_start(std::size_t slot) noexcept = 0;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  /// Runs one turn of the cell (a bounded batch). The cell stays alive meanwhile.
  /// Never throws (it is called where nothing may: a message pushed, a turn
  /// released): a turn it finds no memory for is parked (ParkedTurns) and
  /// queued once there is some.
  virtual void schedule(std::shared_ptr<ActorCell> cell) noexcept = 0;
  /// Queues the turns parked for want of memory; true if some are still
  /// parked. A scheduler retries after each turn or task it runs; the runtime
  /// also calls this while turns stay parked (set_park_notice).
  virtual bool retry_parked() noexcept { return false; }
  /// What to call when a turn is parked (it must not allocate or throw): the
  /// runtime wakes a thread that retries them, in case no turn or task runs.
  virtual void set_park_notice(UniqueFunction<void()> notice) { (void)notice; }
  /// Runs f once, on a worker. False if the scheduler was shut down: f is
  /// dropped, not run (a caller that waits for f must stop waiting).
  virtual bool post(UniqueFunction<void()> f) = 0;
  /// The waiter futures of this runtime use while a thread blocks on them.
  virtual Waiter* waiter() noexcept { return nullptr; }
  /// True if the calling thread is one of this scheduler's workers.
  virtual bool on_worker_thread() const noexcept = 0;
  virtual std::size_t threads() const noexcept = 0;
  /// Blocks until every queued turn and task has run; then no new work may come.
  virtual void shutdown() noexcept = 0;
};

/// True on a worker thread of any runtime's oneTBB scheduler.
bool on_scheduler_worker() noexcept;

/// Fault injection (troupe::testing::fail_next_turns): whether the calling
/// thread's next attempt to queue a turn (a retry too) must be refused as if
/// no memory were left.
bool refuse_turn_for_testing() noexcept;
void refuse_turns_for_testing(int n) noexcept;

std::unique_ptr<Scheduler> make_tbb_scheduler(std::size_t threads, std::size_t batch,
                                              std::unique_ptr<ThreadPlacement> placement);

}  // namespace troupe::detail
