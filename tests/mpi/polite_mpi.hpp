// Collectives the multi-rank tests use to line ranks up, waited for politely.
// A thread blocked inside MPICH holds MPICH's global lock most of the time and
// can starve troupe's progress thread in the same process, while another rank
// waits for that progress (an acknowledgement, a heartbeat): so the tests start
// the nonblocking form and poll it with short sleeps. (docs/guide.md, "MPI
// calls of your own".)
#pragma once

#include <mpi.h>

#include <chrono>
#include <thread>

namespace tt {

inline void wait_politely(MPI_Request& req) {
  int done = 0;
  while (true) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done != 0) return;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

inline void barrier(MPI_Comm comm = MPI_COMM_WORLD) {
  MPI_Request req;
  MPI_Ibarrier(comm, &req);
  wait_politely(req);
}

inline void bcast(void* buf, int bytes, int root, MPI_Comm comm = MPI_COMM_WORLD) {
  MPI_Request req;
  MPI_Ibcast(buf, bytes, MPI_BYTE, root, comm, &req);
  wait_politely(req);
}

inline void allgather(const void* mine, void* all, int bytes_each, MPI_Comm comm = MPI_COMM_WORLD) {
  MPI_Request req;
  MPI_Iallgather(mine, bytes_each, MPI_BYTE, all, bytes_each, MPI_BYTE, comm, &req);
  wait_politely(req);
}

}  // namespace tt
