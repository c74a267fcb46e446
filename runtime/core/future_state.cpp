#include "troupe/detail/future_state.hpp"

#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "troupe/detail/actor_cell.hpp"
#include "troupe/detail/core.hpp"
#include "troupe/error.hpp"
#include "scheduler.hpp"

namespace troupe::detail {

namespace {

thread_local const char* tls_no_blocking = nullptr;

void run_continuation(UniqueFunction<void()>& c) noexcept {
  try {
    c();
  } catch (...) {
    if (Core* core = current_core()) {
      core->on_unhandled(0, "a future's continuation", std::current_exception());
    } else {
      std::fprintf(stderr, "troupe: a future's continuation threw\n");
    }
  }
}

}  // namespace

NoBlockingHere::NoBlockingHere(const char* where) noexcept : prev_(tls_no_blocking) { tls_no_blocking = where; }
NoBlockingHere::~NoBlockingHere() { tls_no_blocking = prev_; }

void StateBase::on_ready(UniqueFunction<void()> f) {
  cont_ = std::move(f);
  std::uint32_t expected = kPending;
  if (!phase_.compare_exchange_strong(expected, kContinuation, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
    auto c = std::move(cont_);
    run_continuation(c);
  }
}

void StateBase::publish() {
  auto prev = phase_.exchange(kReady, std::memory_order_acq_rel);
  if (prev == kContinuation) {
    auto c = std::move(cont_);
    run_continuation(c);
  } else {
    phase_.notify_all();
  }
}

WaiterSlot* new_waiter_slot() {
  // Never destroyed, not even at exit: a runtime that a static object holds
  // may go after this function's statics would have (its Core empties its slot).
  static auto* mu = new std::mutex;
  static auto* slots = new std::deque<WaiterSlot>;  // elements never move
  std::lock_guard lk(*mu);
  return &slots->emplace_back(nullptr);
}

bool StateBase::wait(std::optional<Clock::time_point> deadline) {
  if (ready()) return true;
  if (waiter_ != nullptr) {
    // Its runtime's: empty once the runtime has gone (or for a runtime that
    // has no waiter), and then no other runtime's waiter is this state's.
    if (Waiter* w = waiter_->load(std::memory_order_acquire)) return w->wait(*this, deadline);
    return block(deadline);
  }
  // A future made without one (a ready-made future's then(), a default
  // Promise's): the runtime's, where the value can only come if the waiting
  // thread makes progress (a deterministic runtime runs turns only there).
  if (Core* core = current_core(); core != nullptr)
    if (Waiter* w = core->current_waiter()) return w->wait(*this, deadline);
  return block(deadline);
}

bool StateBase::block(std::optional<Clock::time_point> deadline) {
  auto pause = std::chrono::microseconds(1);
  while (true) {
    auto p = phase_.load(std::memory_order_acquire);
    if (p == kReady) return true;
    if (!deadline) {
      phase_.wait(p, std::memory_order_acquire);
      continue;
    }
    if (Clock::now() >= *deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

void check_blocking_allowed(const char* what) {
  if (tls_no_blocking != nullptr)
    throw Error(std::string("troupe: ") + what + " called on " + tls_no_blocking +
                "; it could wait for work that thread must do");
  if (current_cell() != nullptr)
    throw Error(std::string("troupe: ") + what +
                " called inside an actor; it would block the actor's thread (use co_await in a Task)");
  if (on_scheduler_worker())
    throw Error(std::string("troupe: ") + what +
                " called on a scheduler thread (a timer, monitor or then() callback); it could wait for work "
                "that thread must run");
}

}  // namespace troupe::detail
