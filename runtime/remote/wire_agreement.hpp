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
/// collective: every rank's own problems ("node 3: ..."), and each class or
/// method that two ranks register differently. Empty when all agree: one
/// 16-byte allgather then. Problems travel only when some rank has one, and
/// tables only when the ranks' digests differ (an MPMD job), one table per
/// distinct digest, sent by the lowest rank that has it.
std::vector<std::string> wire_disagreements(MPI_Comm comm, const std::vector<std::string>& table,
                                            const std::vector<std::string>& local_problems);

}  // namespace troupe::detail
