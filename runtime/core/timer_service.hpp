// TimerService: fires callbacks at deadlines. A thread with a sleeping wait for
// real time, or a virtual clock that tests advance by hand.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "troupe/detail/future_state.hpp"
#include "troupe/detail/unique_function.hpp"

namespace troupe::detail {

class TimerService {
 public:
  virtual ~TimerService() = default;
  virtual Clock::time_point now() const = 0;
  /// fire runs once at (or after) when, on the timer thread (keep it short).
  virtual void add(Clock::time_point when, UniqueFunction<void()> fire) = 0;
  virtual void shutdown() noexcept = 0;
};

/// One thread sleeping until the earliest deadline. Idle, it costs nothing.
class ThreadTimerService final : public TimerService {
 public:
  ThreadTimerService();
  ~ThreadTimerService() override;
  Clock::time_point now() const override { return Clock::now(); }
  void add(Clock::time_point when, UniqueFunction<void()> fire) override;
  void shutdown() noexcept override;
  /// What this thread retries once poked, then every kRetryEvery while it
  /// returns true: work that found no memory elsewhere (the scheduler's parked
  /// turns). Set before anything can poke.
  void set_retry(UniqueFunction<bool()> retry) { retry_ = std::move(retry); }
  /// Starts the retries. Never allocates: it runs where memory ran out.
  void poke() noexcept;
  static constexpr auto kRetryEvery = std::chrono::milliseconds(1);

 private:
  void loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<Clock::time_point, UniqueFunction<void()>> queue_;
  UniqueFunction<bool()> retry_;
  bool retry_due_ = false;
  Clock::time_point retry_at_{};
  bool stop_ = false;
  std::thread thread_;
};

/// Virtual time: nothing fires until advance() moves the clock past a deadline.
class VirtualTimerService final : public TimerService {
 public:
  Clock::time_point now() const override;
  void add(Clock::time_point when, UniqueFunction<void()> fire) override;
  void shutdown() noexcept override;
  /// Fires every timer due at or before now()+d, in deadline order, moving the
  /// clock to each deadline in turn. Returns how many fired.
  std::size_t advance(Clock::duration d);
  /// The earliest pending deadline, if any.
  std::optional<Clock::time_point> next_deadline() const;

 private:
  mutable std::mutex mu_;
  Clock::time_point now_{};
  std::multimap<Clock::time_point, UniqueFunction<void()>> queue_;
};

}  // namespace troupe::detail
