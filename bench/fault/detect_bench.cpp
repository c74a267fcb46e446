// Failure detection, measured on real ranks (run by bench/fault/run.sh):
//   detect_bench kill VICTIM   the victim SIGKILLs itself at a random moment;
//                              every survivor records when it learnt of it.
//   detect_bench soak SECONDS  every rank keeps all its workers busy (full CPU
//                              load, oversubscribed); counts nodes declared
//                              lost although nobody died (false positives).
// Times are wall-clock (one host, one clock), written to $TROUPE_BENCH_DIR.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "troupe/troupe.hpp"

namespace {

long long now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string dir() {
  const char* d = std::getenv("TROUPE_BENCH_DIR");
  return d != nullptr ? d : "/tmp";
}

/// Keeps a worker busy in 20 ms slices until told to stop.
class Burner {
 public:
  explicit Burner(std::atomic<bool>* stop) : stop_(stop) {}
  void burn() {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
    volatile double x = 1;
    while (std::chrono::steady_clock::now() < end) x = x * 1.0000001 + 1e-9;
    if (!stop_->load()) troupe::self<Burner>().tell<&Burner::burn>();
  }

 private:
  std::atomic<bool>* stop_;
};

}  // namespace

int main(int argc, char** argv) {
  troupe::Runtime rt(argc, argv);
  const std::string mode = argc > 1 ? argv[1] : "";
  const auto me = rt.node();
  if (mode == "kill") {
    const troupe::NodeId victim = argc > 2 ? static_cast<troupe::NodeId>(std::atoi(argv[2])) : 1;
    std::mt19937 rng(static_cast<unsigned>(now_ns()));
    if (me == victim) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 700));
      std::ofstream(dir() + "/kill") << now_ns() << "\n";
      kill(getpid(), SIGKILL);
    }
    const bool seen =
        rt.wait_cluster([&](const troupe::ClusterState& s) { return !s.alive(victim); }, std::chrono::seconds(20));
    std::ofstream(dir() + "/detect." + std::to_string(me)) << (seen ? now_ns() : -1) << "\n";
    return rt.finish();
  }
  if (mode == "soak") {
    const int seconds = argc > 2 ? std::atoi(argv[2]) : 30;
    std::atomic<bool> stop{false};
    for (std::size_t i = 0; i < rt.threads(); ++i) rt.spawn<Burner>(&stop).tell<&Burner::burn>();
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    stop = true;
    const auto lost = rt.size() - rt.cluster().alive_count();
    std::ofstream(dir() + "/soak." + std::to_string(me)) << lost << "\n";
    std::printf("rank %u: %zu node(s) declared lost after %d s of full load\n", me, lost, seconds);
    return rt.finish();
  }
  std::fprintf(stderr, "usage: detect_bench kill VICTIM | soak SECONDS\n");
  return rt.finish() + 2;
}
