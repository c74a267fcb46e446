// One text from every rank of a communicator, of any length (start-up and
// join collectives: host names and roles, registry tables and problems).
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

namespace troupe::detail {

/// Collective over comm: every rank's `mine`, indexed by rank (an empty text
/// from a rank with nothing to say). Empty if the texts together are too
/// large for MPI's int counts (over 2 GB); every rank sees every length, so
/// all of them learn that together.
std::vector<std::string> allgather_text(MPI_Comm comm, const std::string& mine);

}  // namespace troupe::detail
