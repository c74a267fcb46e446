// The cluster runtime's constructors: MPI start-up (or adoption), command-line
// and environment options, then the core plus the distributed half.
#include <mpi.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "registry/name_services.hpp"
#include "remote/remote_node.hpp"
#include "remote/wire_agreement.hpp"
#include "topology/placement.hpp"
#include "troupe/detail/fresh_memory.hpp"
#include "troupe/mpi.hpp"
#include "troupe/runtime.hpp"
#include "troupe/wire/registry.hpp"

namespace troupe {
namespace {

// Failure detection can be tuned per launch (e.g. slower timeouts for
// sanitizer builds, which run many times slower).
// A setting of 0 ms, or one that is not a number, would have every node take
// its neighbour for lost at the first look: refused with a clear error.
constexpr std::uint64_t kLongestHeartbeatMs = 24ull * 3600 * 1000;
std::chrono::milliseconds heartbeat_ms(const char* name, const char* v) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long ms = std::strtoull(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || *v == '-' || ms == 0 || ms > kLongestHeartbeatMs)
    throw Error(std::string("troupe: ") + name + "='" + v + "' is not a number of milliseconds from 1 to " +
                std::to_string(kLongestHeartbeatMs));
  return std::chrono::milliseconds(ms);
}

void apply_detector_env(Config& cfg) {
  if (const char* v = std::getenv("TROUPE_HEARTBEAT_PERIOD_MS"); v != nullptr && *v != '\0')
    cfg.heartbeat_period = heartbeat_ms("TROUPE_HEARTBEAT_PERIOD_MS", v);
  if (const char* v = std::getenv("TROUPE_HEARTBEAT_TIMEOUT_MS"); v != nullptr && *v != '\0')
    cfg.heartbeat_timeout = heartbeat_ms("TROUPE_HEARTBEAT_TIMEOUT_MS", v);
  const auto period = cfg.heartbeat_period.count(), timeout = cfg.heartbeat_timeout.count();
  if (period <= 0 || timeout <= period || static_cast<std::uint64_t>(timeout) > kLongestHeartbeatMs)
    throw Error("troupe: the heartbeat timeout (" + std::to_string(timeout) +
                " ms) must be longer than the heartbeat period (" + std::to_string(period) + " ms), both positive");
}

// Both constructors (an adopting application's ranks are launched by the
// same scripts, which set TROUPE_THREADS and TROUPE_ROLE). The role: the
// command line wins, then the environment, then the program's Config. The
// worker count: the command line or the Config, then the environment.
void apply_env(Config& cfg, const std::string& role_flag) {
  if (!role_flag.empty()) {
    cfg.role = role_flag;
  } else if (const char* env = std::getenv("TROUPE_ROLE"); env != nullptr && *env != '\0') {
    cfg.role = env;
  }
  if (cfg.role.empty()) cfg.role = "default";
  if (cfg.threads == 0) {
    if (const char* env = std::getenv("TROUPE_THREADS"); env != nullptr && *env != '\0')
      cfg.threads = std::strtoul(env, nullptr, 10);
  }
  apply_detector_env(cfg);
}

// Takes --troupe-NAME=VALUE options out of argv.
void take_options(int& argc, char**& argv, Config& cfg) {
  std::string role_flag;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strncmp(a, "--troupe-role=", 14) == 0) {
      role_flag = a + 14;
    } else if (std::strncmp(a, "--troupe-threads=", 17) == 0) {
      cfg.threads = std::strtoul(a + 17, nullptr, 10);
    } else if (std::strcmp(a, detail::kJoinerArg) == 0) {
      // add_nodes() started us (RemoteNode reads it from /proc/self/cmdline).
    } else {
      argv[out++] = argv[i];
    }
  }
  if (argc > 0) {
    argv[out] = nullptr;
    argc = out;
  }
  apply_env(cfg, role_flag);
}

}  // namespace

Runtime::Runtime(int& argc, char**& argv, Config cfg) {
  take_options(argc, argv, cfg);
  // Before MPI starts, so that an MPI library that sets malloc's thresholds
  // for itself while it initialises has the last word (the core's own call,
  // later, does nothing a second time).
  if (cfg.keep_freed_memory) (void)detail::keep_freed_memory();
  int initialised = 0;
  MPI_Initialized(&initialised);
  bool owns = false;
  if (!initialised) {
    // finish() already synchronises the live nodes; the fence Open MPI runs
    // inside MPI_Finalize also waits for lost ranks and can hang after a
    // death. Skip it (the user's own setting wins).
    setenv("OMPI_MCA_async_mpi_finalize", "1", 0);
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    if (provided < MPI_THREAD_MULTIPLE) {
      MPI_Finalize();
      throw Error("troupe: this MPI does not offer MPI_THREAD_MULTIPLE");
    }
    owns = true;
  } else {
    // The application started MPI itself: it must still be running, with
    // the thread level troupe's threads need.
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) throw Error("troupe: MPI has been finalized already");
    int provided = 0;
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_MULTIPLE)
      throw Error("troupe: MPI was initialised below MPI_THREAD_MULTIPLE; troupe's threads need it");
  }
  MPI_Comm world = MPI_COMM_WORLD;
  start_cluster(&world, owns, std::move(cfg));
}

Runtime::Runtime(const AdoptedComm& comm, Config cfg) {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) throw Error("troupe: adopt(comm) needs MPI to be initialised by the application");
  int provided = 0;
  MPI_Query_thread(&provided);
  if (provided < MPI_THREAD_MULTIPLE)
    throw Error("troupe: MPI was initialised below MPI_THREAD_MULTIPLE; troupe's threads need it");
  apply_env(cfg, {});
  start_cluster(&comm.comm, false, std::move(cfg));
}

void Runtime::start_cluster(const void* comm, bool owns_mpi, Config cfg) {
  // Over TCP, a dead peer's socket raises SIGPIPE: survivors must not die of it.
  std::signal(SIGPIPE, SIG_IGN);
  auto& registry = detail::WireRegistry::instance();
  registry.freeze();
  // Every rank learns every rank's problems, so that all refuse together.
  auto problems = detail::wire_disagreements(*static_cast<const MPI_Comm*>(comm), registry.table(), registry.problems());
  if (!problems.empty()) {
    std::string all;
    for (auto& p : problems) all += p + "\n";
    if (owns_mpi) MPI_Finalize();
    throw Error(all);
  }
  auto choice = detail::choose_placement(cfg);
  cfg.threads = choice.threads;
  core_ = std::make_unique<detail::Core>(*this, std::move(cfg), std::move(choice.placement));
  link_ = std::make_unique<detail::RemoteNode>(*this, *core_, *static_cast<const MPI_Comm*>(comm), owns_mpi);
  names();  // registry and groups replicas exist from the start
}

std::vector<NodeId> Runtime::add_nodes(int count, const std::vector<std::string>& args) {
  auto* node = dynamic_cast<detail::RemoteNode*>(link_.get());
  if (node == nullptr) throw Error("troupe: add_nodes needs a cluster runtime");
  return node->add_nodes(count, args);
}

bool Runtime::joined_later() const {
  auto* node = dynamic_cast<detail::RemoteNode*>(link_.get());
  return node != nullptr && node->joined_later();
}

}  // namespace troupe
