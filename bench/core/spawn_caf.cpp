// Spawn and stop N actors (default 1,000,000), CAF 0.17 side (see spawn_troupe.cpp).
//
// The driver thread spawns N minimal event-based actors, keeping their
// handles, then sends each an exit message, drops the handles and waits until
// all have terminated (actor_system::await_all_actors_done). Memory is
// measured as on the troupe side. Each repetition is its own process.
#include <caf/all.hpp>

#include <vector>

#include "caf_common.hpp"
#include "harness.hpp"

namespace {

using poke_atom = caf::atom_constant<caf::atom("poke")>;

struct tiny_state {
  long n = 0;
};

caf::behavior tiny_actor(caf::stateful_actor<tiny_state>* self) {
  return {
      [=](poke_atom) { ++self->state.n; },
  };
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = bench::parse_options(argc, argv);
  const long n = opt.get("actors", 1000000);

  auto samples = bench::run_reps(opt, "spawn", [&](bench::Sample& s) {
    caf::actor_system_config cfg;
    bench_caf::configure(cfg, opt);
    caf::actor_system sys{cfg};
    std::vector<caf::actor> refs(static_cast<std::size_t>(n));
    const double rss0 = bench::rss_bytes();
    const auto t0 = bench::Clock::now();
    for (auto& r : refs) r = sys.spawn(tiny_actor);
    const double t_spawn = bench::seconds_since(t0);
    const double rss1 = bench::rss_bytes();
    const auto t1 = bench::Clock::now();
    for (auto& r : refs) caf::anon_send_exit(r, caf::exit_reason::user_shutdown);
    refs = {};
    sys.await_all_actors_done();
    const double t_stop = bench::seconds_since(t1);
    const double total = t_spawn + t_stop;
    s.set("total_s", total);
    s.set("spawn_s", t_spawn);
    s.set("stop_s", t_stop);
    s.set("actors_per_s", static_cast<double>(n) / total);
    s.set("peak_bytes_per_actor", (bench::peak_rss_bytes() - rss0) / static_cast<double>(n));
    s.set("rss_bytes_per_actor", (rss1 - rss0) / static_cast<double>(n));
  });
  bench::report(opt, "spawn", "caf", {{"total_s", "s", false}, {"peak_bytes_per_actor", "bytes/actor", false}},
                samples, {{"actors", static_cast<double>(n)}});
  return 0;
}
