#include "troupe/detail/vector_recycler.hpp"

#include <algorithm>
#include <atomic>

namespace troupe::detail {
namespace {

constinit std::atomic<std::size_t> g_budget{0};
constinit std::atomic<std::size_t> g_held{0};
constinit std::atomic<std::uint64_t> g_kept{0};
constinit std::atomic<std::uint64_t> g_reused{0};

/// One clearer per element type whose store was made (a handful at most).
constexpr std::size_t kMaxClearers = 32;
constinit std::atomic<void (*)() noexcept> g_clearers[kMaxClearers]{};
constinit std::atomic<std::size_t> g_clearer_count{0};

}  // namespace

namespace recycling {

bool claim(std::size_t bytes) noexcept {
  std::size_t held = g_held.load(std::memory_order_relaxed);
  do {
    const std::size_t budget = g_budget.load(std::memory_order_relaxed);
    if (bytes > budget || held > budget - bytes) return false;
  } while (!g_held.compare_exchange_weak(held, held + bytes, std::memory_order_relaxed));
  return true;
}

void release(std::size_t bytes) noexcept { g_held.fetch_sub(bytes, std::memory_order_relaxed); }
void count_kept() noexcept { g_kept.fetch_add(1, std::memory_order_relaxed); }
void count_reused() noexcept { g_reused.fetch_add(1, std::memory_order_relaxed); }

void add_clearer(void (*clear)() noexcept) noexcept {
  const std::size_t i = g_clearer_count.fetch_add(1, std::memory_order_acq_rel);
  // There are fewer arithmetic types than slots; past them a type's vectors
  // would only be freed at exit.
  if (i < kMaxClearers) g_clearers[i].store(clear, std::memory_order_release);
}

}  // namespace recycling

void set_recycle_budget(std::size_t bytes) noexcept {
  const std::size_t before = g_budget.exchange(bytes, std::memory_order_seq_cst);
  // Always when lowered: a give() that claimed under the old budget did so
  // holding its type's lock, which clear() takes after this store.
  if (bytes < before) clear_recycled_vectors();
}

std::size_t recycle_budget() noexcept { return g_budget.load(std::memory_order_relaxed); }

void clear_recycled_vectors() noexcept {
  const std::size_t n = std::min(g_clearer_count.load(std::memory_order_acquire), kMaxClearers);
  for (std::size_t i = 0; i < n; ++i)
    if (auto* clear = g_clearers[i].load(std::memory_order_acquire)) clear();
}

RecycleStats recycle_stats() noexcept {
  return {g_kept.load(std::memory_order_relaxed), g_reused.load(std::memory_order_relaxed),
          g_held.load(std::memory_order_relaxed)};
}

}  // namespace troupe::detail
