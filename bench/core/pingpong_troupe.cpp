// Ping-pong between two actors, troupe side (see pingpong_caf.cpp for CAF).
//
// Two variants, each a round trip between two actors on the worker threads:
//   tell: Ping tells Pong, Pong tells Ping back (one-way messages both ways);
//   ask:  Ping co_awaits Pong's reply to an ask (request/response with a future).
// The driver thread only starts a run and waits for its end.
#include <troupe/troupe.hpp>

#include "harness.hpp"
#include "troupe_common.hpp"

namespace {

class Ping;

class Pong {
 public:
  void bind(troupe::ActorRef<Ping> peer) { peer_ = std::move(peer); }
  void ping(long k);                // tell variant: answers with Ping::pong
  long echo(long k) { return k; }   // ask variant

 private:
  troupe::ActorRef<Ping> peer_;
};

class Ping {
 public:
  explicit Ping(troupe::ActorRef<Pong> pong) : pong_(std::move(pong)) {}

  /// tell variant: n round trips; the future completes after the last one.
  troupe::Future<long> run_tell(long n) {
    left_ = n;
    done_ = troupe::Promise<long>();
    auto f = done_.get_future();
    pong_.tell<&Pong::ping>(n);
    return f;
  }
  void pong(long k) {
    if (--left_ == 0) {
      done_.set_value(k);
      return;
    }
    pong_.tell<&Pong::ping>(k - 1);
  }

  /// ask variant: n sequential asks, each awaited before the next.
  troupe::Task<long> run_ask(long n) {
    long sum = 0;
    for (long i = 0; i < n; ++i) sum += co_await pong_.ask<&Pong::echo>(i);
    co_return sum;
  }

 private:
  troupe::ActorRef<Pong> pong_;
  long left_ = 0;
  troupe::Promise<long> done_;
};

void Pong::ping(long k) { peer_.tell<&Ping::pong>(k); }

}  // namespace

int main(int argc, char** argv) {
  auto opt = bench::parse_options(argc, argv);
  const long n = opt.get("round-trips", 1000000);
  const long warm = std::max(1L, n / 10);

  for (const char* mode : {"tell", "ask"}) {
    if (opt.extra.count("mode") && opt.get_str("mode", "") != mode) continue;
    const bool tell = std::string(mode) == "tell";
    auto samples = bench::run_reps(opt, std::string("pingpong_") + mode, [&](bench::Sample& s) {
      troupe::Runtime rt(bench_troupe::config(opt));
      auto pong = rt.spawn<Pong>();
      auto ping = rt.spawn<Ping>(pong);
      pong.tell<&Pong::bind>(ping);
      auto run = [&](long k) {
        return tell ? ping.ask<&Ping::run_tell>(k).get() : ping.ask<&Ping::run_ask>(k).get();
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
      rt.finish();
    });
    bench::report(opt, std::string("pingpong_") + mode, "troupe",
                  {{"round_trips_per_s", "round trips/s", true}}, samples,
                  {{"round_trips", static_cast<double>(n)}});
  }
  return 0;
}
