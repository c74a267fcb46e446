// Counts the point-to-point MPI calls this process makes while counting is on:
// the calls the transport engine makes, intercepted through MPI's profiling
// interface (mpi_call_count.cpp defines them and forwards to PMPI_*).
#pragma once

#include <atomic>

namespace tt {
inline std::atomic<bool> g_count_mpi{false};
inline std::atomic<long> g_mpi_calls{0};
}  // namespace tt
