// Timers (virtual time), monitors, and deterministic ordering control.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "troupe/detail/core.hpp"
#include "troupe/testing.hpp"
#include "troupe/troupe.hpp"

using namespace std::chrono_literals;

namespace {

class Ticker {
 public:
  void tick(int k) { ticks_.push_back(k); }
  std::vector<int> ticks() const { return ticks_; }

 private:
  std::vector<int> ticks_;
};

class Log {
 public:
  void add(std::string s) { entries_.push_back(std::move(s)); }
  std::vector<std::string> entries() const { return entries_; }

 private:
  std::vector<std::string> entries_;
};

/// Starts a periodic timer once finish() has begun (as an actor handling a
/// message still in flight may), and says whether it was active.
class LateTimer {
 public:
  void start_when_finishing(troupe::Runtime* rt, std::atomic<int>* ticks, std::atomic<int>* active) {
    while (!rt->core().periodic_stopped()) std::this_thread::yield();
    auto timer = rt->every(1ms, [ticks] {
      ticks->fetch_add(1);
      return true;
    });
    active->store(timer.active() ? 1 : 0);
    std::this_thread::sleep_for(30ms);  // it would tick meanwhile
  }
};

}  // namespace

TEST(Timers, PeriodicTimersStartedOnceFinishBeganNeverTick) {
  // finish() stops the periodic timers first: one started after that would
  // keep ticking (a remote tell every period keeps a cluster's finish() from
  // ever seeing two quiet waves alike).
  std::atomic<int> ticks{0}, active{-1};
  troupe::Config cfg;
  cfg.threads = 2;
  {
    troupe::Runtime rt(cfg);
    auto a = rt.spawn<LateTimer>();
    a.tell<&LateTimer::start_when_finishing>(&rt, &ticks, &active);
    EXPECT_EQ(rt.finish(), 0);
  }
  EXPECT_EQ(active.load(), 0) << "a periodic timer started while finish() waited was active";
  EXPECT_EQ(ticks.load(), 0);
}

TEST(Timers, TellAfterFiresOnlyOnceTheDelayPassed) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  auto t = rt.spawn<Ticker>();
  auto timer = rt.tell_after<&Ticker::tick>(t, 100ms, 7);
  EXPECT_TRUE(timer.active());
  sched.advance(99ms);
  sched.run();
  EXPECT_TRUE(t.ask<&Ticker::ticks>().get().empty());
  sched.advance(1ms);
  sched.run();
  EXPECT_EQ(t.ask<&Ticker::ticks>().get(), std::vector<int>{7});
  EXPECT_FALSE(timer.active());
  EXPECT_FALSE(timer.cancel());
}

TEST(Timers, CancelledTimersNeverFire) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  auto t = rt.spawn<Ticker>();
  auto timer = rt.tell_after<&Ticker::tick>(t, 10ms, 1);
  EXPECT_TRUE(timer.cancel());
  sched.advance(1s);
  sched.run();
  EXPECT_TRUE(t.ask<&Ticker::ticks>().get().empty());
}

TEST(Timers, PeriodicTimersRepeatUntilCancelled) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  auto t = rt.spawn<Ticker>();
  auto timer = rt.tell_every<&Ticker::tick>(t, 10ms, 3);
  sched.advance(35ms);
  sched.run();
  EXPECT_EQ(t.ask<&Ticker::ticks>().get(), (std::vector<int>{3, 3, 3}));
  timer.cancel();
  sched.advance(100ms);
  sched.run();
  EXPECT_EQ(t.ask<&Ticker::ticks>().get().size(), 3u);
}

TEST(Timers, PeriodicTimersStopWhenTheTargetExits) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  auto t = rt.spawn<Ticker>();
  auto timer = rt.tell_every<&Ticker::tick>(t, 10ms, 1);
  sched.advance(10ms);
  sched.run();
  t.stop();
  sched.run();
  sched.advance(20ms);
  sched.run();
  EXPECT_FALSE(timer.active());
}

TEST(Timers, FinishWaitsForPendingOneShotTimersOnRealThreads) {
  troupe::Config cfg;
  cfg.threads = 2;
  std::atomic<int> fired{0};
  {
    troupe::Runtime rt(cfg);
    auto t = rt.spawn<Ticker>();
    rt.tell_every<&Ticker::tick>(t, 1ms, 0);  // stopped by finish()
    rt.after(30ms, [&] { fired++; });
    EXPECT_EQ(rt.finish(), 0);
    EXPECT_EQ(fired.load(), 1);
  }
}

TEST(Monitors, FireOnceWhenTheActorStops) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  auto t = rt.spawn<Ticker>();
  std::vector<troupe::ExitInfo> seen;
  rt.monitor(t, [&](const troupe::ExitInfo& i) { seen.push_back(i); });
  sched.run();
  EXPECT_TRUE(seen.empty());
  t.stop();
  sched.run();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].actor, t.id());
  EXPECT_EQ(seen[0].reason, troupe::ExitReason::stopped);
  t.stop();  // stopping twice fires nothing more
  sched.run();
  EXPECT_EQ(seen.size(), 1u);
}

