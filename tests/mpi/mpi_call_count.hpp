// Counts the point-to-point MPI calls this process makes while counting is on:
// the calls the transport engine makes, intercepted through MPI's profiling
// interface (mpi_call_count.cpp defines them and forwards to PMPI_*); and
// refuses sends, or fails their completion, on demand.
#pragma once

#include <atomic>

namespace tt {
inline std::atomic<bool> g_count_mpi{false};
inline std::atomic<long> g_mpi_calls{0};
/// MPI_Isend with this tag fails (MPI_ERR_OTHER, nothing sent) this many more times.
inline std::atomic<int> g_refuse_isend_tag{-1};
inline std::atomic<int> g_refuse_isends{0};
/// MPI_Isend with this tag is posted, and sends, but its request completes in
/// error (MPI_ERR_OTHER, as MPI_Test or MPI_Testsome reports it), this many more times.
inline std::atomic<int> g_fail_send_tag{-1};
inline std::atomic<int> g_fail_sends{0};
/// Sends whose failed completion was set up and not reported yet.
int failing_sends_left();
}  // namespace tt
