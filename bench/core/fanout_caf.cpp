// Fan-out/fan-in, CAF 0.17 side (see fanout_troupe.cpp).
//
//   ask:  the leader requests every worker (request().then) and counts the
//         replies in the response handlers;
//   tell: the leader sends every worker a message carrying its own handle and
//         the workers send their answers back; the leader counts them.
// The last reply of a round starts the next round or answers the driver.
#include <caf/all.hpp>

#include <vector>

#include "caf_common.hpp"
#include "harness.hpp"

namespace {

using work_atom = caf::atom_constant<caf::atom("work")>;
using reply_atom = caf::atom_constant<caf::atom("reply")>;
using rounds_atom = caf::atom_constant<caf::atom("rounds")>;
using rounds_tell_atom = caf::atom_constant<caf::atom("roundstell")>;

caf::behavior worker_actor(caf::event_based_actor* self) {
  return {
      [](work_atom, int64_t x) { return x + 1; },
      [=](work_atom, const caf::actor& leader, int64_t x) { self->send(leader, reply_atom::value, x + 1); },
  };
}

struct leader_state {
  std::vector<caf::actor> workers;
  int64_t rounds_left = 0;
  std::size_t pending = 0;
  int64_t total = 0;
  caf::response_promise rp;
};
using leader_ptr = caf::stateful_actor<leader_state>*;

// One reply of either variant arrived.
void on_reply(leader_ptr self, int64_t v, void (*next_round)(leader_ptr)) {
  auto& s = self->state;
  s.total += v;
  if (--s.pending != 0) return;
  if (--s.rounds_left == 0) {
    s.rp.deliver(s.total);
    return;
  }
  next_round(self);
}

void start_round_ask(leader_ptr self) {
  auto& st = self->state;
  st.pending = st.workers.size();
  for (std::size_t i = 0; i < st.workers.size(); ++i)
    self->request(st.workers[i], caf::infinite, work_atom::value, static_cast<int64_t>(i)).then([=](int64_t v) {
      on_reply(self, v, start_round_ask);
    });
}

void start_round_tell(leader_ptr self) {
  auto& st = self->state;
  st.pending = st.workers.size();
  caf::actor me = caf::actor_cast<caf::actor>(self);
  for (std::size_t i = 0; i < st.workers.size(); ++i)
    self->send(st.workers[i], work_atom::value, me, static_cast<int64_t>(i));
}

caf::behavior leader_actor(leader_ptr self, std::vector<caf::actor> workers) {
  self->state.workers = std::move(workers);
  auto begin = [=](int64_t r, void (*first_round)(leader_ptr)) {
    auto& st = self->state;
    st.rounds_left = r;
    st.total = 0;
    st.rp = self->make_response_promise();
    first_round(self);
    return st.rp;
  };
  return {
      [=](rounds_atom, int64_t r) -> caf::response_promise { return begin(r, start_round_ask); },
      [=](rounds_tell_atom, int64_t r) -> caf::response_promise { return begin(r, start_round_tell); },
      [=](reply_atom, int64_t v) { on_reply(self, v, start_round_tell); },
  };
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = bench::parse_options(argc, argv);
  const long w = opt.get("workers", 10000, false);
  const long r = opt.get("rounds", 30);
  const long warm = std::max(1L, r / 10);

  for (const char* mode : {"ask", "tell"}) {
    if (opt.extra.count("mode") && opt.get_str("mode", "") != mode) continue;
    const bool ask = std::string(mode) == "ask";
    const std::string name = std::string("fanout_") + mode;
    auto samples = bench::run_reps(opt, name, [&](bench::Sample& s) {
      caf::actor_system_config cfg;
      bench_caf::configure(cfg, opt);
      caf::actor_system sys{cfg};
      std::vector<caf::actor> workers;
      workers.reserve(static_cast<std::size_t>(w));
      for (long i = 0; i < w; ++i) workers.push_back(sys.spawn(worker_actor));
      auto leader = sys.spawn(leader_actor, workers);
      auto run = [&](int64_t k) {
        return ask ? bench_caf::request_blocking<int64_t>(sys, leader, rounds_atom::value, k)
                   : bench_caf::request_blocking<int64_t>(sys, leader, rounds_tell_atom::value, k);
      };
      const int64_t expect_per_round = w * (w + 1) / 2;
      if (run(warm) != warm * expect_per_round) throw std::runtime_error("wrong sum");
      const double c0 = bench::cpu_seconds();
      const auto t0 = bench::Clock::now();
      const int64_t sum = run(r);
      const double dt = bench::seconds_since(t0);
      if (sum != r * expect_per_round) throw std::runtime_error("wrong sum");
      s.set("round_ms", dt * 1e3 / static_cast<double>(r));
      s.set("rounds_per_s", static_cast<double>(r) / dt);
      s.set("requests_per_s", static_cast<double>(r * w) / dt);
      s.set("cpu_util", (bench::cpu_seconds() - c0) / dt);
      s.set("os_threads", bench::os_threads());
      caf::anon_send_exit(leader, caf::exit_reason::user_shutdown);
      for (auto& a : workers) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    });
    bench::report(opt, name, "caf", {{"round_ms", "ms/round", false}, {"rounds_per_s", "rounds/s", true}}, samples,
                  {{"workers", static_cast<double>(w)}, {"rounds", static_cast<double>(r)}});
  }
  return 0;
}