TEST(Monitors, MonitoringAnExitedActorFiresAtOnce) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  auto t = rt.spawn<Ticker>();
  t.stop();
  sched.run();
  int fired = 0;
  rt.monitor(t, [&](const troupe::ExitInfo&) { ++fired; });
  sched.run();
  EXPECT_EQ(fired, 1);
}

namespace {
std::atomic<bool> g_in_destructor{false}, g_may_go{false}, g_destructor_done{false};
/// Its destructor waits until the test lets it go.
struct SlowToGo {
  ~SlowToGo() {
    g_in_destructor = true;
    while (!g_may_go.load()) std::this_thread::sleep_for(1ms);
    g_destructor_done = true;
  }
  int ping() { return 1; }
};
}  // namespace

TEST(Monitors, AMonitorAddedWhileItsActorExitsFiresOnceTheExitIsDone) {
  // A monitor added while exit() ran (here, during the object's destructor)
  // fired at once, on another worker: before the object was gone and the
  // actor unlisted (a supervisor starting it again could find it still there).
  troupe::Config two;
  two.threads = 2;
  troupe::Runtime rt(two);
  auto a = rt.spawn<SlowToGo>();
  ASSERT_EQ(a.ask<&SlowToGo::ping>().get(), 1);
  a.stop();
  for (int i = 0; i < 5000 && !g_in_destructor.load(); ++i) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(g_in_destructor.load());
  std::atomic<int> fired{0};
  std::atomic<bool> after_destructor{false}, unlisted{false};
  rt.monitor(a, [&](const troupe::ExitInfo& e) {
    after_destructor = g_destructor_done.load();
    unlisted = rt.core().find_cell(e.actor) == nullptr;
    fired.fetch_add(1);
  });
  std::this_thread::sleep_for(50ms);  // one fired at once has run by now
  EXPECT_EQ(fired.load(), 0) << "it fired while the destructor ran";
  g_may_go = true;
  for (int i = 0; i < 5000 && fired.load() == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(fired.load(), 1);
  EXPECT_TRUE(after_destructor.load());
  EXPECT_TRUE(unlisted.load());
}

TEST(Monitors, DemonitorCancels) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  auto t = rt.spawn<Ticker>();
  int fired = 0;
  auto id = rt.monitor(t, [&](const troupe::ExitInfo&) { ++fired; });
  rt.demonitor(id);
  t.stop();
  sched.run();
  EXPECT_EQ(fired, 0);
}

TEST(Monitors, ShutdownEndsLiveActorsWithReasonShutdown) {
  std::atomic<int> reason{-1};
  {
    troupe::Config cfg;
    cfg.threads = 2;
    troupe::Runtime rt(cfg);
    auto t = rt.spawn<Ticker>();
    rt.monitor(t, [&](const troupe::ExitInfo& i) { reason = static_cast<int>(i.reason); });
    rt.finish();
  }
  EXPECT_EQ(reason.load(), static_cast<int>(troupe::ExitReason::shutdown));
}

TEST(Deterministic, StepRunsTheChosenActorFirst) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  auto log = rt.spawn<Log>();
  struct Relay {
    explicit Relay(troupe::ActorRef<Log> l, std::string n) : log(l), name(std::move(n)) {}
    void go(int i) { log.tell<&Log::add>(name + std::to_string(i)); }
    troupe::ActorRef<Log> log;
    std::string name;
  };
  auto a = rt.spawn<Relay>(log, "a");
  auto b = rt.spawn<Relay>(log, "b");
  a.tell<&Relay::go>(1);
  a.tell<&Relay::go>(2);
  b.tell<&Relay::go>(1);
  EXPECT_EQ(sched.pending(), 2u);  // a and b each have one turn queued
  ASSERT_TRUE(sched.step(b));
  ASSERT_TRUE(sched.step(a));
  ASSERT_TRUE(sched.step(a));
  sched.run();
  EXPECT_EQ(log.ask<&Log::entries>().get(), (std::vector<std::string>{"b1", "a1", "a2"}));
  EXPECT_FALSE(sched.step());
}

TEST(Deterministic, GetReportsADeadlockInsteadOfHanging) {
  struct Sink {
    troupe::Future<int> hang() { return never.get_future(); }
    troupe::Promise<int> never;
  };
  troupe::Runtime rt(troupe::testing::deterministic());
  auto sink = rt.spawn<Sink>();
  auto f = sink.ask<&Sink::hang>();
  EXPECT_THROW(f.get(), troupe::Error);
  EXPECT_FALSE(f.wait_for(10ms));
}

TEST(Deterministic, TheVirtualClockNeverGoesBackWhenATickWaits) {
  // A periodic tick runs inside advance(); one that waits for what a later
  // timer brings moves the clock on to that timer, past the tick's own
  // deadline. The advance() that ran the tick must not set it back.
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  std::vector<std::chrono::nanoseconds> seen;
  auto tick = rt.every(10ms, [&] {
    troupe::Promise<int> p(rt.core().waiter());
    auto f = p.get_future();
    auto later = rt.after(1s, [p = std::move(p)]() mutable { p.set_value(1); });
    EXPECT_EQ(f.get(), 1);
    seen.push_back(sched.now());
    return false;  // once
  });
  sched.advance(10ms);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_GE(seen[0], std::chrono::nanoseconds(1s));
  EXPECT_GE(sched.now(), seen[0]) << "the virtual clock went back";
}

