// Fan-out/fan-in, troupe side (see fanout_caf.cpp for CAF).
//
// A leader actor sends one request to each of W workers (default 10,000) per
// round and waits for all the replies before the next round. The driver asks
// the leader for R rounds and waits; the figure is the mean time of a round.
// Two variants:
//   ask:  the leader asks every worker and co_awaits when_all of the futures;
//   tell: the leader tells every worker (passing its own reference) and the
//         workers tell their answers back; the leader counts them.
#include <troupe/troupe.hpp>

#include <vector>

#include "harness.hpp"
#include "troupe_common.hpp"

namespace {

class Leader;

class Worker {
 public:
  long work(long x) { return x + 1; }
  void work_tell(const troupe::ActorRef<Leader>& leader, long x);
};

class Leader {
 public:
  explicit Leader(std::vector<troupe::ActorRef<Worker>> workers) : workers_(std::move(workers)) {}

  troupe::Task<long> rounds(long r) {
    long total = 0;
    for (long k = 0; k < r; ++k) {
      std::vector<troupe::Future<long>> replies;
      replies.reserve(workers_.size());
      for (std::size_t i = 0; i < workers_.size(); ++i)
        replies.push_back(workers_[i].ask<&Worker::work>(static_cast<long>(i)));
      auto values = co_await troupe::when_all(std::move(replies));
      for (long v : values) total += v;
    }
    co_return total;
  }

  troupe::Future<long> rounds_tell(long r) {
    rounds_left_ = r;
    total_ = 0;
    done_ = troupe::Promise<long>();
    auto f = done_.get_future();
    self_ = troupe::self<Leader>();
    start_round();
    return f;
  }
  void reply(long v) {
    total_ += v;
    if (--pending_ != 0) return;
    if (--rounds_left_ == 0) return done_.set_value(total_);
    start_round();
  }

 private:
  void start_round() {
    pending_ = workers_.size();
    for (std::size_t i = 0; i < workers_.size(); ++i)
      workers_[i].tell<&Worker::work_tell>(self_, static_cast<long>(i));
  }

  std::vector<troupe::ActorRef<Worker>> workers_;
  troupe::ActorRef<Leader> self_;
  long rounds_left_ = 0;
  std::size_t pending_ = 0;
  long total_ = 0;
  troupe::Promise<long> done_;
};

void Worker::work_tell(const troupe::ActorRef<Leader>& leader, long x) { leader.tell<&Leader::reply>(x + 1); }

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
      troupe::Runtime rt(bench_troupe::config(opt));
      std::vector<troupe::ActorRef<Worker>> workers;
      workers.reserve(static_cast<std::size_t>(w));
      for (long i = 0; i < w; ++i) workers.push_back(rt.spawn<Worker>());
      auto leader = rt.spawn<Leader>(std::move(workers));
      auto run = [&](long k) {
        return ask ? leader.ask<&Leader::rounds>(k).get() : leader.ask<&Leader::rounds_tell>(k).get();
      };
      const long expect_per_round = w * (w + 1) / 2;
      if (run(warm) != warm * expect_per_round) throw std::runtime_error("wrong sum");
      const double c0 = bench::cpu_seconds();
      const auto t0 = bench::Clock::now();
      const long sum = run(r);
      const double dt = bench::seconds_since(t0);
      if (sum != r * expect_per_round) throw std::runtime_error("wrong sum");
      s.set("round_ms", dt * 1e3 / static_cast<double>(r));
      s.set("rounds_per_s", static_cast<double>(r) / dt);
      s.set("requests_per_s", static_cast<double>(r * w) / dt);
      s.set("cpu_util", (bench::cpu_seconds() - c0) / dt);
      s.set("os_threads", bench::os_threads());
      rt.finish();
    });
    bench::report(opt, name, "troupe", {{"round_ms", "ms/round", false}, {"rounds_per_s", "rounds/s", true}},
                  samples, {{"workers", static_cast<double>(w)}, {"rounds", static_cast<double>(r)}});
  }
  return 0;
}
