// The deterministic scheduler: one thread (the caller's), explicit order,
// virtual time. Turns run only when the test asks; Future::get() runs turns
// until its value is there, so driver-style tests work unchanged.
#pragma once

#include <deque>
#include <mutex>
#include <variant>

#include "parked_turns.hpp"
#include "scheduler.hpp"
#include "timer_service.hpp"

namespace troupe::detail {

class DeterministicScheduler final : public Scheduler, public Waiter {
 public:
  DeterministicScheduler(VirtualTimerService& timers, std::size_t batch) : timers_(timers), batch_(batch) {}

  void schedule(std::shared_ptr<ActorCell> cell) noexcept override;
  bool retry_parked() noexcept override;
  bool post(UniqueFunction<void()> f) override;
  Waiter* waiter() noexcept override { return this; }
  bool on_worker_thread() const noexcept override { return false; }
  std::size_t threads() const noexcept override { return 1; }
  void shutdown() noexcept override;

  bool wait(StateBase& s, std::optional<Clock::time_point> deadline) override;

  /// Runs the oldest queued turn or task; with none queued, the oldest
  /// parked turn. False if nothing is queued or parked.
  bool step();
  /// Runs the oldest queued turn of this actor, ahead of the others.
  bool step_actor(ActorId id);
  std::size_t pending() const;
  VirtualTimerService& timers() noexcept { return timers_; }

 private:
  using Item = std::variant<std::shared_ptr<ActorCell>, UniqueFunction<void()>>;
  void run(Item& item);
  /// Queues a turn of the cell (taken from `cell`); false, `cell` kept, if
  /// there was no memory for it.
  bool queue_turn(std::shared_ptr<ActorCell>& cell) noexcept;
  /// Runs the oldest parked turn (of actor `id`; 0: of any), queueing the
  /// others it can; false if none (of that actor) is parked.
  bool run_parked(ActorId id) noexcept;
  ParkedTurns parked_;  // turns that found no memory: queued at the next step
  mutable std::mutex mu_;
  std::deque<Item> queue_;
  VirtualTimerService& timers_;
  std::size_t batch_;
  bool down_ = false;
};

}  // namespace troupe::detail
