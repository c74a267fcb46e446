// Allocation failure on demand, for tests of what runs out of memory: the
// test binary's operator new (failing_new.cpp) throws std::bad_alloc (or
// returns null, for the nothrow forms) at a chosen allocation of the calling
// thread. Other threads, and allocations by malloc (MPI's), are untouched.
#pragma once

#include <cstddef>

namespace tt {
/// The n-th operator new of this thread from now (0: the next) fails.
void fail_allocation_after(long n) noexcept;
/// Every operator new of this thread fails, from the n-th on, until stop_failing().
void fail_allocations_from(long n) noexcept;
/// The next `count` operator news of this thread of `bytes` or more fail
/// (smaller ones do not count), until stop_failing().
void fail_large_allocations(std::size_t bytes, long count) noexcept;
/// Whether a chosen allocation came (and failed) since failing was set up.
bool failed_yet() noexcept;
/// Stops failing; returns whether the chosen allocation came (and failed).
bool stop_failing() noexcept;
}  // namespace tt
