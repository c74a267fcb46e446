// Many-to-one: S sender actors (default 4) each send M small messages
// (default 1,000,000) to one receiver actor. CAF 0.17 side (see fanin_troupe.cpp).
#include <caf/all.hpp>

#include <vector>

#include "caf_common.hpp"
#include "harness.hpp"

namespace {

using go_atom = caf::atom_constant<caf::atom("go")>;
using done_atom = caf::atom_constant<caf::atom("done")>;

struct receiver_state {
  int64_t expected = 0;
  int64_t got = 0;
  int64_t sum = 0;
  bool waiting = false;
  caf::response_promise rp;
};

caf::behavior receiver_actor(caf::stateful_actor<receiver_state>* self, int64_t expected) {
  self->state.expected = expected;
  return {
      [=](int64_t x) {
        auto& st = self->state;
        st.sum += x;
        if (++st.got == st.expected && st.waiting) st.rp.deliver(st.sum);
      },
      [=](done_atom) -> caf::result<int64_t> {
        auto& st = self->state;
        if (st.got == st.expected) return st.sum;
        st.waiting = true;
        st.rp = self->make_response_promise();
        return st.rp;
      },
  };
}

caf::behavior sender_actor(caf::event_based_actor* self, caf::actor to, int64_t chunk) {
  return {
      [=](go_atom, int64_t from, int64_t until) {
        const int64_t end = std::min(until, from + chunk);
        for (int64_t i = from; i < end; ++i) self->send(to, i);
        if (end < until) self->send(self, go_atom::value, end, until);
      },
  };
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = bench::parse_options(argc, argv);
  const long senders = opt.get("senders", 4, false);
  const long m = opt.get("messages", 1000000);
  const long chunk = opt.get("chunk", m, false);

  auto samples = bench::run_reps(opt, "fanin", [&](bench::Sample& s) {
    caf::actor_system_config cfg;
    bench_caf::configure(cfg, opt);
    caf::actor_system sys{cfg};
    const int64_t total = senders * m;
    auto recv = sys.spawn(receiver_actor, total);
    std::vector<caf::actor> snd;
    for (long i = 0; i < senders; ++i) snd.push_back(sys.spawn(sender_actor, recv, int64_t{chunk}));
    caf::scoped_actor self{sys};
    // Ask for the result first, so the receiver handles `done` before the flood.
    auto reply = self->request(recv, caf::infinite, done_atom::value);
    const double rss0 = bench::rss_bytes();
    const double c0 = bench::cpu_seconds();
    const auto t0 = bench::Clock::now();
    for (auto& x : snd) caf::anon_send(x, go_atom::value, int64_t{0}, int64_t{m});
    int64_t sum = -1;
    std::move(reply).receive([&](int64_t v) { sum = v; }, [&](caf::error& e) { throw std::runtime_error(sys.render(e)); });
    const double dt = bench::seconds_since(t0);
    if (sum != senders * (m * (m - 1) / 2)) throw std::runtime_error("wrong sum");
    s.set("msgs_per_s", static_cast<double>(total) / dt);
    s.set("ns_per_msg", dt * 1e9 / static_cast<double>(total));
    s.set("cpu_util", (bench::cpu_seconds() - c0) / dt);
    s.set("peak_rss_growth_mb", (bench::peak_rss_bytes() - rss0) / 1e6);
    s.set("os_threads", bench::os_threads());
    caf::anon_send_exit(recv, caf::exit_reason::user_shutdown);
    for (auto& x : snd) caf::anon_send_exit(x, caf::exit_reason::user_shutdown);
  });
  bench::report(opt, "fanin", "caf", {{"msgs_per_s", "msgs/s", true}}, samples,
                {{"senders", static_cast<double>(senders)},
                 {"messages_per_sender", static_cast<double>(m)},
                 {"chunk", static_cast<double>(chunk)}});
  return 0;
}
