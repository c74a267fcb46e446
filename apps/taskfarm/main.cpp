// taskfarm: a coordinator role hands integration tasks to a worker role through
// the least_busy dispatcher; task costs are skewed on purpose, so the faster a
// worker drains its mailbox the more it gets.
//   troupe-run --role coordinator=1 --role worker=3 taskfarm [--tasks N]
// Integrates f(x) = sin(x)^2 over [0, 100*pi] in N pieces by the midpoint rule
// (pieces far from 0 use finer grids: more work) and checks against 50*pi.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <troupe/remote.hpp>
#include <troupe/role.hpp>
#include <troupe/troupe.hpp>

namespace farm {

class Integrator {
 public:
  /// The midpoint rule on [a, b] with n steps; returns (integral, who).
  std::pair<double, troupe::NodeId> integrate(double a, double b, long n) {
    const double h = (b - a) / static_cast<double>(n);
    double s = 0;
    for (long i = 0; i < n; ++i) {
      const double x = a + (static_cast<double>(i) + 0.5) * h;
      s += std::sin(x) * std::sin(x);
    }
    ++done_;
    return {s * h, troupe::runtime().node()};
  }
  long done() const { return done_; }

 private:
  long done_ = 0;
};
TROUPE_REMOTE(Integrator, troupe::init<>, &Integrator::integrate, &Integrator::done);

}  // namespace farm

int main(int argc, char** argv) {
  troupe::Runtime rt(argc, argv);  // role from --troupe-role=NAME
  int tasks = 64;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--tasks") == 0 && i + 1 < argc) tasks = std::stoi(argv[++i]);

  if (rt.config().role == "worker") {
    auto integrator = rt.spawn<farm::Integrator>();
    rt.register_local("integrator", integrator);        // what the dispatcher targets
    rt.groups().join("integrators", integrator).get();  // "I am ready", cluster-wide
  }

  int rc = 0;
  if (rt.config().role == "coordinator") {
    auto workers = rt.role("worker");
    if (workers.nodes().empty()) {
      std::fprintf(stderr, "taskfarm: no worker role (launch with --role coordinator=1 --role worker=N)\n");
      rc = 2;
    } else {
      // Wait until every worker announced itself in the process group.
      while (rt.groups().members<farm::Integrator>("integrators").size() < workers.nodes().size())
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      std::printf("taskfarm: %d tasks over %zu workers (least_busy)\n", tasks, workers.nodes().size());
      auto t0 = std::chrono::steady_clock::now();
      const double pi = std::acos(-1.0), end = 100 * pi;
      auto dispatcher = workers.least_busy<farm::Integrator>("integrator");
      std::vector<troupe::Future<std::pair<double, troupe::NodeId>>> parts;
      for (int k = 0; k < tasks; ++k) {
        const double a = end * k / tasks, b = end * (k + 1) / tasks;
        const long steps = 20000L * (1 + (k % 8) * (k % 8));  // skewed: up to 50x more work
        parts.push_back(dispatcher.ask<&farm::Integrator::integrate>(a, b, steps));
      }
      double total = 0;
      std::map<troupe::NodeId, int> per_worker;
      int received = 0;
      for (auto& f : parts) {
        auto [v, who] = f.get();
        total += v;
        per_worker[who]++;
        if (++received % (tasks / 4 > 0 ? tasks / 4 : 1) == 0)
          std::printf("  %3d / %d tasks done\n", received, tasks);
      }
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      for (auto& [w, n] : per_worker) std::printf("  worker node %u took %d tasks\n", w, n);
      const double exact = 50 * pi;
      const bool ok = std::abs(total - exact) < 1e-6;
      std::printf("taskfarm: integral %.9f, exact %.9f -> %s (%.3f s)\n", total, exact, ok ? "OK" : "WRONG", secs);
      rc = ok ? 0 : 1;
    }
  }
  rt.finish();
  return rc;
}
