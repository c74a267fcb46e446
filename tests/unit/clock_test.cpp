// The hybrid logical clock: monotonic under concurrency, ahead of every
// timestamp it merged, close to physical time, and safe when the logical
// counter saturates.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "troupe/clock.hpp"

using troupe::HlcTimestamp;
using troupe::HybridClock;

namespace {

std::uint64_t wall_ms() {
  using namespace std::chrono;
  return static_cast<std::uint64_t>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

HlcTimestamp at(std::uint64_t ms, std::uint16_t logical) { return HlcTimestamp{(ms << 16) | logical}; }

}  // namespace

TEST(HybridClock, FollowsPhysicalTime) {
  HybridClock c;
  const auto before = wall_ms();
  const auto t = c.now();
  const auto after = wall_ms();
  // A coarse clock source may lag by a tick (a few milliseconds), never lead;
  // the bound is wide because a loaded virtual machine can stall for a while.
  EXPECT_LE(t.physical_ms(), after);
  EXPECT_GE(t.physical_ms() + 2000, before);
}

TEST(HybridClock, NowIsStrictlyIncreasingAcrossThreads) {
  HybridClock c;
  constexpr int kThreads = 4, kEach = 50000;
  std::vector<std::vector<std::uint64_t>> seen(kThreads);
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      auto& mine = seen[static_cast<std::size_t>(t)];
      mine.reserve(kEach);
      for (int i = 0; i < kEach; ++i) mine.push_back(c.now().raw);
    });
  for (auto& t : ts) t.join();
  std::vector<std::uint64_t> all;
  for (auto& v : seen) {
    EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
    EXPECT_EQ(std::adjacent_find(v.begin(), v.end()), v.end()) << "a thread saw the same timestamp twice";
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end()) << "two events got the same timestamp";
}

TEST(HybridClock, MergeMovesPastARemoteClockAhead) {
  HybridClock c;
  const auto remote = at(wall_ms() + 3'600'000, 7);  // a node an hour ahead
  const auto r = c.merge(remote);
  EXPECT_GT(r, remote);
  EXPECT_EQ(r.physical_ms(), remote.physical_ms()) << "the remote's physical part is adopted";
  EXPECT_EQ(r.logical(), 8);
  const auto next = c.now();
  EXPECT_GT(next, r) << "local events stay after what was merged, though physical time is behind";
  EXPECT_EQ(next.physical_ms(), remote.physical_ms());
}

TEST(HybridClock, MergeOfAnOlderTimestampStillAdvances) {
  HybridClock c;
  const auto mine = c.now();
  const auto r = c.merge(at(1000, 3));  // long ago
  EXPECT_GT(r, mine);
  EXPECT_GT(c.peek(), mine);
  EXPECT_EQ(c.peek(), r);
}

TEST(HybridClock, SaturatedCounterBorrowsAMillisecond) {
  HybridClock c;
  const auto ahead = wall_ms() + 3'600'000;
  const auto r = c.merge(at(ahead, 0xffff));
  EXPECT_EQ(r.physical_ms(), ahead + 1);
  EXPECT_EQ(r.logical(), 0);
  EXPECT_GT(r, at(ahead, 0xffff));
  for (int i = 0; i < 70000; ++i) c.now();  // more than the counter holds
  EXPECT_GT(c.peek(), r);
  EXPECT_EQ(c.peek().physical_ms(), ahead + 2) << "70000 events past one saturation borrow one more millisecond";
}

TEST(HybridClock, TheEndOfItsRangeIsKeptNeverWrappedToZero) {
  // Only an absurd remote timestamp (a corrupt envelope) gets a clock there.
  const HlcTimestamp last{~std::uint64_t{0}};
  HybridClock c;
  EXPECT_EQ(c.merge(last), last);
  EXPECT_EQ(c.now(), last);
  EXPECT_EQ(c.merge(last), last);
  HybridClock d;
  const auto near_end = d.merge(HlcTimestamp{0xFFFF'FFFF'FFFF'0000ull});
  EXPECT_GT(near_end, HlcTimestamp{0xFFFF'FFFF'FFFF'0000ull});
  for (int i = 0; i < 70000; ++i) d.now();  // more than the counter holds
  EXPECT_EQ(d.peek(), last);
}
