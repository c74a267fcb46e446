// Coroutine methods (Task<R>), co_await on asks, and reentrancy, on the
// deterministic scheduler so the interleavings are exact.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "mpi/failing_new.hpp"
#include "troupe/testing.hpp"
#include "troupe/troupe.hpp"

namespace {

class Adder {
 public:
  int add(int a, int b) { return a + b; }
  int boom() { throw std::runtime_error("adder exploded"); }
};

using Log = std::vector<std::string>;

// Reentrant (the default): other messages run while slow() waits.
class Worker {
 public:
  explicit Worker(Log* log) : log_(log) {}
  troupe::Task<int> slow(troupe::Future<int> gate) {
    log_->push_back("slow:begin");
    int v = co_await std::move(gate);
    log_->push_back("slow:end");
    co_return v * 2;
  }
  int ping() {
    log_->push_back("ping");
    return 1;
  }

 private:
  Log* log_;
};

// Opts out of reentrancy: while slow() waits, ping() waits too.
class Serial {
 public:
  static constexpr bool troupe_reentrant = false;
  explicit Serial(Log* log) : log_(log) {}
  troupe::Task<int> slow(troupe::Future<int> gate) {
    log_->push_back("slow:begin");
    int v = co_await std::move(gate);
    log_->push_back("slow:end");
    co_return v * 2;
  }
  int ping() {
    log_->push_back("ping");
    return 1;
  }

 private:
  Log* log_;
};

class Client {
 public:
  explicit Client(troupe::ActorRef<Adder> adder) : adder_(adder) {}
  troupe::Task<int> sum3(int a, int b, int c) {
    int ab = co_await adder_.ask<&Adder::add>(a, b);
    co_return co_await adder_.ask<&Adder::add>(ab, c);
  }
  troupe::Task<std::string> catch_remote_error() {
    try {
      co_await adder_.ask<&Adder::boom>();
      co_return "no error";
    } catch (const std::runtime_error& e) {
      co_return e.what();
    }
  }
  troupe::Task<int> nested(int x) {
    int a = co_await twice(x);
    int b = co_await twice(a);
    co_return b;
  }
  troupe::Task<void> fails_after_await() {
    co_await adder_.ask<&Adder::add>(1, 1);
    throw std::logic_error("after await");
  }
  troupe::Future<int> via_future(int x) { return adder_.ask<&Adder::add>(x, x); }

 private:
  troupe::Task<int> twice(int x) { co_return co_await adder_.ask<&Adder::add>(x, x); }
  troupe::ActorRef<Adder> adder_;
};

struct Guard {
  explicit Guard(int* d) : destroyed(d) {}
  ~Guard() { ++*destroyed; }
  int* destroyed;
};

// Counts the coroutines of wait() that began, and the frames destroyed. Not
// reentrant: while wait() waits, ping() waits too.
class Counted {
 public:
  static constexpr bool troupe_reentrant = false;
  Counted(int* begun, int* destroyed) : begun_(begun), destroyed_(destroyed) {}
  int ping() { return 1; }
  troupe::Task<int> wait(troupe::Future<int> gate) {
    ++*begun_;
    Guard g(destroyed_);
    co_return co_await std::move(gate);
  }

 private:
  int* begun_;
  int* destroyed_;
};

class Holder {
 public:
  explicit Holder(int* destroyed) : destroyed_(destroyed) {}
  troupe::Task<int> wait(troupe::Future<int> gate) {
    Guard g(destroyed_);
    co_return co_await std::move(gate);
  }

 private:
  int* destroyed_;
};

/// A value whose move throws once the moves allowed (g_moves_left) are used.
int g_moves_left = 0;
struct Fragile {
  Fragile() = default;
  Fragile(Fragile&&) {
    if (g_moves_left-- == 0) throw std::runtime_error("no more moves");
  }
};
struct Maker {
  troupe::Task<Fragile> make() { co_return Fragile(); }
  int alive() { return 1; }
};

}  // namespace

TEST(Coroutines, ATaskWhoseResultCannotBeMovedEndsItsAskWithThatError) {
  // The result is moved out of the finished coroutine inside a noexcept
  // function: a move that threw there ended the process. Now the ask ends
  // with that error, whichever move it is, and the actor goes on.
  troupe::Runtime rt(troupe::testing::deterministic());
  auto maker = rt.spawn<Maker>();
  int failed = 0, made = 0;
  for (int moves = 0; moves < 8; ++moves) {
    g_moves_left = moves;
    try {
      (void)maker.ask<&Maker::make>().get();
      ++made;
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "no more moves") << moves << " moves allowed";
      ++failed;
    }
  }
  EXPECT_GE(failed, 2) << "the moves out of the coroutine were never reached";
  EXPECT_GE(made, 1) << "8 moves were not enough";
  EXPECT_EQ(maker.ask<&Maker::alive>().get(), 1);
}

