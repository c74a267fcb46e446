// MPI's profiling interface: the calls the transport engine makes, counted
// while tt::g_count_mpi is set and passed on to the library (PMPI_*).
#include <mpi.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "mpi/mpi_call_count.hpp"

namespace {
void count() {
  if (tt::g_count_mpi.load(std::memory_order_relaxed)) tt::g_mpi_calls.fetch_add(1, std::memory_order_relaxed);
}

std::mutex g_failing_mu;
std::vector<MPI_Request> g_failing;  // posted sends to report completed in error

bool take_failing(MPI_Request r) {
  if (r == MPI_REQUEST_NULL) return false;
  std::lock_guard lk(g_failing_mu);
  const auto it = std::find(g_failing.begin(), g_failing.end(), r);
  if (it == g_failing.end()) return false;
  g_failing.erase(it);
  return true;
}
}  // namespace

int tt::failing_sends_left() {
  std::lock_guard lk(g_failing_mu);
  return static_cast<int>(g_failing.size());
}

extern "C" {
int MPI_Isend(const void* buf, int n, MPI_Datatype t, int dest, int tag, MPI_Comm comm, MPI_Request* req) {
  count();
  if (tag == tt::g_refuse_isend_tag.load() && tt::g_refuse_isends.load() > 0 && tt::g_refuse_isends.fetch_sub(1) > 0)
    return MPI_ERR_OTHER;
  const bool fail = tag == tt::g_fail_send_tag.load() && tt::g_fail_sends.load() > 0 && tt::g_fail_sends.fetch_sub(1) > 0;
  const int rc = PMPI_Isend(buf, n, t, dest, tag, comm, req);
  if (fail && rc == MPI_SUCCESS) {
    std::lock_guard lk(g_failing_mu);
    g_failing.push_back(*req);
  }
  return rc;
}
int MPI_Irecv(void* buf, int n, MPI_Datatype t, int src, int tag, MPI_Comm comm, MPI_Request* req) {
  count();
  return PMPI_Irecv(buf, n, t, src, tag, comm, req);
}
int MPI_Test(MPI_Request* req, int* flag, MPI_Status* st) {
  count();
  const MPI_Request before = *req;
  const int rc = PMPI_Test(req, flag, st);
  if (rc != MPI_SUCCESS || *flag == 0 || !take_failing(before)) return rc;
  if (st != MPI_STATUS_IGNORE) st->MPI_ERROR = MPI_ERR_OTHER;
  return MPI_ERR_OTHER;
}
int MPI_Testsome(int n, MPI_Request reqs[], int* outcount, int indices[], MPI_Status sts[]) {
  count();
  std::vector<MPI_Request> before;
  if (tt::failing_sends_left() != 0) before.assign(reqs, reqs + n);
  const int rc = PMPI_Testsome(n, reqs, outcount, indices, sts);
  if (rc != MPI_SUCCESS || before.empty() || *outcount <= 0) return rc;
  bool failed = false;
  for (int k = 0; k < *outcount; ++k) {
    const bool fails = take_failing(before[static_cast<std::size_t>(indices[k])]);
    failed = failed || fails;
    if (sts != MPI_STATUSES_IGNORE) sts[k].MPI_ERROR = fails ? MPI_ERR_OTHER : MPI_SUCCESS;
  }
  return failed ? MPI_ERR_IN_STATUS : rc;
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
