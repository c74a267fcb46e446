/* A small plain-MPI program for the launch tests (tests/slurm/run_job.sh).
 *
 * Every rank prints one line:
 *   hello rank=R size=S host=H role=NAME threads=T
 * NAME is the value of --troupe-role=NAME, else of $TROUPE_ROLE, else "none";
 * T is $TROUPE_THREADS, else "unset".
 *
 * --die-rank=K  fault drill: after a barrier, rank K prints "dying rank=K" and
 *               kills itself with SIGKILL. The others wait --survive-ms (default
 *               3000) without talking to K, print "survivor rank=R", and exit 0
 *               without MPI_Finalize (finalizing would wait for the dead rank).
 */
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) != 0) {
  }
}

int main(int argc, char** argv) {
  const char* role = getenv("TROUPE_ROLE");
  const char* threads = getenv("TROUPE_THREADS");
  int die_rank = -1;
  long survive_ms = 3000;
  for (int i = 1; i < argc; ++i) {
    if (strncmp(argv[i], "--troupe-role=", 14) == 0) {
      role = argv[i] + 14;
    } else if (strncmp(argv[i], "--die-rank=", 11) == 0) {
      die_rank = atoi(argv[i] + 11);
    } else if (strncmp(argv[i], "--survive-ms=", 13) == 0) {
      survive_ms = atol(argv[i] + 13);
    } else {
      fprintf(stderr, "mpi_hello: unknown argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (role == NULL || role[0] == '\0') role = "none";
  if (threads == NULL || threads[0] == '\0') threads = "unset";

  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  char host[256] = "?";
  gethostname(host, sizeof host - 1);

  printf("hello rank=%d size=%d host=%s role=%s threads=%s\n", rank, size, host, role, threads);
  fflush(stdout);

  if (die_rank >= 0 && die_rank < size) {
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == die_rank) {
      printf("dying rank=%d\n", rank);
      fflush(stdout);
      raise(SIGKILL);
    }
    sleep_ms(survive_ms);
    printf("survivor rank=%d\n", rank);
    fflush(stdout);
    _exit(0);
  }

  MPI_Finalize();
  return 0;
}
