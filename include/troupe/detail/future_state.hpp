// Shared state behind Promise<T> / Future<T>: one value or error, one continuation.
#pragma once

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "troupe/detail/unique_function.hpp"

namespace troupe::detail {

struct Unit {};
template <class T> using Stored = std::conditional_t<std::is_void_v<T>, Unit, T>;

using Clock = std::chrono::steady_clock;

/// d as a Clock duration, saturated at the largest there is instead of
/// overflowing (milliseconds::max() means "for ever", not "already past").
template <class Rep, class Per>
constexpr Clock::duration saturated(std::chrono::duration<Rep, Per> d) noexcept {
  // Compared in a wide floating type: any count type (unsigned, narrow, floating) converts without wrapping.
  using Wide = std::chrono::duration<long double, Clock::period>;
  const Wide w(d);
  if (w >= Wide(Clock::duration::max())) return Clock::duration::max();
  if (w <= Wide(Clock::duration::min())) return Clock::duration::min();
  return std::chrono::duration_cast<Clock::duration>(d);
}
/// a + d, or the last (first) time point there is instead of overflowing.
inline Clock::time_point saturated_add(Clock::time_point a, Clock::duration d) noexcept {
  if (d > Clock::duration::zero() && a > Clock::time_point::max() - d) return Clock::time_point::max();
  if (d < Clock::duration::zero() && a < Clock::time_point::min() - d) return Clock::time_point::min();
  return a + d;
}
/// The deadline d from now; none for a wait as long as the clock can count.
template <class Rep, class Per>
std::optional<Clock::time_point> deadline_after(std::chrono::duration<Rep, Per> d) noexcept {
  const auto t = saturated_add(Clock::now(), saturated(d));
  if (t == Clock::time_point::max()) return std::nullopt;
  return t;
}

class StateBase;

/// Something that can make progress while a thread blocks on a future: the
/// deterministic scheduler runs actors, the MPI runtime drives its progress engine.
class Waiter {
 public:
  virtual ~Waiter() = default;
  /// Blocks until s is ready or the deadline passes. Returns s.ready().
  virtual bool wait(StateBase& s, std::optional<Clock::time_point> deadline) = 0;
};

/// Where a state finds its runtime's waiter: a slot of the runtime's that
/// outlives it (emptied as it goes), so that a future kept past its runtime
/// waits on its own instead of calling into a waiter that is gone.
using WaiterSlot = std::atomic<Waiter*>;
/// A new, empty slot; never freed (futures may outlive their runtime), kept
/// reachable. One per runtime.
WaiterSlot* new_waiter_slot();

class StateBase {
 public:
  explicit StateBase(WaiterSlot* w) noexcept : waiter_(w) {}
  StateBase(const StateBase&) = delete;
  StateBase& operator=(const StateBase&) = delete;
  virtual ~StateBase() = default;

  bool ready() const noexcept { return phase_.load(std::memory_order_acquire) == kReady; }
  bool has_error() const noexcept { return error_ != nullptr; }
  const std::exception_ptr& error() const noexcept { return error_; }
  WaiterSlot* waiter() const noexcept { return waiter_; }
  /// True the first time only: a state has one future (its one continuation
  /// and its one value are that future's).
  bool claim_future() noexcept { return !future_claimed_.exchange(true, std::memory_order_relaxed); }

  void set_error(std::exception_ptr e) {
    error_ = std::move(e);
    publish();
  }

  /// Runs f once the state is ready: at once (on this thread) if it already is,
  /// otherwise on the thread that makes it ready. At most one continuation.
  /// A continuation that throws is reported (Config::on_unhandled), not
  /// passed on: the thread that completes the state may be in a noexcept path.
  void on_ready(UniqueFunction<void()> f);

  /// Blocks the calling thread (helping its runtime's waiter if any).
  bool wait(std::optional<Clock::time_point> deadline = std::nullopt);

  /// Plain futex wait, used by waiters as their fallback.
  bool block(std::optional<Clock::time_point> deadline);

 protected:
  void publish();

 private:
  enum : std::uint32_t { kPending = 0, kContinuation = 1, kReady = 2 };
  std::atomic<std::uint32_t> phase_{kPending};
  std::atomic<bool> future_claimed_{false};
  std::exception_ptr error_;
  UniqueFunction<void()> cont_;
  WaiterSlot* waiter_;
};

template <class T>
class State final : public StateBase {
 public:
  using StateBase::StateBase;
  /// If making the value throws, the state completes with that error (its
  /// future does not wait for ever), and the exception goes on to the caller.
  template <class... A>
  void set_value(A&&... a) {
    try {
      value_.emplace(std::forward<A>(a)...);
    } catch (...) {
      set_error(std::current_exception());
      throw;
    }
    publish();
  }
  /// Precondition: ready(). Rethrows the stored error.
  Stored<T> take() {
    if (has_error()) std::rethrow_exception(error());
    return std::move(*value_);
  }

 private:
  std::optional<Stored<T>> value_;
};

/// How a suspending coroutine resumes: inside an actor, by a message to that
/// actor; elsewhere, inline. The message is made as the coroutine suspends,
/// where no memory throws into the coroutine: resuming it never allocates, so
/// a result that comes when memory has run out cannot leave it suspended.
class ResumeTarget {
 public:
  /// For the coroutine h, suspending now on this thread.
  static ResumeTarget here(std::coroutine_handle<> h);
  ResumeTarget(ResumeTarget&& o) noexcept : cell_(std::move(o.cell_)), p_(std::exchange(o.p_, nullptr)) {}
  ResumeTarget& operator=(ResumeTarget&&) = delete;
  ~ResumeTarget();
  /// Resumes the coroutine (queues its message, or resumes it here); once.
  void resume();

 private:
  ResumeTarget(std::shared_ptr<class ActorCell> cell, void* p) noexcept : cell_(std::move(cell)), p_(p) {}
  std::shared_ptr<class ActorCell> cell_;
  void* p_ = nullptr;  // with a cell, its resume message; without, the coroutine's address
};

/// Throws if called from inside an actor (blocking there would deadlock it),
/// on a scheduler thread, or where a NoBlockingHere scope is open.
void check_blocking_allowed(const char* what);

/// Marks the calling thread, for its lifetime, as one that must not block on a
/// future: `where` says what it runs (for the error). The timer thread, and a
/// thread delivering messages (the messages behind a reply wait for it).
class NoBlockingHere {
 public:
  explicit NoBlockingHere(const char* where) noexcept;
  ~NoBlockingHere();
  NoBlockingHere(const NoBlockingHere&) = delete;
  NoBlockingHere& operator=(const NoBlockingHere&) = delete;

 private:
  const char* prev_;
};

}  // namespace troupe::detail
