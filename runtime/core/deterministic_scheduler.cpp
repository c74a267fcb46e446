#include "deterministic_scheduler.hpp"

#include <algorithm>

#include "troupe/error.hpp"

namespace troupe::detail {

void DeterministicScheduler::schedule(std::shared_ptr<ActorCell> cell) noexcept {
  if (!queue_turn(cell)) parked_.park(std::move(cell));
}

bool DeterministicScheduler::queue_turn(std::shared_ptr<ActorCell>& cell) noexcept {
  if (refuse_turn_for_testing()) return false;
  try {
    std::lock_guard lk(mu_);
    queue_.emplace_back(cell);
  } catch (...) {  // no memory for the queue's next block
    return false;
  }
  cell.reset();
  return true;
}

bool DeterministicScheduler::retry_parked() noexcept {
  return parked_.retry([this](std::shared_ptr<ActorCell>& c) { return queue_turn(c); });
}

bool DeterministicScheduler::post(UniqueFunction<void()> f) {
  std::lock_guard lk(mu_);
  if (down_) return false;  // shut down: nothing would run it
  queue_.emplace_back(std::move(f));
  return true;
}

void DeterministicScheduler::shutdown() noexcept {
  // Drain what is queued so every accounted piece of work completes.
  while (step()) {
  }
  std::lock_guard lk(mu_);
  down_ = true;
}

void DeterministicScheduler::run(Item& item) {
  if (auto* cell = std::get_if<std::shared_ptr<ActorCell>>(&item)) {
    (*cell)->run_batch(batch_);
  } else {
    std::get<UniqueFunction<void()>>(item)();
  }
}

bool DeterministicScheduler::run_parked(ActorId id) noexcept {
  std::shared_ptr<ActorCell> cell;
  parked_.retry([&](std::shared_ptr<ActorCell>& c) {
    if (!cell && (id == 0 || c->id() == id)) {
      cell = std::move(c);
      return true;
    }
    return queue_turn(c);
  });
  if (!cell) return false;
  cell->run_batch(batch_);
  return true;
}

bool DeterministicScheduler::step() {
  if (!parked_.empty()) retry_parked();  // behind what is queued: parked turns came later
  Item item;
  {
    std::lock_guard lk(mu_);
    if (!queue_.empty()) {
      item = std::move(queue_.front());
      queue_.pop_front();
    }
  }
  if (item.index() == 0 && !std::get<0>(item)) {
    // Nothing queued, and what is parked still finds no room in the queue:
    // run the oldest parked turn here (running one needs no memory).
    return run_parked(0);
  }
  run(item);
  return true;
}

bool DeterministicScheduler::step_actor(ActorId id) {
  if (!parked_.empty()) retry_parked();
  Item item;
  {
    std::lock_guard lk(mu_);
    auto it = std::find_if(queue_.begin(), queue_.end(), [id](const Item& i) {
      auto* c = std::get_if<std::shared_ptr<ActorCell>>(&i);
      return c != nullptr && (*c)->id() == id;
    });
    if (it != queue_.end()) {
      item = std::move(*it);
      queue_.erase(it);
    }
  }
  if (item.index() == 0 && !std::get<0>(item)) return run_parked(id);  // parked, if anywhere
  run(item);
  return true;
}

std::size_t DeterministicScheduler::pending() const {
  std::lock_guard lk(mu_);
  return queue_.size() + parked_.size();
}

bool DeterministicScheduler::wait(StateBase& s, std::optional<Clock::time_point> deadline) {
  // A deadline is virtual time here: as far ahead of the virtual clock as it
  // is ahead of the real one. Timers past it do not fire, and the clock
  // stops there. (The real deadline bounds turns that keep making turns.)
  std::optional<Clock::time_point> until;
  if (deadline) {
    const auto now = Clock::now();  // (a deadline long past, time_point::min(), must not wrap)
    until = saturated_add(timers_.now(), *deadline <= now ? Clock::duration::zero() : *deadline - now);
  }
  std::size_t steps = 0;
  while (!s.ready()) {
    if (deadline && (++steps & 1023u) == 0 && Clock::now() >= *deadline) return false;
    if (step()) continue;
    const auto next = timers_.next_deadline();
    if (until && (!next || *next > *until)) {
      if (*until > timers_.now()) timers_.advance(*until - timers_.now());
      return s.ready();
    }
    if (next) {
      timers_.advance(*next - timers_.now());
      continue;
    }
    throw Error("troupe: deterministic scheduler has no work left and the future is not ready (deadlock)");
  }
  return true;
}

}  // namespace troupe::detail
