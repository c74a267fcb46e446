// Large blocks that are about to be written in full (a received vector, a new
// pooled Array block) are mapped in one step instead of one page fault per
// 4 KiB page: on Linux the block asks for transparent huge pages and is
// populated by a single madvise call. A 64 MiB std::vector that MPI receives
// into costs 35-40 ms to make this way without it and 7-10 ms with it
// (docs/benchmarks.md). Memory that is mapped already (an allocator's reused
// heap) is left alone, and so is every block on systems without these calls.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace troupe::detail {

/// Blocks from this size on are prepared; smaller ones are not worth a call.
inline constexpr std::size_t kFreshMemoryFrom = std::size_t{1} << 20;

/// False when the environment says TROUPE_HUGE_PAGES=0 (read once).
bool huge_pages_wanted() noexcept;

/// Config::keep_freed_memory: tells glibc's malloc to keep freed blocks of up
/// to 32 MiB mapped in its heap (once per process; TROUPE_KEEP_FREED_MEMORY=0
/// turns it off). True if malloc accepted the settings (an allocator that
/// replaces malloc may accept them and ignore them).
bool keep_freed_memory() noexcept;

/// Maps [p, p + bytes) ahead of the writes that follow. Best effort: never
/// fails, never changes the contents.
void prepare_fresh_memory(void* p, std::size_t bytes) noexcept;

/// Allocations of this size or more (with malloc's header) are not gathered:
/// glibc's malloc maps each on its own and unmaps it when it is freed (its
/// largest mmap threshold, which keep_freed_memory sets), so a gather's copy
/// would be paid again for every message, never for memory used again. At 64
/// MiB, gathering measured no faster by value and slower by const&
/// (docs/benchmarks.md).
inline constexpr std::size_t kGatherUpTo = std::size_t{32} << 20;

/// A block of private heap memory (a std::vector's or std::string's, from
/// malloc: `allocated` bytes in all) about to be sent to a rank on this host,
/// which reads it page by page (Open MPI's single copy, process_vm_readv):
/// the 2 MiB pages that hold [p, p + bytes), its two end pages included, are
/// gathered onto transparent huge pages now (MADV_COLLAPSE, Linux 6.1 and
/// later; a copy inside the kernel, paid once for memory that malloc hands
/// out again; pages gathered lately are remembered and not asked about
/// again). Over shared memory 1 and 4 MiB vectors then moved at 0.61-1.16 of
/// raw MPI's figure instead of 0.42-0.58 (docs/benchmarks.md). A page whose
/// gathering takes over 1 ms (a huge page slow to come by) stops it for a
/// second. Best effort: never fails, never changes the contents (the
/// block's or its neighbours' in those pages); nothing happens for blocks
/// under 1 MiB (kFreshMemoryFrom), for allocations malloc maps on their own
/// (kGatherUpTo), with TROUPE_HUGE_PAGES=0, where transparent huge pages are
/// "never", or on kernels without the call.
void prepare_sent_memory(const void* p, std::size_t bytes, std::size_t allocated) noexcept;

/// Bytes of the huge pages prepare_sent_memory had the kernel accept, or
/// remembered, so far (this process; a page counts each time a block holding
/// it is sent; an end page that two mappings share is accepted and stays small).
std::uint64_t sent_bytes_gathered() noexcept;

/// Huge pages prepare_sent_memory asked the kernel about so far (this
/// process; pages it remembers are not asked about again).
std::uint64_t sent_pages_asked() noexcept;

/// Tests: forget the pages gathered so far (a test maps new memory where an
/// earlier test's was).
void forget_gathered_pages_for_tests() noexcept;

/// Tests: a page gathered slower than slow_page pauses gathering for a second
/// (1 ms unless changed); end_pause also ends a pause under way.
void set_slow_gather_for_tests(std::chrono::nanoseconds slow_page, bool end_pause = true) noexcept;

}  // namespace troupe::detail