TEST(Futures, APromiseDroppedWhenMemoryHasRunOutStillEndsItsFuture) {
  // Its error's message finds no memory: the future ends with the shortage
  // (it was left waiting for ever).
  troupe::Promise<int> p;
  auto f = p.get_future();
  tt::fail_allocation_after(0);
  { auto dropped = std::move(p); }
  EXPECT_TRUE(tt::stop_failing()) << "dropping it allocated nothing";
  ASSERT_TRUE(f.ready()) << "its future would wait for ever";
  EXPECT_THROW(f.get(), std::bad_alloc);
}

TEST(Futures, TheErrorsOfAnExitOrALossAreMadeEvenWithNoMemoryLeft) {
  // What fails the calls an exit or a loss ends, where nothing may throw.
  auto kind_of = [](const std::exception_ptr& e, troupe::NodeId& node, troupe::ActorId& actor) {
    try {
      std::rethrow_exception(e);
    } catch (const troupe::ActorExited& x) {
      node = x.node_id();
      actor = x.actor_id();
      return 1;
    } catch (const troupe::ConnectionLost& x) {
      node = x.node_id();
      return 2;
    } catch (...) {
      return 0;
    }
  };
  troupe::NodeId node = 0;
  troupe::ActorId actor = 0;
  EXPECT_EQ(kind_of(troupe::detail::actor_exited(3, 7), node, actor), 1);
  EXPECT_EQ(node, 3u);
  EXPECT_EQ(actor, 7u);
  EXPECT_EQ(kind_of(troupe::detail::connection_lost(4), node, actor), 2);
  EXPECT_EQ(node, 4u);
  tt::fail_allocations_from(0);
  const auto exited = troupe::detail::actor_exited(3, 7);
  const auto lost = troupe::detail::connection_lost(4);
  EXPECT_TRUE(tt::stop_failing()) << "no allocation was tried";
  EXPECT_EQ(kind_of(exited, node, actor), 1) << "no memory: still an ActorExited";
  EXPECT_EQ(node, troupe::kInvalidNode);
  EXPECT_EQ(kind_of(lost, node, actor), 2) << "no memory: still a ConnectionLost";
  EXPECT_EQ(node, troupe::kInvalidNode);
}

TEST(Coroutines, TaskMethodsAwaitOtherActors) {
  troupe::Runtime rt(troupe::testing::deterministic());
  auto adder = rt.spawn<Adder>();
  auto client = rt.spawn<Client>(adder);
  EXPECT_EQ(client.ask<&Client::sum3>(1, 2, 3).get(), 6);
  EXPECT_EQ(client.ask<&Client::nested>(5).get(), 20);
  EXPECT_EQ(client.ask<&Client::via_future>(4).get(), 8);
}

TEST(Coroutines, ErrorsCrossCoAwait) {
  troupe::Runtime rt(troupe::testing::deterministic());
  auto adder = rt.spawn<Adder>();
  auto client = rt.spawn<Client>(adder);
  EXPECT_EQ(client.ask<&Client::catch_remote_error>().get(), "adder exploded");
  EXPECT_THROW(client.ask<&Client::fails_after_await>().get(), std::logic_error);
}

TEST(Coroutines, ReentrantByDefault) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  Log log;
  auto w = rt.spawn<Worker>(&log);
  troupe::Promise<int> gate;
  auto slow = w.ask<&Worker::slow>(gate.get_future());
  auto ping = w.ask<&Worker::ping>();
  sched.run();
  // slow() is suspended; ping() ran meanwhile.
  EXPECT_EQ(log, (Log{"slow:begin", "ping"}));
  EXPECT_TRUE(ping.ready());
  EXPECT_FALSE(slow.ready());
  gate.set_value(21);
  sched.run();
  EXPECT_EQ(log, (Log{"slow:begin", "ping", "slow:end"}));
  EXPECT_EQ(slow.get(), 42);
}

TEST(Coroutines, NonReentrantActorsWaitForTheirCoroutine) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  Log log;
  auto s = rt.spawn<Serial>(&log);
  troupe::Promise<int> gate;
  auto slow = s.ask<&Serial::slow>(gate.get_future());
  auto ping = s.ask<&Serial::ping>();
  sched.run();
  EXPECT_EQ(log, (Log{"slow:begin"}));
  EXPECT_FALSE(ping.ready());
  EXPECT_EQ(s.mailbox_size().get(), 1u);
  gate.set_value(5);
  sched.run();
  EXPECT_EQ(log, (Log{"slow:begin", "slow:end", "ping"}));
  EXPECT_EQ(slow.get(), 10);
  EXPECT_EQ(ping.get(), 1);
}

