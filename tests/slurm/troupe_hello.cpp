// The troupe program the launch tests submit (tests/slurm/run_job.sh checks
// its output). Every rank spawns an actor on its successor and asks it where
// it runs (real troupe traffic across the job), then prints
//   hello rank=R size=S host=H role=NAME threads=T
// NAME is the runtime's role (--troupe-role=NAME, TROUPE_ROLE, or "default");
// T is the runtime's worker count when TROUPE_THREADS asked for one, else "unset".
//
// --die-rank=K  fault drill: rank K prints "dying rank=K" and SIGKILLs itself;
//               the others wait until the runtime declares K lost, print
//               "survivor rank=R", finish() and exit 0.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "troupe/remote.hpp"
#include "troupe/troupe.hpp"

namespace hello {
class Where {
 public:
  troupe::NodeId node() const { return troupe::runtime().node(); }
};
TROUPE_REMOTE(Where, troupe::init<>, &Where::node);
}  // namespace hello

int main(int argc, char** argv) {
  troupe::Runtime rt(argc, argv);
  int die_rank = -1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--die-rank=", 11) == 0) {
      die_rank = std::atoi(argv[i] + 11);
    } else if (std::strncmp(argv[i], "--survive-ms=", 13) == 0) {
      // accepted for compatibility with mpi_hello; survivors wait for detection
    } else {
      std::fprintf(stderr, "troupe_hello: unknown argument '%s'\n", argv[i]);
      rt.finish();
      return 2;
    }
  }
  const auto me = rt.node();
  const auto next = static_cast<troupe::NodeId>((me + 1) % rt.size());
  auto w = rt.spawn_on<hello::Where>(next).get_for(std::chrono::seconds(30));
  if (w.ask<&hello::Where::node>().get_for(std::chrono::seconds(30)) != next) {
    std::fprintf(stderr, "troupe_hello: rank %u: the actor on node %u answered from elsewhere\n", me, next);
    return 1;
  }
  const char* asked = std::getenv("TROUPE_THREADS");
  const std::string threads = asked != nullptr && *asked != '\0' ? std::to_string(rt.threads()) : "unset";
  std::printf("hello rank=%u size=%zu host=%s role=%s threads=%s\n", me, rt.size(), rt.cluster().node(me).host.c_str(),
              rt.config().role.c_str(), threads.c_str());
  std::fflush(stdout);

  if (die_rank >= 0 && die_rank < static_cast<int>(rt.size())) {
    const auto victim = static_cast<troupe::NodeId>(die_rank);
    if (me == victim) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      std::printf("dying rank=%u\n", me);
      std::fflush(stdout);
      kill(getpid(), SIGKILL);
    }
    if (!rt.wait_cluster([&](const troupe::ClusterState& s) { return !s.alive(victim); }, std::chrono::seconds(20))) {
      std::fprintf(stderr, "troupe_hello: rank %u never saw rank %u lost\n", me, victim);
      return 1;
    }
    std::printf("survivor rank=%u\n", me);
    std::fflush(stdout);
  }
  return rt.finish();
}
