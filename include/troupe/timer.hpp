// Timer: handle of a delayed or periodic message.
#pragma once

#include <atomic>
#include <memory>

namespace troupe {

namespace detail {
class Core;
struct TimerControl {
  std::atomic<bool> cancelled{false};
  std::atomic<bool> done{false};  // fired (one-shot) or stopped
  Core* core = nullptr;
  bool one_shot = true;  // one-shot timers count as outstanding work until they fire
  /// The first of fire/cancel to call this wins.
  bool claim() noexcept { return !done.exchange(true, std::memory_order_acq_rel); }
};
void release_timer(TimerControl& c) noexcept;
}  // namespace detail

/// Destroying a Timer does not cancel it: a timer runs until it fires
/// (one-shot), its target exits (periodic), cancel() is called, or the runtime
/// finishes (periodic timers stop when finish() begins).
class Timer {
 public:
  Timer() = default;
  explicit Timer(std::shared_ptr<detail::TimerControl> c) : c_(std::move(c)) {}
  /// Stops future firings. Returns false if it had already fired or stopped.
  bool cancel() noexcept {
    if (!c_) return false;
    c_->cancelled.store(true, std::memory_order_release);
    if (!c_->claim()) return false;
    detail::release_timer(*c_);
    return true;
  }
  bool active() const noexcept { return c_ && !c_->done.load(std::memory_order_acquire); }

 private:
  std::shared_ptr<detail::TimerControl> c_;
};

}  // namespace troupe
