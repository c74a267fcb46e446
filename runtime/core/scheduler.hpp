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
  virtual void schedule(std::shared_ptr<ActorCell> cell) = 0;
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

std::unique_ptr<Scheduler> make_tbb_scheduler(std::size_t threads, std::size_t batch,
                                              std::unique_ptr<ThreadPlacement> placement);

}  // namespace troupe::detail
