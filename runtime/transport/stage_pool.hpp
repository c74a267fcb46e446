// StagePool: the engine's staging buffers for blocks sent over shared memory.
//
// Over shared memory Open MPI and MPICH move a large message with one copy
// that the receiver makes out of the sender's pages (process_vm_readv), page
// by page: out of a std::vector's memory (malloc's, not hot in cache) at
// 5.5-6.3 GB/s on the development machine. With Config::stage_blocks on, the
// engine copies such a block, one piece of at most kPiece bytes at a time,
// into a slot of this pool, and MPI sends the piece from there while the
// receiver reads the piece before it: raw MPI moved 1 MiB messages that way
// at 10.7-11.7 GB/s against 5.5-6.3 sent directly. It is off by default: in
// troupe the gain did not hold in every run (docs/benchmarks.md). The slots
// stay on 4 KiB pages (stage_pool.cpp says why).
//
// Only the thread that holds the engine touches a pool (slots are taken and
// given back under the engine lock). A slot handle keeps its pool alive: when
// a peer is lost, the slots its sends held may still be read by MPI, so the
// engine starts a new pool and the old one lives on with them.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

#include "wire/envelope.hpp"

namespace troupe::detail {

/// Blocks that are staged travel in pieces of this size (the last one
/// shorter), each its own MPI message; both sides derive the pieces from the
/// block's size (a protocol constant).
inline constexpr std::size_t kPiece = std::size_t{1} << 20;
/// Blocks up to this size are staged; larger ones leave from their own memory.
/// Measured (docs/benchmarks.md): staged, 256 KiB and 1 MiB vectors moved at
/// 7.2-8.9 GB/s against 4.3-5.8 unstaged, in every process; from 4 MiB on the
/// staged stream was faster in some processes and slower in others.
inline constexpr std::size_t kStageUpTo = std::size_t{2} << 20;
static_assert(kStageUpTo <= kMaxPiecedBlock, "a staged block travels in pieces: the protocol's limit bounds it");

/// Whether blocks sent to nodes on this host are staged: `configured`
/// (Config::stage_blocks), unless the environment says otherwise (see there).
bool stage_blocks_wanted(bool configured);

/// Whether, by the environment, a rank on this host reads our blocks straight
/// from our pages (MPI's single copy over shared memory): not when Open MPI's
/// btl list leaves out shared memory or its single copy is "none", nor when
/// MPICH is told not to use shared memory (MPIR_CVAR_NOLOCAL).
bool neighbours_read_our_pages();

/// Whether blocks sent to nodes on this host are gathered onto huge pages
/// (prepare_sent_memory): when neighbours read our pages, unless
/// TROUPE_GATHER_BLOCKS says otherwise (1 / 0).
bool gather_blocks_wanted();

class StagePool;

/// A piece's place in a pool, held by the send that reads it; given back when
/// destroyed.
class StageSlot {
 public:
  StageSlot() = default;
  StageSlot(std::shared_ptr<StagePool> pool, unsigned index, std::size_t offset) noexcept
      : pool_(std::move(pool)), index_(index), offset_(offset) {}
  StageSlot(StageSlot&& o) noexcept = default;
  StageSlot& operator=(StageSlot&& o) noexcept {
    if (this != &o) {
      reset();
      pool_ = std::move(o.pool_);
      index_ = o.index_;
      offset_ = o.offset_;
    }
    return *this;
  }
  ~StageSlot() { reset(); }
  explicit operator bool() const noexcept { return pool_ != nullptr; }
  std::byte* data() const noexcept;
  void reset() noexcept;

 private:
  std::shared_ptr<StagePool> pool_;
  unsigned index_ = 0;
  std::size_t offset_ = 0;
};

/// kSlots slots of kPiece bytes. Pieces smaller than a slot are packed into
/// the slot being filled (a block of 64 KiB takes 64 KiB, not a slot), so
/// that as many bytes are in flight for small blocks as for large ones; a
/// slot is free again once every piece in it was sent.
class StagePool : public std::enable_shared_from_this<StagePool> {
 public:
  /// Null if the memory cannot be mapped.
  static std::shared_ptr<StagePool> make();
  /// After make() failed: how long staged blocks leave from their own memory
  /// before the engine tries again.
  static constexpr std::chrono::milliseconds kRetryAfter{1000};
  /// Tests: the next n calls of make() fail as if the memory could not be mapped.
  static void fail_next_makes_for_tests(unsigned n) noexcept;
  ~StagePool();
  StagePool(const StagePool&) = delete;
  StagePool& operator=(const StagePool&) = delete;

  static constexpr unsigned kSlots = 4;
  /// Room for `bytes` (at most kPiece), or an empty handle when there is none.
  StageSlot take(std::size_t bytes);
  /// Slots with no piece in them.
  unsigned free_slots() const noexcept {
    return static_cast<unsigned>(free_.size()) + (open_ >= 0 && slot_[open_].users == 0 ? 1u : 0u);
  }

 private:
  explicit StagePool(std::byte* slots) noexcept : slots_(slots) {}
  friend class StageSlot;
  void give(unsigned index) noexcept;
  std::byte* slots_;  // kSlots * kPiece bytes, slot i at slots_ + i * kPiece
  struct Slot {
    unsigned users = 0;    // pieces in it still being sent
    std::size_t fill = 0;  // bytes handed out from its start
  };
  Slot slot_[kSlots];
  std::vector<unsigned> free_;
  int open_ = -1;  // the slot small pieces are packed into, if any
};

}  // namespace troupe::detail
