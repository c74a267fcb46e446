// Many-to-one: S sender actors (default 4) each send M small messages
// (default 1,000,000) to one receiver actor. troupe side (see fanin_caf.cpp).
//
// Each sender sends its M messages in chunks of --chunk messages per turn
// (default: all of them in one turn) and re-tells itself for the next chunk.
// The clock runs from the first `go` until the receiver has handled all S*M
// messages; the figure is messages handled per second.
#include <troupe/troupe.hpp>

#include <vector>

#include "harness.hpp"
#include "troupe_common.hpp"

namespace {

class Receiver {
 public:
  explicit Receiver(long expected) : expected_(expected) {}

  void add(long x) {
    sum_ += x;
    if (++got_ == expected_ && waiting_) done_.set_value(sum_);
  }
  /// Completes once every expected message has been handled.
  troupe::Future<long> done() {
    if (got_ == expected_) return troupe::make_ready_future<long>(sum_);
    waiting_ = true;
    return done_.get_future();
  }

 private:
  long expected_;
  long got_ = 0;
  long sum_ = 0;
  bool waiting_ = false;
  troupe::Promise<long> done_;
};

class Sender {
 public:
  Sender(troupe::ActorRef<Receiver> to, long chunk) : to_(std::move(to)), chunk_(chunk) {}

  void go(long from, long to) {
    const long end = std::min(to, from + chunk_);
    for (long i = from; i < end; ++i) to_.tell<&Receiver::add>(i);
    if (end < to) troupe::self<Sender>().tell<&Sender::go>(end, to);
  }

 private:
  troupe::ActorRef<Receiver> to_;
  long chunk_;
};

}  // namespace

int main(int argc, char** argv) {
  auto opt = bench::parse_options(argc, argv);
  const long senders = opt.get("senders", 4, false);
  const long m = opt.get("messages", 1000000);
  const long chunk = opt.get("chunk", m, false);

  auto samples = bench::run_reps(opt, "fanin", [&](bench::Sample& s) {
    troupe::Runtime rt(bench_troupe::config(opt));
    const long total = senders * m;
    auto recv = rt.spawn<Receiver>(total);
    std::vector<troupe::ActorRef<Sender>> snd;
    for (long i = 0; i < senders; ++i) snd.push_back(rt.spawn<Sender>(recv, chunk));
    auto done = recv.ask<&Receiver::done>();
    const double rss0 = bench::rss_bytes();
    const double c0 = bench::cpu_seconds();
    const auto t0 = bench::Clock::now();
    for (auto& x : snd) x.tell<&Sender::go>(0L, m);
    const long sum = done.get();
    const double dt = bench::seconds_since(t0);
    if (sum != senders * (m * (m - 1) / 2)) throw std::runtime_error("wrong sum");
    s.set("msgs_per_s", static_cast<double>(total) / dt);
    s.set("ns_per_msg", dt * 1e9 / static_cast<double>(total));
    s.set("cpu_util", (bench::cpu_seconds() - c0) / dt);
    s.set("peak_rss_growth_mb", (bench::peak_rss_bytes() - rss0) / 1e6);
    s.set("os_threads", bench::os_threads());
    rt.finish();
  });
  bench::report(opt, "fanin", "troupe", {{"msgs_per_s", "msgs/s", true}}, samples,
                {{"senders", static_cast<double>(senders)},
                 {"messages_per_sender", static_cast<double>(m)},
                 {"chunk", static_cast<double>(chunk)}});
  return 0;
}
