// Storage of received std::vector arguments, kept for the next message.
//
// A std::vector<double> that arrives from another node needs memory of its
// own: the receiver allocates it, value-initialises (zero-fills) every element,
// and only then can MPI write the data into it. For large vectors that is one
// or two passes over memory that raw MPI, receiving into a buffer it reuses,
// does not make (docs/benchmarks.md). When the method took its vector by
// reference (const&, &, or && left alone), the vector is still whole once the
// call is over: it is kept here, and the next received vector of the same
// element type and a similar size is made from it. That reuses mapped,
// recently touched memory and skips the fill up to the kept vector's size
// (resize() to a size a vector already has writes nothing).
//
// Bounded: at most kRecycleSlots vectors per element type, and in all no more
// bytes than Config::recycled_vector_bytes (0, the default before a runtime
// sets it, turns keeping off); to keep a new vector, the oldest of its type
// are freed first. A runtime's core frees what is kept when it shuts down.
// Only vectors of plain numbers with the standard allocator, of kRecycleFrom
// bytes or more, passed as a call's own argument (not inside another type)
// are kept. A received vector made from a kept one has at most a quarter more
// capacity than it needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <tuple>
#include <type_traits>
#include <vector>

#include "troupe/detail/fresh_memory.hpp"

namespace troupe::detail {

/// Vectors are kept from this capacity (in bytes) on.
inline constexpr std::size_t kRecycleFrom = kFreshMemoryFrom;
/// At most this many vectors of one element type are kept.
inline constexpr std::size_t kRecycleSlots = 8;

/// Sets how many bytes of vectors may be kept in all (the core applies
/// Config::recycled_vector_bytes). Lowering it frees every kept vector.
void set_recycle_budget(std::size_t bytes) noexcept;
std::size_t recycle_budget() noexcept;
/// Frees every kept vector (a core shutting down; tests).
void clear_recycled_vectors() noexcept;

struct RecycleStats {
  std::uint64_t kept = 0;    ///< vectors taken in after a call
  std::uint64_t reused = 0;  ///< received vectors made from a kept one
  std::size_t held_bytes = 0;
};
RecycleStats recycle_stats() noexcept;

namespace recycling {
/// Claims `bytes` of the budget; false if they do not fit.
bool claim(std::size_t bytes) noexcept;
void release(std::size_t bytes) noexcept;
void count_kept() noexcept;
void count_reused() noexcept;
/// Registers a function that frees one element type's kept vectors.
void add_clearer(void (*clear)() noexcept) noexcept;
}  // namespace recycling

template <class T>
class VectorRecycler {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>);

 public:
  /// Takes in v's storage after a call, if it is large; v is then left
  /// empty. To make room, the oldest kept vectors of this element type are
  /// freed first (a stream whose sizes changed keeps its new size). If this
  /// type cannot make room (other types hold the budget), v is left alone and
  /// its owner frees it.
  static void give(std::vector<T>& v) noexcept {
    const std::size_t bytes = v.capacity() * sizeof(T);
    if (bytes < kRecycleFrom || bytes > recycle_budget()) return;  // (larger than all: others stay)
    Store& s = store();
    std::vector<T> evicted[kRecycleSlots];  // freed after the lock is let go
    std::size_t n_evicted = 0;
    bool kept = false;
    try {
      std::lock_guard lk(s.mu);
      auto evict_oldest = [&] {
        recycling::release(s.slots[0].capacity() * sizeof(T));
        evicted[n_evicted++].swap(s.slots[0]);
        s.remove(0);
      };
      if (s.count == kRecycleSlots) evict_oldest();
      while (!recycling::claim(bytes)) {
        if (s.count == 0) return;  // the budget is held by other element types (or is 0)
        evict_oldest();
      }
      s.slots[s.count++].swap(v);
      kept = true;
    } catch (...) {  // a lock that cannot be taken: v is simply freed by its owner
    }
    if (kept) recycling::count_kept();
  }

  /// Makes `into` the smallest kept vector with room for n elements, and at
  /// most a quarter more (a received vector may be kept for long: it should
  /// not hold much more memory than it needs). Its size is the size it had:
  /// resize(n) after this writes only elements it did not have. False if
  /// none fits; `into` is then unchanged.
  static bool take(std::vector<T>& into, std::size_t n) noexcept {
    if (n * sizeof(T) < kRecycleFrom) return false;
    Store& s = store();
    std::vector<T> kept;
    try {
      std::lock_guard lk(s.mu);
      std::size_t best = kRecycleSlots;
      for (std::size_t i = 0; i < s.count; ++i) {
        const std::size_t cap = s.slots[i].capacity();
        if (cap >= n && cap - n <= n / 4 && (best == kRecycleSlots || cap < s.slots[best].capacity())) best = i;
      }
      if (best == kRecycleSlots) return false;
      kept.swap(s.slots[best]);
      s.remove(best);
    } catch (...) {
      return false;
    }
    recycling::release(kept.capacity() * sizeof(T));
    recycling::count_reused();
    into.swap(kept);  // what `into` had is freed with `kept`
    return true;
  }

  /// Frees every kept vector of this element type.
  static void clear() noexcept {
    Store& s = store();
    std::vector<T> drop[kRecycleSlots];
    try {
      std::lock_guard lk(s.mu);
      for (std::size_t i = 0; i < s.count; ++i) {
        recycling::release(s.slots[i].capacity() * sizeof(T));
        drop[i].swap(s.slots[i]);
      }
      s.count = 0;
    } catch (...) {
    }
  }  // freed here, outside the lock

 private:
  struct Store {
    Store() noexcept { recycling::add_clearer(&VectorRecycler::clear); }
    /// Closes the gap at i, keeping the others oldest first (empty at count).
    void remove(std::size_t i) noexcept {
      for (; i + 1 < count; ++i) slots[i].swap(slots[i + 1]);
      --count;
    }
    std::mutex mu;
    std::vector<T> slots[kRecycleSlots];  // [0, count): oldest first
    std::size_t count = 0;
  };
  /// Never destroyed: a call may be destroyed during the program's exit, after
  /// static objects are gone. Its vectors are reachable (not a leak) and freed
  /// by clear() when a core shuts down.
  static Store& store() noexcept {
    alignas(Store) static unsigned char storage[sizeof(Store)];
    static Store* s = ::new (static_cast<void*>(storage)) Store;
    return *s;
  }
};

/// Gives a call's own vector arguments to the recycler (RemoteCall's destructor).
template <class X>
void recycle_argument(X&) noexcept {}
template <class T>
  requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
void recycle_argument(std::vector<T>& v) noexcept {
  VectorRecycler<T>::give(v);
}
template <class Tuple>
void recycle_arguments(Tuple& args) noexcept {
  std::apply([](auto&... a) { (recycle_argument(a), ...); }, args);
}

}  // namespace troupe::detail
