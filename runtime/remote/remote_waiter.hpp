// RemoteNode::Waiter (internal to runtime/remote).
#pragma once

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
  explicit Waiter(RemoteNode& node) : node_(node) {}
  bool wait(StateBase& s, std::optional<Clock::time_point> deadline) override {
    unsigned idle = 0;
    struct Helping {
      Engine& e;
      explicit Helping(Engine& en) : e(en) { e.helper_enter(); }
      ~Helping() { e.helper_leave(); }
    } helping(*node_.engine_);
    while (!s.ready()) {
      if (deadline && Clock::now() >= *deadline) return s.ready();
      if (node_.closed_.load(std::memory_order_acquire)) return s.block(deadline);
      if (node_.engine_->progress()) {
        idle = 0;
        continue;
      }
      ++idle;
      if (idle < 128) {
#if defined(__x86_64__) || defined(__i386__)
        _mm_pause();
#endif
      } else if (idle < 256) {
        std::this_thread::yield();
      } else {
        // Long wait: hand the engine back to the progress thread and sleep.
        node_.engine_->helper_leave();
        auto until = Clock::now() + std::chrono::microseconds(500);
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
