// RemoteNode::Waiter (internal to runtime/remote).
#pragma once

#include <algorithm>
#include <chrono>
#include <optional>
#include <thread>

#include "remote_node.hpp"
#include "transport/engine.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace troupe::detail {

// Futures of a cluster runtime: a blocked thread drives the engine itself, so a
// reply is picked up without waiting for the progress thread.
class RemoteNode::Waiter final : public detail::Waiter {
 public:
  /// How long a waiter keeps polling (yielding between polls) before it sleeps.
  static constexpr auto kPoliteSpin = std::chrono::milliseconds(2);
  explicit Waiter(RemoteNode& node) : node_(node) {}
  bool wait(StateBase& s, std::optional<Clock::time_point> deadline) override {
    unsigned idle = 0;
    const auto started = Clock::now();
    bool sleepy = false;  // polled for kPoliteSpin already: sleep between polls from now on
    std::chrono::microseconds nap{500};
    struct Helping {
      Engine& e;
      explicit Helping(Engine& en) : e(en) { e.helper_enter(); }
      ~Helping() { e.helper_leave(); }
    } helping(*node_.engine_);
    while (!s.ready()) {
      if (deadline && Clock::now() >= *deadline) return s.ready();
      if (node_.closed_.load(std::memory_order_acquire)) return s.block(deadline);
      if (node_.engine_->helper_progress()) {
        idle = 0;
        continue;
      }
      ++idle;
      if (idle < 128) {
#if defined(__x86_64__) || defined(__i386__)
        _mm_pause();
#endif
      } else if (!sleepy && (idle % 16 != 0 || !(sleepy = Clock::now() - started >= kPoliteSpin))) {
        // Yielding: another thread that needs this core gets it, and the reply
        // is still seen at once. A large transfer's reply takes a millisecond or
        // two; blocking sooner cost a wake-up (hundreds of microseconds, the
        // progress thread backing off meanwhile) per reply: measured, 1 MiB
        // messages moved at 0.6 of raw MPI's rate.
        std::this_thread::yield();
      } else {
        // Long wait: hand the engine back to the progress thread (it completes
        // the future and wakes us) and sleep, longer each time up to 8 ms: each
        // wake-up costs a context switch, which on a virtual machine is dear
        // (measured: 500 us naps kept a waiting rank 18 % busy).
        node_.engine_->helper_stop();
        auto until = Clock::now() + nap;
        nap = std::min(nap * 2, std::chrono::microseconds(8000));
        if (deadline && *deadline < until) until = *deadline;
        s.block(until);
        node_.engine_->helper_enter();
      }
    }
    return true;
  }

 private:
  RemoteNode& node_;
};

}  // namespace troupe::detail
