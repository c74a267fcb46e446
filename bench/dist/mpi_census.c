/* The MPI calls a process makes, counted through MPI's profiling interface.
 *
 * Preloaded into bench_dist, it counts from MPI_Pcontrol(1) to MPI_Pcontrol(0)
 * (the benchmark brackets troupe's rounds so) and prints each rank's counts at
 * MPI_Finalize, on stderr:
 *
 *   (built with the benchmarks: build/default/bench/dist/libmpi_census.so)
 *   mpirun -x LD_PRELOAD=$PWD/build/default/bench/dist/libmpi_census.so -np 2 \
 *       build/default/bench/dist/bench_dist --only rtt
 *
 * Benchmarks only: it adds an atomic increment to each call it counts. */
#include <mpi.h>
#include <stdatomic.h>
#include <stdio.h>

static atomic_int counting;
enum { kIsend, kIrecv, kSend, kRecv, kTest, kTestsome, kIprobe, kImprobe, kCalls };
static const char* const kNames[kCalls] = {"MPI_Isend", "MPI_Irecv", "MPI_Send",   "MPI_Recv",
                                           "MPI_Test",  "MPI_Testsome", "MPI_Iprobe", "MPI_Improbe"};
static atomic_long counts[kCalls];

static void count(int which) {
  if (atomic_load_explicit(&counting, memory_order_relaxed))
    atomic_fetch_add_explicit(&counts[which], 1, memory_order_relaxed);
}

int MPI_Pcontrol(const int level, ...) {
  atomic_store(&counting, level != 0);
  return MPI_SUCCESS;
}

int MPI_Isend(const void* buf, int n, MPI_Datatype t, int dest, int tag, MPI_Comm comm, MPI_Request* req) {
  count(kIsend);
  return PMPI_Isend(buf, n, t, dest, tag, comm, req);
}
int MPI_Irecv(void* buf, int n, MPI_Datatype t, int src, int tag, MPI_Comm comm, MPI_Request* req) {
  count(kIrecv);
  return PMPI_Irecv(buf, n, t, src, tag, comm, req);
}
int MPI_Send(const void* buf, int n, MPI_Datatype t, int dest, int tag, MPI_Comm comm) {
  count(kSend);
  return PMPI_Send(buf, n, t, dest, tag, comm);
}
int MPI_Recv(void* buf, int n, MPI_Datatype t, int src, int tag, MPI_Comm comm, MPI_Status* st) {
  count(kRecv);
  return PMPI_Recv(buf, n, t, src, tag, comm, st);
}
int MPI_Test(MPI_Request* req, int* flag, MPI_Status* st) {
  count(kTest);
  return PMPI_Test(req, flag, st);
}
int MPI_Testsome(int n, MPI_Request reqs[], int* outcount, int indices[], MPI_Status sts[]) {
  count(kTestsome);
  return PMPI_Testsome(n, reqs, outcount, indices, sts);
}
int MPI_Iprobe(int src, int tag, MPI_Comm comm, int* flag, MPI_Status* st) {
  count(kIprobe);
  return PMPI_Iprobe(src, tag, comm, flag, st);
}
int MPI_Improbe(int src, int tag, MPI_Comm comm, int* flag, MPI_Message* msg, MPI_Status* st) {
  count(kImprobe);
  return PMPI_Improbe(src, tag, comm, flag, msg, st);
}

int MPI_Finalize(void) {
  int rank = -1;
  PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
  char line[512];
  int at = snprintf(line, sizeof line, "mpi_census: rank %d:", rank);
  for (int i = 0; i < kCalls && at < (int)sizeof line; ++i)
    at += snprintf(line + at, sizeof line - (size_t)at, " %s %ld", kNames[i], atomic_load(&counts[i]));
  fprintf(stderr, "%s\n", line);
  return PMPI_Finalize();
}
