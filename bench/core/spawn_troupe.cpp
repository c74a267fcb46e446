// Spawn and stop N actors (default 1,000,000), troupe side (see spawn_caf.cpp).
//
// The driver thread spawns N minimal actors, keeping their references, then
// stops every one, drops the references and waits until all have exited
// (Runtime::finish, which returns once no actor has work left). Memory: the
// resident-set growth over the phase (peak from getrusage, and resident right
// after the spawns, from /proc/self/statm) divided by N. The vector of
// references is allocated and touched before the baseline, so it is not
// counted. Each repetition is its own process.
#include <troupe/troupe.hpp>

#include <vector>

#include "harness.hpp"
#include "troupe_common.hpp"

namespace {

class Tiny {
 public:
  void poke() { ++n_; }

 private:
  long n_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  auto opt = bench::parse_options(argc, argv);
  const long n = opt.get("actors", 1000000);

  auto samples = bench::run_reps(opt, "spawn", [&](bench::Sample& s) {
    troupe::Runtime rt(bench_troupe::config(opt));
    std::vector<troupe::ActorRef<Tiny>> refs(static_cast<std::size_t>(n));
    const double rss0 = bench::rss_bytes();
    const auto t0 = bench::Clock::now();
    for (auto& r : refs) r = rt.spawn<Tiny>();
    const double t_spawn = bench::seconds_since(t0);
    const double rss1 = bench::rss_bytes();
    const auto t1 = bench::Clock::now();
    for (auto& r : refs) r.stop();
    refs = {};
    rt.finish();
    const double t_stop = bench::seconds_since(t1);
    const double total = t_spawn + t_stop;
    s.set("total_s", total);
    s.set("spawn_s", t_spawn);
    s.set("stop_s", t_stop);
    s.set("actors_per_s", static_cast<double>(n) / total);
    s.set("peak_bytes_per_actor", (bench::peak_rss_bytes() - rss0) / static_cast<double>(n));
    s.set("rss_bytes_per_actor", (rss1 - rss0) / static_cast<double>(n));
  });
  bench::report(opt, "spawn", "troupe",
                {{"total_s", "s", false}, {"peak_bytes_per_actor", "bytes/actor", false}}, samples,
                {{"actors", static_cast<double>(n)}});
  return 0;
}
