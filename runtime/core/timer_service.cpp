#include "timer_service.hpp"

#include "thread_name.hpp"
#include "troupe/detail/future_state.hpp"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace troupe::detail {

ThreadTimerService::ThreadTimerService() : thread_([this] { loop(); }) { name_thread(thread_, "troupe-timer"); }

ThreadTimerService::~ThreadTimerService() { shutdown(); }

void ThreadTimerService::add(Clock::time_point when, UniqueFunction<void()> fire) {
  std::lock_guard lk(mu_);
  if (stop_) return;
  bool earliest = queue_.empty() || when < queue_.begin()->first;
  queue_.emplace(when, std::move(fire));
  if (earliest) cv_.notify_one();
}

void ThreadTimerService::shutdown() noexcept {
  {
    std::lock_guard lk(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  std::lock_guard lk(mu_);
  queue_.clear();
}

void ThreadTimerService::poke() noexcept {
  {
    std::lock_guard lk(mu_);
    if (retry_due_) return;  // already due, at once or at its next round
    retry_due_ = true;
    retry_at_ = Clock::time_point::min();
  }
  cv_.notify_one();
}

void ThreadTimerService::loop() {
  // A periodic tick runs here; blocking on a future here could wait for a
  // one-shot timer this very thread must fire.
  const NoBlockingHere no_blocking("the timer thread (a periodic timer's tick)");
  std::unique_lock lk(mu_);
  while (!stop_) {
    const auto now = Clock::now();
    if (retry_due_ && now >= retry_at_) {
      retry_due_ = false;
      lk.unlock();
      const bool more = retry_ && retry_();
      lk.lock();
      if (more && !retry_due_) {
        retry_due_ = true;
        retry_at_ = Clock::now() + kRetryEvery;
      }
      continue;
    }
    if (queue_.empty() || now < queue_.begin()->first) {
      std::optional<Clock::time_point> wake;
      if (!queue_.empty()) wake = queue_.begin()->first;
      if (retry_due_ && (!wake || retry_at_ < *wake)) wake = retry_at_;
      if (wake) {
        cv_.wait_until(lk, *wake);
      } else {
        cv_.wait(lk);
      }
      continue;
    }
    auto fire = std::move(queue_.begin()->second);
    queue_.erase(queue_.begin());
    lk.unlock();
    try {
      fire();  // a user's periodic tick may throw: the timer thread goes on
    } catch (const std::exception& e) {
      std::fprintf(stderr, "troupe: a timer callback threw: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "troupe: a timer callback threw\n");
    }
    lk.lock();
  }
}

Clock::time_point VirtualTimerService::now() const {
  std::lock_guard lk(mu_);
  return now_;
}

void VirtualTimerService::add(Clock::time_point when, UniqueFunction<void()> fire) {
  std::lock_guard lk(mu_);
  queue_.emplace(when, std::move(fire));
}

void VirtualTimerService::shutdown() noexcept {
  std::lock_guard lk(mu_);
  queue_.clear();
}

std::size_t VirtualTimerService::advance(Clock::duration d) {
  std::unique_lock lk(mu_);
  const auto target = now_ + d;
  std::size_t fired = 0;
  while (!queue_.empty() && queue_.begin()->first <= target) {
    now_ = std::max(now_, queue_.begin()->first);
    auto fire = std::move(queue_.begin()->second);
    queue_.erase(queue_.begin());
    lk.unlock();
    fire();  // may add timers (periodic re-arm)
    ++fired;
    lk.lock();
  }
  now_ = std::max(now_, target);  // a tick's own wait may have moved it past the target
  return fired;
}

std::optional<Clock::time_point> VirtualTimerService::next_deadline() const {
  std::lock_guard lk(mu_);
  if (queue_.empty()) return std::nullopt;
  return queue_.begin()->first;
}

}  // namespace troupe::detail
