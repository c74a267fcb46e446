// MPI's profiling interface: the calls the transport engine makes, counted
// while tt::g_count_mpi is set and passed on to the library (PMPI_*).
#include <mpi.h>

#include "mpi/mpi_call_count.hpp"

namespace {
void count() {
  if (tt::g_count_mpi.load(std::memory_order_relaxed)) tt::g_mpi_calls.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

extern "C" {
int MPI_Isend(const void* buf, int n, MPI_Datatype t, int dest, int tag, MPI_Comm comm, MPI_Request* req) {
  count();
  if (tag == tt::g_refuse_isend_tag.load() && tt::g_refuse_isends.load() > 0 && tt::g_refuse_isends.fetch_sub(1) > 0)
    return MPI_ERR_OTHER;
  return PMPI_Isend(buf, n, t, dest, tag, comm, req);
}
int MPI_Irecv(void* buf, int n, MPI_Datatype t, int src, int tag, MPI_Comm comm, MPI_Request* req) {
  count();
  return PMPI_Irecv(buf, n, t, src, tag, comm, req);
}
int MPI_Test(MPI_Request* req, int* flag, MPI_Status* st) {
  count();
  return PMPI_Test(req, flag, st);
}
int MPI_Testsome(int n, MPI_Request reqs[], int* outcount, int indices[], MPI_Status sts[]) {
  count();
  return PMPI_Testsome(n, reqs, outcount, indices, sts);
}
int MPI_Wait(MPI_Request* req, MPI_Status* st) {
  count();
  return PMPI_Wait(req, st);
}
int MPI_Iprobe(int src, int tag, MPI_Comm comm, int* flag, MPI_Status* st) {
  count();
  return PMPI_Iprobe(src, tag, comm, flag, st);
}
int MPI_Cancel(MPI_Request* req) {
  count();
  return PMPI_Cancel(req);
}
int MPI_Request_free(MPI_Request* req) {
  count();
  return PMPI_Request_free(req);
}
int MPI_Request_get_status(MPI_Request req, int* flag, MPI_Status* st) {
  count();
  return PMPI_Request_get_status(req, flag, st);
}
}
