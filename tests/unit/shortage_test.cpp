// A local runtime that runs out of memory where it stops actors: a stop, and
// the shutdown that ends every actor. Allocations fail on demand
// (failing_new.cpp, linked into this binary; so it stays out of the tsan
// preset: tests/tsan.supp says why).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <new>

#include "mpi/failing_new.hpp"
#include "troupe/testing.hpp"
#include "troupe/troupe.hpp"

using namespace std::chrono_literals;

namespace {

std::atomic<int> g_alive{0};

/// Counts its instances, so a test sees which were destroyed.
struct Counted {
  Counted() { g_alive.fetch_add(1); }
  ~Counted() { g_alive.fetch_sub(1); }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;
  int ping() { return 7; }
};

}  // namespace

TEST(Shortage, AStopThatFindsNoMemoryThrowsAtItsCallerAndTheActorRunsOn) {
  // It ended the process (an allocation in a noexcept function).
  troupe::Runtime rt;
  auto a = rt.spawn<Counted>();
  std::atomic<int> exits{0};
  rt.monitor(a, [&](const troupe::ExitInfo& e) {
    if (e.reason == troupe::ExitReason::stopped) exits.fetch_add(1);
  });
  tt::fail_allocation_after(0);
  EXPECT_THROW(a.stop(), std::bad_alloc);
  EXPECT_TRUE(tt::stop_failing()) << "the stop allocated nothing";
  EXPECT_EQ(a.ask<&Counted::ping>().get_for(10s), 7) << "the actor was stopped after all";
  EXPECT_EQ(troupe::testing::fail_next_stops(1), 0);
  EXPECT_THROW(a.stop(), std::bad_alloc);
  EXPECT_EQ(a.ask<&Counted::ping>().get_for(10s), 7);
  a.stop();
  rt.finish();
  EXPECT_EQ(exits.load(), 1);
}

TEST(Shortage, AShutdownThatFindsNoMemoryForAnActorsExitTriesAgain) {
  // The k-th allocation of the thread that ends the runtime fails, for k = 0,
  // 1, ... until it needs fewer: every actor is still ended (its object
  // destroyed, its monitor fired) and nothing ends the process. It did, at
  // k = 0: the exit messages were made in a noexcept function.
  bool met = true;
  long k = 0;
  for (; met && k < 500; ++k) {
    std::atomic<int> exits{0};
    {
      auto rt = std::make_unique<troupe::Runtime>();
      for (int i = 0; i < 4; ++i) {
        auto a = rt->spawn<Counted>();
        rt->monitor(a, [&](const troupe::ExitInfo& e) {
          if (e.reason == troupe::ExitReason::shutdown) exits.fetch_add(1);
        });
      }
      ASSERT_EQ(g_alive.load(), 4);
      tt::fail_allocation_after(k);
      rt.reset();
      met = tt::stop_failing();
    }
    EXPECT_EQ(g_alive.load(), 0) << "allocation " << k << ": an actor was never destroyed";
    EXPECT_EQ(exits.load(), 4) << "allocation " << k << ": an actor was not ended";
    g_alive.store(0);
  }
  EXPECT_FALSE(met) << "500 allocations, and a shutdown needed more";
  EXPECT_GT(k, 1);
}

TEST(Shortage, AShutdownThatNeverFindsMemoryGivesUpOnceThePatienceIsOut) {
  // No allocation of the thread that ends the runtime succeeds: its actors
  // are not ended (no exit, no monitor) but destroyed with the runtime, and
  // the shutdown takes about the patience (cut to 50 ms here), not for ever.
  const auto before = troupe::testing::set_memory_patience(50ms);
  std::atomic<int> exits{0};
  std::chrono::steady_clock::duration took{};
  {
    auto rt = std::make_unique<troupe::Runtime>();
    for (int i = 0; i < 3; ++i) {
      auto a = rt->spawn<Counted>();
      rt->monitor(a, [&](const troupe::ExitInfo&) { exits.fetch_add(1); });
    }
    const auto start = std::chrono::steady_clock::now();
    tt::fail_allocations_from(0);
    rt.reset();
    tt::stop_failing();
    took = std::chrono::steady_clock::now() - start;
  }
  troupe::testing::set_memory_patience(before);
  EXPECT_EQ(g_alive.load(), 0) << "an actor was never destroyed";
  EXPECT_EQ(exits.load(), 0);
  EXPECT_GE(took, 50ms);
  EXPECT_LT(took, 5s);
  g_alive.store(0);
}
