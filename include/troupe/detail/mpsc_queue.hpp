// Intrusive multi-producer single-consumer queue (D. Vyukov's algorithm).
// push() is wait-free; pop() may return nullptr while a producer is between its
// two steps: owners keep an atomic count of pushes to know work is coming.
#pragma once

#include <atomic>

namespace troupe::detail {

struct MpscNode {
  std::atomic<MpscNode*> mpsc_next{nullptr};
};

class MpscQueue {
 public:
  MpscQueue() noexcept : head_(&stub_), tail_(&stub_) {}
  MpscQueue(const MpscQueue&) = delete;
  MpscQueue& operator=(const MpscQueue&) = delete;

  void push(MpscNode* n) noexcept {
    n->mpsc_next.store(nullptr, std::memory_order_relaxed);
    MpscNode* prev = head_.exchange(n, std::memory_order_acq_rel);
    prev->mpsc_next.store(n, std::memory_order_release);
  }

  // Consumer only.
  MpscNode* pop() noexcept {
    MpscNode* tail = tail_;
    MpscNode* next = tail->mpsc_next.load(std::memory_order_acquire);
    if (tail == &stub_) {
      if (next == nullptr) return nullptr;
      tail_ = next;
      tail = next;
      next = next->mpsc_next.load(std::memory_order_acquire);
    }
    if (next != nullptr) {
      tail_ = next;
      return tail;
    }
    if (tail != head_.load(std::memory_order_acquire)) return nullptr;  // push in progress
    push(&stub_);
    next = tail->mpsc_next.load(std::memory_order_acquire);
    if (next != nullptr) {
      tail_ = next;
      return tail;
    }
    return nullptr;
  }

 private:
  std::atomic<MpscNode*> head_;
  MpscNode* tail_;
  MpscNode stub_;
};

}  // namespace troupe::detail
