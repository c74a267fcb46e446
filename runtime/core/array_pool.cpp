// The block pool behind troupe::Array: large blocks are recycled, so memory an
// Array is made in is usually already mapped (no page faults) and never
// zero-filled.
#include <sys/mman.h>

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <limits>
#include <new>
#include <vector>

#include "troupe/array.hpp"
#include "troupe/detail/fresh_memory.hpp"

namespace troupe::detail {
namespace {

constexpr std::size_t kPooledFrom = 64 * 1024;

struct FreeList {
  std::vector<void*> blocks;
  std::uint64_t last_used = 0;  // pool tick of the last acquire or release
};

struct Pool {
  std::mutex mu;
  std::map<std::size_t, FreeList> free;  // by capacity
  std::size_t kept = 0;
  std::size_t budget = 512ull << 20;
  std::uint64_t tick = 0;
  Pool() {
    if (const char* v = std::getenv("TROUPE_ARRAY_POOL_MB"); v != nullptr && *v != '\0')
      budget = std::strtoull(v, nullptr, 10) << 20;
  }
};

Pool& pool() {
  static Pool* p = new Pool();  // outlives every Array, even static ones
  return *p;
}

// Blocks from 1 MiB on are mapped from the system on a huge-page boundary, so
// that the kernel can back them with transparent huge pages
// (prepare_fresh_memory asks for them). Over shared memory raw MPI moves
// distinct 1-4 MiB buffers two to three times faster on huge pages: its
// single-copy transfer pins the sender's pages one page at a time
// (docs/benchmarks.md). They bypass malloc, whose heap would hand out memory
// already mapped on small pages. A block of 1-2 MiB takes a whole huge page.
constexpr std::size_t kHugePage = std::size_t{2} << 20;

void* map_block(std::size_t capacity) {
  const std::size_t span = capacity + kHugePage;
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const auto b = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t a = (b + kHugePage - 1) & ~(kHugePage - 1);
  if (a > b) ::munmap(raw, a - b);  // trim to the boundary, and after the block
  if (b + span > a + capacity) ::munmap(reinterpret_cast<void*>(a + capacity), b + span - (a + capacity));
  return reinterpret_cast<void*>(a);
}

// Size classes: eight per power of two (at most 12.5 % slack), 64 KiB granules.
std::size_t size_class(std::size_t bytes) {
  if (bytes >= kFreshMemoryFrom && bytes <= kHugePage) return kHugePage;
  const unsigned k = static_cast<unsigned>(std::bit_width(bytes - 1));
  const std::size_t step = std::size_t{1} << std::max(16u, k > 3 ? k - 3 : 0u);
  return (bytes + step - 1) / step * step;
}

}  // namespace

void* array_acquire(std::size_t bytes, std::size_t& capacity) {
  if (bytes > std::numeric_limits<std::size_t>::max() / 2) throw std::bad_alloc();  // its size class would overflow
  if (bytes < kPooledFrom) {
    capacity = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, capacity);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  capacity = size_class(bytes);
  auto& pl = pool();
  {
    std::lock_guard lk(pl.mu);
    auto it = pl.free.find(capacity);
    if (it != pl.free.end() && !it->second.blocks.empty()) {
      void* p = it->second.blocks.back();
      it->second.blocks.pop_back();
      it->second.last_used = ++pl.tick;
      pl.kept -= capacity;
      return p;
    }
  }
  if (capacity >= kHugePage) {
    void* p = map_block(capacity);
    prepare_fresh_memory(p, capacity);  // a new block is written in full soon
    return p;
  }
  void* p = std::aligned_alloc(64, capacity);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

namespace {

void give_back(void* p, std::size_t capacity) noexcept {
  if (capacity >= kHugePage) {
    ::munmap(p, capacity);
  } else {
    std::free(p);
  }
}

/// Makes room for `need` more bytes by freeing the blocks of the classes used
/// longest ago (never `keep`'s): a program that moves on from one message size
/// to another gets its pool back for the new size, instead of a pool full of
/// blocks nobody asks for and a fresh mapping for every new block.
bool make_room(Pool& pl, std::size_t need, std::size_t keep) noexcept {
  while (pl.kept + need > pl.budget) {
    FreeList* oldest = nullptr;
    std::size_t oldest_capacity = 0;
    for (auto& [capacity, list] : pl.free)
      if (capacity != keep && !list.blocks.empty() && (oldest == nullptr || list.last_used < oldest->last_used)) {
        oldest = &list;
        oldest_capacity = capacity;
      }
    if (oldest == nullptr) return false;
    give_back(oldest->blocks.back(), oldest_capacity);
    oldest->blocks.pop_back();
    pl.kept -= oldest_capacity;
  }
  return true;
}

}  // namespace

void array_release(void* p, std::size_t capacity) noexcept {
  if (capacity >= kPooledFrom) {
    auto& pl = pool();
    std::lock_guard lk(pl.mu);
    if (capacity <= pl.budget && make_room(pl, capacity, capacity)) {
      try {
        auto& list = pl.free[capacity];
        list.blocks.push_back(p);
        list.last_used = ++pl.tick;
        pl.kept += capacity;
        return;
      } catch (...) {
      }
    }
  }
  give_back(p, capacity);
}

std::size_t array_pool_kept_blocks(std::size_t bytes) {
  auto& pl = pool();
  std::lock_guard lk(pl.mu);
  auto it = pl.free.find(size_class(bytes));
  return it == pl.free.end() ? 0 : it->second.blocks.size();
}

void array_pool_set_budget(std::size_t bytes) {
  auto& pl = pool();
  std::lock_guard lk(pl.mu);
  pl.budget = bytes;
  make_room(pl, 0, 0);
}

}  // namespace troupe::detail