TEST(Coroutines, AResultThatComesWhenMemoryHasRunOutStillResumesItsCoroutine) {
  // The message that resumes a coroutine in its actor is made as it suspends.
  // Made when the result came, it found no memory here, and the coroutine
  // stayed suspended for ever.
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  int destroyed = 0;
  auto h = rt.spawn<Holder>(&destroyed);
  troupe::Promise<int> gate;
  auto waiting = h.ask<&Holder::wait>(gate.get_future());
  sched.run();
  ASSERT_FALSE(waiting.ready());
  tt::fail_allocations_from(0);  // every allocation of this thread fails, until stop_failing()
  gate.set_value(21);            // resumes the coroutine from here
  tt::stop_failing();
  sched.run();
  ASSERT_TRUE(waiting.ready());
  EXPECT_EQ(waiting.get(), 21);
  EXPECT_EQ(destroyed, 1);
}

TEST(Coroutines, WhicheverAllocationOfATaskMethodsFirstTurnFailsItsAskEndsAndItsActorGoesOn) {
  // With the result, or with an error; then the actor takes its next
  // message, and every coroutine that began is destroyed. Once a coroutine
  // has suspended, the task's bookkeeping may not fail: it went on unlisted,
  // and on finishing it released a hold on the actor it had never taken
  // (a counter of a non-reentrant actor's holds wrapped round, and the actor
  // never took an ordinary message again).
  bool past_the_turn = false;
  for (long k = 0; k < 200 && !past_the_turn; ++k) {
    troupe::Runtime rt(troupe::testing::deterministic());
    troupe::testing::Scheduler sched(rt);
    int begun = 0, destroyed = 0;
    auto h = rt.spawn<Counted>(&begun, &destroyed);
    sched.run();
    troupe::Promise<int> gate;
    auto waiting = h.ask<&Counted::wait>(gate.get_future());
    tt::fail_allocation_after(k);  // the k-th allocation of the turn fails
    sched.run();
    past_the_turn = !tt::stop_failing();
    gate.set_value(21);
    sched.run();
    ASSERT_TRUE(waiting.ready()) << "allocation " << k;
    try {
      EXPECT_EQ(waiting.get(), 21) << "allocation " << k;
    } catch (const std::exception& e) {  // std::bad_alloc, or ActorExited if even the error found no memory
      EXPECT_FALSE(past_the_turn) << e.what();
    }
    try {
      EXPECT_EQ(h.ask<&Counted::ping>().get(), 1) << "allocation " << k;
    } catch (const troupe::ActorExited&) {  // the policy for a method that threw may end its actor
    }
    if (!past_the_turn) {
      try {
        h.stop();
      } catch (const troupe::ActorExited&) {
      }
    }
    sched.run();
    EXPECT_EQ(rt.finish(), 0);
    EXPECT_EQ(destroyed, begun) << "allocation " << k << ": a coroutine that began was never destroyed";
  }
  EXPECT_TRUE(past_the_turn);
}

TEST(Coroutines, StoppingAnActorDestroysItsSuspendedCoroutines) {
  troupe::Runtime rt(troupe::testing::deterministic());
  troupe::testing::Scheduler sched(rt);
  int destroyed = 0;
  auto h = rt.spawn<Holder>(&destroyed);
  troupe::Promise<int> gate;
  auto waiting = h.ask<&Holder::wait>(gate.get_future());
  sched.run();
  EXPECT_EQ(destroyed, 0);
  h.stop();
  sched.run();
  EXPECT_EQ(destroyed, 1);  // the frame's locals were destroyed
  EXPECT_THROW(waiting.get(), troupe::ActorExited);
  gate.set_value(1);  // resuming a dead frame must be a no-op
  sched.run();
}

TEST(Coroutines, ManyConcurrentAsksOnRealThreads) {
  troupe::Config cfg;
  cfg.threads = 4;
  troupe::Runtime rt(cfg);
  auto adder = rt.spawn<Adder>();
  std::vector<troupe::ActorRef<Client>> clients;
  for (int i = 0; i < 16; ++i) clients.push_back(rt.spawn<Client>(adder));
  std::vector<troupe::Future<int>> fs;
  for (int round = 0; round < 50; ++round)
    for (auto& c : clients) fs.push_back(c.ask<&Client::sum3>(round, 1, 2));
  auto all = troupe::when_all(std::move(fs)).get();
  for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<int>(i / 16) + 3);
}
