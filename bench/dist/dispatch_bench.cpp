// Dispatchers (run on 4 ranks: node 0 sends, nodes 1..3 form role "worker"):
//   cost  per-message cost of each strategy beside a direct tell to a ref
//   skew  tasks whose cost depends on the worker (node 1 is 4x slower):
//         round_robin vs least_busy, per-task latency (p50, p99) and makespan
// Output: JSON lines on rank 0.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "troupe/mpi.hpp"
#include "troupe/remote.hpp"
#include "troupe/role.hpp"
#include "troupe/troupe.hpp"

namespace db {

class Sink {
 public:
  void take(std::uint64_t x) { sum_ += x; }
  std::uint64_t sum() const { return sum_; }
  /// Busy work for us_per_unit * units, slower on node 1.
  troupe::NodeId work(int units) {
    const int factor = troupe::runtime().node() == 1 ? 4 : 1;
    auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(100 * units * factor);
    volatile double x = 1;
    while (std::chrono::steady_clock::now() < end) x = x * 1.0000001;
    return troupe::runtime().node();
  }

 private:
  std::uint64_t sum_ = 0;
};
TROUPE_REMOTE(Sink, troupe::init<>, &Sink::take, &Sink::sum, &Sink::work);

}  // namespace db

namespace {
using Clock = std::chrono::steady_clock;
double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

template <class D>
double per_message_us(troupe::Runtime&, const D& d, int n, const std::vector<troupe::ActorRef<db::Sink>>& sync) {
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) d.template tell<&db::Sink::take>(std::uint64_t(i));
  for (auto& s : sync) s.ask<&db::Sink::sum>().get();
  return secs(Clock::now() - t0) / n * 1e6;
}

struct Direct {
  troupe::ActorRef<db::Sink> ref;
  template <auto M, class... A>
  void tell(A&&... a) const {
    ref.tell<M>(std::forward<A>(a)...);
  }
};

}  // namespace

int main(int argc, char** argv) {
  setenv("TROUPE_ROLE", "worker", 0);
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) setenv("TROUPE_ROLE", "sender", 1);
  {
    troupe::Runtime rt(troupe::adopt(MPI_COMM_WORLD));
    auto sink = rt.spawn<db::Sink>();
    if (rt.config().role == "worker") rt.register_local("sink", sink);
    MPI_Barrier(MPI_COMM_WORLD);  // (benchmark only) names registered everywhere
    if (rank == 0) {
      auto role = rt.role("worker");
      std::vector<troupe::ActorRef<db::Sink>> sinks;
      for (auto n : role.nodes()) sinks.push_back(troupe::ActorRef<db::Sink>(&rt.core(), n, 1));
      const int n = 200000;
      auto emit = [](const char* what, double us, double base) {
        std::printf("{\"bench\":\"dispatch_cost\",\"strategy\":\"%s\",\"us_per_message\":%.4f,\"vs_direct\":%.2f}\n",
                    what, us, us / base);
        std::fflush(stdout);
      };
      per_message_us(rt, Direct{sinks[0]}, n / 4, sinks);  // warm-up
      const double direct = per_message_us(rt, Direct{sinks[0]}, n, sinks);
      emit("direct tell", direct, direct);
      emit("first", per_message_us(rt, role.first<db::Sink>("sink"), n, sinks), direct);
      emit("round_robin", per_message_us(rt, role.round_robin<db::Sink>("sink"), n, sinks), direct);
      emit("random", per_message_us(rt, role.random<db::Sink>("sink"), n, sinks), direct);
      emit("next", per_message_us(rt, role.next<db::Sink>("sink"), n, sinks), direct);
      emit("broadcast (3 nodes)", per_message_us(rt, role.broadcast<db::Sink>("sink"), n / 3, sinks), direct);
      emit("least_busy", per_message_us(rt, role.least_busy<db::Sink>("sink"), 5000, sinks), direct);
      {
        // What least_busy costs besides the tell: one mailbox-size ask to each
        // of the 3 candidates per message, in flight all at once.
        const int asks = 15000;
        std::vector<troupe::Future<std::size_t>> sizes;
        sizes.reserve(asks);
        auto t0 = Clock::now();
        for (int i = 0; i < asks; ++i) sizes.push_back(sinks[static_cast<std::size_t>(i) % sinks.size()].mailbox_size());
        for (auto& f : sizes) f.get();
        const double per_three = secs(Clock::now() - t0) / (asks / 3) * 1e6;
        emit("3 mailbox-size asks, pipelined", per_three, direct);
      }

      // Skewed work: 240 tasks of 1..8 units, all submitted at once.
      for (const char* which : {"round_robin", "least_busy"}) {
        std::vector<double> lat;
        std::vector<troupe::Future<troupe::NodeId>> fs;
        std::vector<Clock::time_point> start;
        auto t0 = Clock::now();
        for (int k = 0; k < 240; ++k) {
          const int units = 1 + (k * 7) % 8;
          start.push_back(Clock::now());
          if (std::string(which) == "least_busy") {
            fs.push_back(role.least_busy<db::Sink>("sink").ask<&db::Sink::work>(units));
          } else {
            fs.push_back(role.round_robin<db::Sink>("sink").ask<&db::Sink::work>(units));
          }
          // a steady stream: one task every 0.2 ms
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        int on_slow = 0;
        for (std::size_t k = 0; k < fs.size(); ++k) {
          if (fs[k].get() == 1) ++on_slow;
          lat.push_back(secs(Clock::now() - start[k]) * 1e3);
        }
        const double makespan = secs(Clock::now() - t0) * 1e3;
        std::sort(lat.begin(), lat.end());
        std::printf("{\"bench\":\"dispatch_skew\",\"strategy\":\"%s\",\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"makespan_ms\":%.1f,"
                    "\"tasks_on_slow_node\":%d}\n",
                    which, lat[lat.size() / 2], lat[lat.size() * 99 / 100], makespan, on_slow);
        std::fflush(stdout);
      }
    }
    rt.finish();
  }
  MPI_Finalize();
  return 0;
}
