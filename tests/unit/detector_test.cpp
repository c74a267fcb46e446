// The failure detector's heartbeat ring, against a cluster the test plays
// (DetectorSite): which node it beats to and watches, when it declares one
// lost, and what keeps it from declaring a live one.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cluster/detector.hpp"

using namespace std::chrono_literals;
using troupe::NodeId;
using troupe::detail::FailureDetector;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kPeriod = 10ms;
constexpr auto kTimeout = 100ms;

/// Nodes 0..size-1, this one `me`; what the detector sends and declares is recorded.
struct Site final : troupe::detail::DetectorSite {
  Site(NodeId me, std::size_t n, Clock::time_point start) : me(me), live(n, true), heard(n, start) {}
  NodeId self() const noexcept override { return me; }
  std::size_t size() const noexcept override { return live.size(); }
  bool alive(NodeId n) const noexcept override { return n < live.size() && live[n]; }
  Clock::time_point last_heard(NodeId n) const override { return heard[n]; }
  bool heard_pending(NodeId n, std::chrono::milliseconds patience) override {
    EXPECT_EQ(patience, kTimeout);
    ++pending_checks;
    if (on_pending) on_pending(n);
    return pending[n];
  }
  void send_heartbeat(NodeId to) override { beats.push_back(to); }
  void confirm_lost(NodeId n, const std::string& why) override {
    lost.push_back(n);
    reasons.push_back(why);
    live[n] = false;
  }

  NodeId me;
  std::vector<bool> live;
  std::vector<Clock::time_point> heard;
  std::map<NodeId, bool> pending;
  std::function<void(NodeId)> on_pending;  // runs inside heard_pending (another thread's work, there)
  int pending_checks = 0;
  std::vector<NodeId> beats, lost;
  std::vector<std::string> reasons;
};

}  // namespace

TEST(Detector, BeatsToItsSuccessorOncePerPeriodAndDeclaresASilentPredecessorLost) {
  Site site(2, 4, Clock::time_point{});
  FailureDetector d(site, kPeriod, kTimeout, nullptr);  // its first beat is due from now
  const auto t0 = Clock::now();
  site.heard.assign(4, t0);
  for (auto t = t0; t < t0 + kTimeout; t += 1ms) d.tick(t);
  EXPECT_EQ(site.beats.size(), 10u);  // every 10 ms, from the first tick
  for (auto to : site.beats) EXPECT_EQ(to, 3u);
  EXPECT_TRUE(site.lost.empty()) << "declared within the timeout";
  d.tick(t0 + kTimeout + 1ms);
  ASSERT_EQ(site.lost, std::vector<NodeId>{1});  // its predecessor, silent since t0
  EXPECT_NE(site.reasons[0].find("silent for more than 100 ms"), std::string::npos) << site.reasons[0];
}

TEST(Detector, APredecessorIsJudgedFromWhenItWasFirstWatched) {
  // The first tick starts the watch: a node heard of long before (the
  // runtime's start, say) is not lost at once.
  const auto t0 = Clock::now();
  Site site(1, 2, t0);
  FailureDetector d(site, kPeriod, kTimeout, nullptr);
  d.tick(t0 + 10 * kTimeout);
  EXPECT_TRUE(site.lost.empty());
  d.tick(t0 + 11 * kTimeout + 1ms);
  EXPECT_EQ(site.lost, std::vector<NodeId>{0});
}

TEST(Detector, HearingFromItsPredecessorOrFindingItsNewsWaitingKeepsItAlive) {
  const auto t0 = Clock::now();
  Site site(0, 3, t0);  // watches node 2 (the ring wraps), beats to node 1
  FailureDetector d(site, kPeriod, kTimeout, nullptr);
  site.heard[2] = t0 + 80ms;
  d.tick(t0 + 150ms);
  EXPECT_TRUE(site.lost.empty()) << "heard 70 ms ago";
  EXPECT_EQ(site.pending_checks, 0) << "nobody was suspected";
  site.pending[2] = true;  // silent too long, but a frame of it waits to be received
  d.tick(t0 + 181ms + kTimeout);
  EXPECT_TRUE(site.lost.empty()) << "declared although its news was waiting";
  EXPECT_EQ(site.pending_checks, 1);
  site.pending[2] = false;
  d.tick(t0 + 182ms + kTimeout);
  EXPECT_EQ(site.lost, std::vector<NodeId>{2});
  EXPECT_EQ(site.beats.front(), 1u);
}

TEST(Detector, AFrameAnotherThreadTookWhileItLookedKeepsThePredecessorAlive) {
  // Between the detector's look at last-heard and its look for news waiting
  // in the engine, another thread (a get() driving the engine) took a frame
  // of the suspect: in neither place at either look, unless last-heard is
  // read again. Node 0 was declared lost, and expelled, although alive.
  const auto t0 = Clock::now();
  Site site(1, 2, t0);
  FailureDetector d(site, kPeriod, kTimeout, nullptr);
  d.tick(t0);  // watching node 0 from t0
  const auto now = t0 + kTimeout + 5ms;
  site.on_pending = [&](NodeId n) { site.heard[n] = now; };  // taken, and noted, just before
  d.tick(now);
  EXPECT_EQ(site.pending_checks, 1);
  EXPECT_TRUE(site.lost.empty()) << "a live node was declared lost";
  site.on_pending = nullptr;
  d.tick(now + kTimeout + 1ms);
  EXPECT_EQ(site.lost, std::vector<NodeId>{0}) << "silent again for the timeout";
}

TEST(Detector, ANewPredecessorGetsAFreshGracePeriod) {
  // Node 3 watches node 2; once 2 is lost it watches node 1, judged from
  // then on, not from when 1 was last heard (long ago: it sent to node 2).
  const auto t0 = Clock::now();
  Site site(3, 4, t0);
  FailureDetector d(site, kPeriod, kTimeout, nullptr);
  d.tick(t0);  // watching node 2 from t0
  d.tick(t0 + kTimeout + 1ms);
  ASSERT_EQ(site.lost, std::vector<NodeId>{2});
  const auto lost_at = t0 + kTimeout + 1ms;
  d.on_lost(2, lost_at);
  d.tick(lost_at + 1ms);  // now watching node 1, silent since t0
  d.tick(lost_at + kTimeout);
  EXPECT_EQ(site.lost, std::vector<NodeId>{2}) << "node 1 was judged by the time it was watched";
  d.tick(lost_at + kTimeout + 2ms);
  EXPECT_EQ(site.lost, (std::vector<NodeId>{2, 1}));
}

TEST(Detector, ALoneNodeWatchesNobody) {
  const auto t0 = Clock::now();
  Site site(0, 1, t0);
  FailureDetector d(site, kPeriod, kTimeout, nullptr);
  d.tick(t0 + 10 * kTimeout);
  EXPECT_TRUE(site.lost.empty());
  EXPECT_TRUE(site.beats.empty());
}
