// A troupe program that some other MPI program started with MPI_Comm_spawn is
// a cluster of its own: it has an MPI parent, but it was not started by
// Runtime::add_nodes, so it must not wait to join the parent's cluster.
//
//   spawned_test --spawner   plain MPI (no troupe): spawns two copies of this
//                            program, checks what each reports, exits 0 or 1
//   spawned_test             (as spawned) troupe on its own 2-process world:
//                            an actor on the other node answers an ask; each
//                            process reports 1 for success to the spawner
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <unistd.h>

#include "troupe/remote.hpp"
#include "troupe/troupe.hpp"

namespace spawned {
class Where {
 public:
  troupe::NodeId node() const { return troupe::runtime().node(); }
};
TROUPE_REMOTE(Where, troupe::init<>, &Where::node);
}  // namespace spawned

namespace {

constexpr int kTagReport = 5;
constexpr int kChildren = 2;

int spawner() {
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  char exe[4096] = {};
  if (readlink("/proc/self/exe", exe, sizeof exe - 1) <= 0) return 1;
  char* no_args[] = {nullptr};
  MPI_Comm children = MPI_COMM_NULL;
  int errcodes[kChildren] = {};
  MPI_Comm_spawn(exe, no_args, kChildren, MPI_INFO_NULL, 0, MPI_COMM_SELF, &children, errcodes);
  int ok = 0;
  for (int i = 0; i < kChildren; ++i) {
    int report = 0;
    MPI_Recv(&report, 1, MPI_INT, i, kTagReport, children, MPI_STATUS_IGNORE);
    std::printf("spawner: child %d reports %d\n", i, report);
    ok += report == 1 ? 1 : 0;
  }
  MPI_Comm_disconnect(&children);
  MPI_Finalize();
  std::printf("spawner: %s\n", ok == kChildren ? "OK" : "FAILED");
  return ok == kChildren ? 0 : 1;
}

int spawned_child(int argc, char** argv) {
  troupe::Runtime rt(argc, argv);  // starts MPI; has a parent, but no joiner's mark
  int report = 0;
  try {
    const auto other = static_cast<troupe::NodeId>(1 - rt.node());
    auto w = rt.spawn_on<spawned::Where>(other).get_for(std::chrono::seconds(30));
    const bool answered = w.ask<&spawned::Where::node>().get_for(std::chrono::seconds(30)) == other;
    report = rt.size() == kChildren && !rt.joined_later() && answered ? 1 : 0;
    if (report != 1)
      std::fprintf(stderr, "spawned node %u: size %zu, joined_later %d, answered %d\n", rt.node(), rt.size(),
                   rt.joined_later() ? 1 : 0, answered ? 1 : 0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spawned node %u: %s\n", rt.node(), e.what());
  }
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  MPI_Send(&report, 1, MPI_INT, 0, kTagReport, parent);
  MPI_Comm_disconnect(&parent);
  return rt.finish();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--spawner") == 0) return spawner();
  return spawned_child(argc, argv);
}
