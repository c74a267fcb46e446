// The future event list: a radix heap keyed by simulated time in nanoseconds.
// Simulated time never goes backwards (every event is scheduled at or after
// the one being handled), which is all a radix heap needs; push is O(1) and
// pop is amortised O(log of the time span), far cheaper than a binary heap
// with a million pending events. Events with equal times come out in an
// unspecified but deterministic order.
#pragma once

#include <array>
#include <cassert>
#include <cstdint>
#include <vector>

namespace fault_sim {

enum class EvKind : std::uint32_t {
  wake,     // a node's progress-thread tick (heartbeat due and/or timeout check)
  deliver,  // a message arrives at its destination
  crash,    // a node dies (the experiment's fault)
  stall,    // a node's progress thread is descheduled
  resume,   // ... and runs again
  poll,     // the node polls the launcher's process table (PMIx)
};

struct Event {
  std::uint64_t t;     // simulated time, ns
  EvKind kind;
  std::uint32_t node;  // the node the event happens at
  std::uint32_t aux;   // wake: generation; deliver: message slot
};

class EventQueue {
 public:
  void push(const Event& e) {
    assert(e.t >= last_);
    buckets_[bucket_of(e.t)].push_back(e);
    ++size_;
  }

  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }

  Event pop() {
    assert(size_ > 0);
    if (buckets_[0].empty()) {
      std::size_t i = 1;
      while (buckets_[i].empty()) ++i;
      auto& b = buckets_[i];
      std::uint64_t m = b[0].t;
      for (const Event& e : b)
        if (e.t < m) m = e.t;
      last_ = m;
      for (const Event& e : b) buckets_[bucket_of(e.t)].push_back(e);
      b.clear();
    }
    Event e = buckets_[0].back();
    buckets_[0].pop_back();
    --size_;
    return e;
  }

 private:
  std::size_t bucket_of(std::uint64_t t) const {
    return t == last_ ? 0 : static_cast<std::size_t>(64 - __builtin_clzll(t ^ last_));
  }

  std::array<std::vector<Event>, 65> buckets_;
  std::uint64_t last_ = 0;
  std::size_t size_ = 0;
};

}  // namespace fault_sim
