// Ping-pong between two actors, CAF 0.17 side (see pingpong_troupe.cpp).
//
//   tell: ping sends to pong, pong sends back (one-way messages both ways);
//   ask:  ping requests pong and continues in the reply handler (request().then).
#include <caf/all.hpp>

#include "caf_common.hpp"
#include "harness.hpp"

namespace {

using bind_atom = caf::atom_constant<caf::atom("bind")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using pong_atom = caf::atom_constant<caf::atom("pong")>;
using echo_atom = caf::atom_constant<caf::atom("echo")>;
using run_tell_atom = caf::atom_constant<caf::atom("runtell")>;
using run_ask_atom = caf::atom_constant<caf::atom("runask")>;

struct pong_state {
  caf::actor peer;
};

caf::behavior pong_actor(caf::stateful_actor<pong_state>* self) {
  return {
      [=](bind_atom, caf::actor peer) { self->state.peer = std::move(peer); },
      [=](ping_atom, int64_t k) { self->send(self->state.peer, pong_atom::value, k); },
      [=](echo_atom, int64_t k) { return k; },
  };
}

struct ping_state {
  caf::actor pong;
  int64_t left = 0;
  int64_t sum = 0;
  caf::response_promise rp;
};

void ask_next(caf::stateful_actor<ping_state>* self, int64_t i) {
  self->request(self->state.pong, caf::infinite, echo_atom::value, i).then([=](int64_t v) {
    auto& st = self->state;
    st.sum += v;
    if (i + 1 == st.left) {
      st.rp.deliver(st.sum);
      return;
    }
    ask_next(self, i + 1);
  });
}

caf::behavior ping_actor(caf::stateful_actor<ping_state>* self, caf::actor pong) {
  self->state.pong = std::move(pong);
  return {
      [=](run_tell_atom, int64_t n) -> caf::response_promise {
        auto& st = self->state;
        st.left = n;
        st.rp = self->make_response_promise();
        self->send(st.pong, ping_atom::value, n);
        return st.rp;
      },
      [=](pong_atom, int64_t k) {
        auto& st = self->state;
        if (--st.left == 0) {
          st.rp.deliver(k);
          return;
        }
        self->send(st.pong, ping_atom::value, k - 1);
      },
      [=](run_ask_atom, int64_t n) -> caf::response_promise {
        auto& st = self->state;
        st.left = n;
        st.sum = 0;
        st.rp = self->make_response_promise();
        ask_next(self, 0);
        return st.rp;
      },
  };
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = bench::parse_options(argc, argv);
  const long n = opt.get("round-trips", 1000000);
  const long warm = std::max(1L, n / 10);

  for (const char* mode : {"tell", "ask"}) {
    if (opt.extra.count("mode") && opt.get_str("mode", "") != mode) continue;
    const bool tell = std::string(mode) == "tell";
    auto samples = bench::run_reps(opt, std::string("pingpong_") + mode, [&](bench::Sample& s) {
      caf::actor_system_config cfg;
      bench_caf::configure(cfg, opt);
      caf::actor_system sys{cfg};
      auto pong = sys.spawn(pong_actor);
      auto ping = sys.spawn(ping_actor, pong);
      caf::anon_send(pong, bind_atom::value, ping);
      auto run = [&](int64_t k) {
        return tell ? bench_caf::request_blocking<int64_t>(sys, ping, run_tell_atom::value, k)
                    : bench_caf::request_blocking<int64_t>(sys, ping, run_ask_atom::value, k);
      };
      run(warm);
      const double c0 = bench::cpu_seconds();
      const auto t0 = bench::Clock::now();
      run(n);
      const double dt = bench::seconds_since(t0);
      s.set("round_trips_per_s", static_cast<double>(n) / dt);
      s.set("us_per_round_trip", dt * 1e6 / static_cast<double>(n));
      s.set("cpu_util", (bench::cpu_seconds() - c0) / dt);
      s.set("os_threads", bench::os_threads());
      caf::anon_send_exit(ping, caf::exit_reason::user_shutdown);
      caf::anon_send_exit(pong, caf::exit_reason::user_shutdown);
    });
    bench::report(opt, std::string("pingpong_") + mode, "caf", {{"round_trips_per_s", "round trips/s", true}},
                  samples, {{"round_trips", static_cast<double>(n)}});
  }
  return 0;
}
