// The nodes' agreement on the wire registry, checked when a cluster runtime
// starts. An MPMD job runs several binaries: a class or method registered in
// two of them under one name with different shapes (argument or result types,
// a constructor's arguments), or two names whose ids collide, would be
// misread at run time, silently where the bytes happen to fit.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

namespace troupe::detail {

/// Collective over comm (start-up only: no rank can be lost yet). `table` is
/// this rank's WireRegistry::table(), `local_problems` its own registration
/// problems. Returns what keeps the job from starting, the same list on every
/// rank, so that all of them refuse together and none waits alone in a later
/// collective: each rank's own problems, and each class or method that two
/// ranks register differently. Empty when all agree (one 16-byte allgather
/// then; the tables travel only when the ranks' digests differ).
std::vector<std::string> wire_disagreements(MPI_Comm comm, const std::vector<std::string>& table,
                                            const std::vector<std::string>& local_problems);

}  // namespace troupe::detail
