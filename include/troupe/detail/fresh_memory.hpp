// Large blocks that are about to be written in full (a received vector, a new
// pooled Array block) are mapped in one step instead of one page fault per
// 4 KiB page: on Linux the block asks for transparent huge pages and is
// populated by a single madvise call. A 64 MiB std::vector that MPI receives
// into costs 35-40 ms to make this way without it and 7-10 ms with it
// (docs/benchmarks.md). Memory that is mapped already (an allocator's reused
// heap) is left alone, and so is every block on systems without these calls.
#pragma once

#include <cstddef>

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

}  // namespace troupe::detail
