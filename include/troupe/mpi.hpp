// For MPI applications that embed troupe: adopt the communicator you already
// have. troupe then leaves MPI_Init/MPI_Finalize to you; MPI must have been
// initialised with MPI_THREAD_MULTIPLE (troupe's progress engine runs MPI on
// its own threads while yours make their own calls).
//
//   MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
//   {
//     troupe::Runtime rt(troupe::adopt(MPI_COMM_WORLD));
//     ...
//     rt.finish();
//   }
//   MPI_Finalize();
//
// With Open MPI, set OMPI_MCA_async_mpi_finalize=1 (before MPI_Init) if ranks
// may die: otherwise MPI_Finalize waits in a fence that includes the dead.
#pragma once

#include <mpi.h>

#include "troupe/runtime.hpp"

namespace troupe {

struct AdoptedComm {
  MPI_Comm comm;
};

/// Wraps a communicator for Runtime(const AdoptedComm&, Config): its ranks become the nodes.
inline AdoptedComm adopt(MPI_Comm comm) { return AdoptedComm{comm}; }

}  // namespace troupe