TEST(Deterministic, DeadlinesAreVirtualTime) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  troupe::Promise<int> p(rt.core().waiter());
  auto f = p.get_future();
  int ticks = 0;
  auto tick = rt.every(1s, [&] { return ++ticks < 1000000; });  // a timer that keeps coming back
  EXPECT_FALSE(f.wait_for(10ms)) << "nothing sets it";
  EXPECT_EQ(ticks, 0) << "a timer past the deadline fired";
  EXPECT_LT(sched.now(), 1s);
  tick.cancel();
  auto later = rt.after(1h, [p = std::move(p)]() mutable { p.set_value(1); });
  const auto before = sched.now();
  EXPECT_FALSE(f.wait_for(1ms));
  EXPECT_LE(sched.now() - before, std::chrono::nanoseconds(1ms)) << "the virtual clock ran past the deadline";
  EXPECT_EQ(f.get(), 1);  // no deadline: time moves to the timer
  EXPECT_GE(sched.now() - before, std::chrono::nanoseconds(1h));
}

TEST(Timers, TheLongestDelaysAndTimeoutsMeanForeverNotAlreadyPast) {
  troupe::Config cfg;
  cfg.threads = 2;
  troupe::Runtime rt(cfg);
  std::atomic<bool> fired{false};
  auto never = rt.after(std::chrono::hours::max(), [&] { fired = true; });
  auto rarely = rt.every(std::chrono::hours::max(), [&] {
    fired = true;
    return true;
  });
  troupe::Promise<int> p;
  auto f = p.get_future();
  std::thread setter([&] {
    std::this_thread::sleep_for(50ms);
    p.set_value(7);
  });
  EXPECT_TRUE(f.wait_for(std::chrono::milliseconds::max()));  // waits, as for ever, until the value comes
  EXPECT_EQ(f.get(), 7);
  setter.join();
  troupe::Promise<int> q;
  EXPECT_THROW(q.get_future().get_for(std::chrono::seconds::min()), troupe::Timeout);  // already past
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(fired.load());
  never.cancel();
  rarely.cancel();
  EXPECT_EQ(rt.finish(), 0);
}

TEST(Deterministic, FuturesMadeWithoutTheRuntimeStillRunItsTurns) {
  struct Adder {
    int add(int v) { return total += v; }
    int total = 0;
  };
  troupe::Runtime rt(troupe::testing::deterministic());
  auto a = rt.spawn<Adder>();
  // A ready-made future's then(): the future it returns has no waiter of its own.
  auto f = troupe::make_ready_future<int>(2).then([a](int v) { return a.ask<&Adder::add>(v); });
  EXPECT_EQ(f.get_for(1s), 2);
  // A promise made without the runtime, kept by an actor's turn.
  troupe::Promise<int> p;
  auto g = p.get_future();
  a.ask<&Adder::add>(3).then([p = std::move(p)](int v) mutable { p.set_value(v); });
  EXPECT_EQ(g.get_for(1s), 5);
}

TEST(Timers, DurationsOfEveryCountTypeSaturateOnlyPastTheClocksRange) {
  using troupe::detail::saturated;
  using Ns = troupe::detail::Clock::duration;
  EXPECT_EQ(saturated(std::chrono::duration<std::uint64_t, std::milli>(100)), std::chrono::milliseconds(100));
  EXPECT_EQ(saturated(std::chrono::duration<unsigned>(0)), Ns::zero());
  EXPECT_EQ(saturated(std::chrono::duration<int, std::micro>(5)), std::chrono::microseconds(5));
  EXPECT_EQ(saturated(std::chrono::duration<double>(1.5)), std::chrono::milliseconds(1500));
  EXPECT_EQ(saturated(std::chrono::milliseconds(-3)), std::chrono::milliseconds(-3));
  EXPECT_EQ(saturated(std::chrono::hours::max()), Ns::max());
  EXPECT_EQ(saturated(std::chrono::hours::min()), Ns::min());
  EXPECT_EQ(saturated(std::chrono::duration<std::uint64_t, std::ratio<3600>>(std::numeric_limits<std::uint64_t>::max())),
            Ns::max());
}

TEST(Timers, ADeadlineLongPastTimesOutAtOnceInVirtualTime) {
  // get_for(seconds::min()): its deadline is as early as the clock counts;
  // virtual time must not wrap around to centuries ahead (firing every timer).
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  bool fired = false;
  auto timer = rt.after(std::chrono::hours(1), [&] { fired = true; });
  troupe::Promise<int> never;
  auto f = never.get_future();
  const auto before = sched.now();
  EXPECT_THROW(f.get_for(std::chrono::seconds::min()), troupe::Timeout);
  EXPECT_FALSE(fired);
  EXPECT_LT(sched.now() - before, std::chrono::seconds(1));
  timer.cancel();
}
