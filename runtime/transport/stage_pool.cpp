#include "stage_pool.hpp"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>

#if defined(__linux__)
#include <sys/mman.h>
#endif


namespace troupe::detail {
namespace {

/// True when the variable is set to something other than "0" (or empty).
bool set_on(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

/// Open MPI's btl list (OMPI_MCA_btl, "a,b" or "^a,b") leaves out shared memory.
bool btl_list_without_shared_memory(std::string_view list) {
  bool exclude = false;
  if (!list.empty() && list.front() == '^') {
    exclude = true;
    list.remove_prefix(1);
  }
  bool named = false;
  while (!list.empty()) {
    const auto comma = list.find(',');
    const auto name = list.substr(0, comma);
    named |= name == "vader" || name == "sm" || name == "smcuda";
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
  }
  return exclude ? named : !named;
}

}  // namespace

bool neighbours_read_our_pages() {
  if (const char* btl = std::getenv("OMPI_MCA_btl"); btl != nullptr && btl_list_without_shared_memory(btl)) return false;
  if (set_on("MPIR_CVAR_NOLOCAL") || set_on("MPIR_CVAR_CH3_NOLOCAL")) return false;
  // Open MPI told to copy through its shared buffers (no single copy): the
  // sender's pages do not set the speed.
  for (const char* name : {"OMPI_MCA_btl_vader_single_copy_mechanism", "OMPI_MCA_btl_sm_single_copy_mechanism"})
    if (const char* m = std::getenv(name); m != nullptr && std::strcmp(m, "none") == 0) return false;
  return true;
}

bool gather_blocks_wanted() {
  if (const char* v = std::getenv("TROUPE_GATHER_BLOCKS"); v != nullptr && *v != '\0') return std::strcmp(v, "0") != 0;
  return neighbours_read_our_pages();
}

bool stage_blocks_wanted(bool configured) {
  if (const char* v = std::getenv("TROUPE_STAGE_BLOCKS"); v != nullptr && *v != '\0') return std::strcmp(v, "0") != 0;
  if (!configured) return false;
  // Without a single copy from our pages, staging would only add a copy.
  if (!neighbours_read_our_pages()) return false;
  if (const char* t = std::getenv("GLIBC_TUNABLES"); t != nullptr) {
    constexpr std::string_view key = "glibc.malloc.hugetlb=";
    const char* h = std::strstr(t, key.data());
    if (h != nullptr && h[key.size()] != '0') return false;  // malloc's blocks are on huge pages already
  }
  return true;
}

std::byte* StageSlot::data() const noexcept { return pool_->slots_ + std::size_t{index_} * kPiece + offset_; }

void StageSlot::reset() noexcept {
  if (!pool_) return;
  pool_->give(index_);
  pool_.reset();
}

namespace {
std::atomic<unsigned> g_failing_makes{0};
}  // namespace

void StagePool::fail_next_makes_for_tests(unsigned n) noexcept { g_failing_makes.store(n); }

std::shared_ptr<StagePool> StagePool::make() {
  for (unsigned n = g_failing_makes.load(); n != 0;)
    if (g_failing_makes.compare_exchange_weak(n, n - 1)) return nullptr;
  constexpr std::size_t bytes = std::size_t{kSlots} * kPiece;
#if defined(__linux__)
  // On ordinary 4 KiB pages, on purpose: with the slots on transparent huge
  // pages, raw MPI doing the same staging moved 1 MiB messages at 15-16 GB/s
  // in most processes and at 2.6-3.4 GB/s in others for their whole run (the
  // copy into the slots itself slowed to about 4 GB/s); on 4 KiB pages it ran
  // at 10.7-11.7 GB/s in every process (docs/benchmarks.md).
  void* raw = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  auto* slots = static_cast<std::byte*>(raw);
#if defined(MADV_NOHUGEPAGE)
  (void)::madvise(slots, bytes, MADV_NOHUGEPAGE);  // also where THP is "always"
#endif
  std::memset(slots, 0, bytes);  // mapped now, not at the first piece
#else
  auto* slots = static_cast<std::byte*>(::operator new(bytes, std::nothrow));
  if (slots == nullptr) return nullptr;
#endif
  std::unique_ptr<StagePool> owner(new (std::nothrow) StagePool(slots));
  if (!owner) {
#if defined(__linux__)
    ::munmap(slots, bytes);
#else
    ::operator delete(slots);
#endif
    return nullptr;
  }
  // From here the pool owns the slots: whatever throws, they are freed once.
  try {
    std::shared_ptr<StagePool> pool(std::move(owner));
    pool->free_.reserve(kSlots);
    for (unsigned i = kSlots; i-- > 0;) pool->free_.push_back(i);
    return pool;
  } catch (...) {
    return nullptr;
  }
}

StagePool::~StagePool() {
#if defined(__linux__)
  ::munmap(slots_, std::size_t{kSlots} * kPiece);
#else
  ::operator delete(slots_);
#endif
}

StageSlot StagePool::take(std::size_t bytes) {
  // Pieces start on cache lines.
  const std::size_t need = (bytes + 63) & ~std::size_t{63};
  if (need > kPiece) return {};
  if (open_ >= 0 && slot_[open_].fill + need <= kPiece) {
    auto& s = slot_[open_];
    const std::size_t at = s.fill;
    s.fill += need;
    ++s.users;
    return StageSlot(shared_from_this(), static_cast<unsigned>(open_), at);
  }
  // The open slot is full: it is free again once its last piece was sent.
  if (open_ >= 0 && slot_[open_].users == 0) free_.push_back(static_cast<unsigned>(open_));
  open_ = -1;
  if (free_.empty()) return {};
  const unsigned i = free_.back();
  free_.pop_back();
  open_ = static_cast<int>(i);
  slot_[i] = Slot{1, need};
  return StageSlot(shared_from_this(), i, 0);
}

void StagePool::give(unsigned index) noexcept {
  auto& s = slot_[index];
  if (--s.users != 0) return;
  if (static_cast<int>(index) == open_) {
    s.fill = 0;  // still the open one: filled again from its start
  } else {
    free_.push_back(index);  // within the room reserved at make(): no throw
  }
}
}  // namespace troupe::detail
