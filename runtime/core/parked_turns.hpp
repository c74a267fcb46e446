// ParkedTurns: actor turns a scheduler found no memory for, kept until it can
// take them. Scheduling is called where nothing may throw (a message pushed, a
// turn released), so a turn that cannot be queued is parked, never lost:
// lost, its cell would stay marked scheduled and its messages would never run.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <utility>

#include "troupe/detail/actor_cell.hpp"

namespace troupe::detail {

class ParkedTurns {
 public:
  ParkedTurns() = default;
  ParkedTurns(const ParkedTurns&) = delete;
  ParkedTurns& operator=(const ParkedTurns&) = delete;
  /// What is still parked is let go of (each cell holds itself while parked).
  ~ParkedTurns() {
    retry([](std::shared_ptr<ActorCell>& c) {
      c.reset();
      return true;
    });
  }
  /// Keeps the cell's turn (lock-free; links the cell itself: no allocation).
  void park(std::shared_ptr<ActorCell> cell) noexcept {
    ActorCell* c = cell.get();
    c->parked_self_ = std::move(cell);
    count_.fetch_add(1, std::memory_order_relaxed);
    c->parked_next_ = head_.load(std::memory_order_relaxed);
    while (!head_.compare_exchange_weak(c->parked_next_, c, std::memory_order_release, std::memory_order_relaxed)) {
    }
  }
  bool empty() const noexcept { return head_.load(std::memory_order_acquire) == nullptr; }
  std::size_t size() const noexcept { return count_.load(std::memory_order_relaxed); }
  /// Takes every parked turn out, oldest first, and offers each to `place`
  /// (bool(std::shared_ptr<ActorCell>&): true if it took the cell). What it
  /// does not take is parked again. Returns whether any is left parked.
  template <class Place>
  bool retry(Place&& place) noexcept {
    ActorCell* newest = head_.exchange(nullptr, std::memory_order_acquire);
    ActorCell* oldest = nullptr;  // reversed: turns are retried in the order they were parked
    while (newest != nullptr) {
      ActorCell* next = std::exchange(newest->parked_next_, oldest);
      oldest = std::exchange(newest, next);
    }
    bool left = false;
    while (oldest != nullptr) {
      ActorCell* next = std::exchange(oldest->parked_next_, nullptr);
      auto cell = std::move(oldest->parked_self_);
      count_.fetch_sub(1, std::memory_order_relaxed);
      if (!place(cell)) {
        park(std::move(cell));
        left = true;
      }
      oldest = next;
    }
    return left;
  }

 private:
  std::atomic<ActorCell*> head_{nullptr};
  std::atomic<std::size_t> count_{0};
};

}  // namespace troupe::detail
