// Counts the point-to-point MPI calls this process makes while counting is on:
// the calls the transport engine makes, intercepted through MPI's profiling
// interface (mpi_call_count.cpp defines them and forwards to PMPI_*); and
// refuses sends on demand.
#pragma once

#include <atomic>

namespace tt {
inline std::atomic<bool> g_count_mpi{false};
inline std::atomic<long> g_mpi_calls{0};
/// MPI_Isend with this tag fails (MPI_ERR_OTHER, nothing sent) this many more times.
inline std::atomic<int> g_refuse_isend_tag{-1};
inline std::atomic<int> g_refuse_isends{0};
}  // namespace tt
