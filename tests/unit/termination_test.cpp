// finish()'s termination judgement (cluster/termination.hpp): when two waves of
// status reports prove that no work is in flight or being handled.
#include <gtest/gtest.h>

#include <set>

#include "cluster/termination.hpp"

using troupe::NodeId;
using troupe::detail::TerminationTally;
using troupe::detail::WorkStatus;
using Verdict = TerminationTally::Verdict;
using Replies = std::vector<std::optional<WorkStatus>>;

namespace {

WorkStatus idle(std::uint64_t sent, std::uint64_t delivered, std::uint64_t lost = 0) {
  return WorkStatus{true, true, sent, delivered, lost};
}

struct Nodes {
  std::set<NodeId> dead;
  bool operator()(NodeId n) const { return dead.count(n) == 0; }
};

}  // namespace

TEST(Termination, TwoBalancedWavesWithTheSameCountsEndIt) {
  TerminationTally t;
  Nodes nodes;
  const Replies w{idle(3, 1), idle(1, 2), idle(0, 1)};  // 4 sent, 4 delivered
  EXPECT_EQ(t.judge(w, 0, nodes), Verdict::again_now) << "one balanced wave proves nothing";
  EXPECT_EQ(t.judge(w, 0, nodes), Verdict::done);
}

TEST(Termination, AWaveWaitsForEveryLiveNodeButNotForDeadOnes) {
  TerminationTally t;
  Nodes nodes;
  Replies w{idle(1, 1), std::nullopt, idle(1, 1)};
  EXPECT_EQ(t.judge(w, 0, nodes), Verdict::incomplete);
  nodes.dead.insert(1);
  EXPECT_EQ(t.judge(w, 0, nodes), Verdict::again_now);
  w[1] = idle(5, 0);  // a dead node's late answer does not count
  EXPECT_EQ(t.judge(w, 0, nodes), Verdict::done);
}

TEST(Termination, WorkInFlightOrUnderWayHoldsItOff) {
  TerminationTally t;
  Nodes nodes;
  EXPECT_EQ(t.judge(Replies{idle(2, 0), idle(0, 1)}, 0, nodes), Verdict::again_later) << "one message in flight";
  Replies busy{idle(1, 0), idle(0, 1)};
  busy[1]->idle = false;
  EXPECT_EQ(t.judge(busy, 0, nodes), Verdict::again_later) << "a node still handling work";
  Replies early{idle(1, 0), idle(0, 1)};
  early[1]->in_finish = false;
  EXPECT_EQ(t.judge(early, 0, nodes), Verdict::again_later) << "a node that has not called finish()";
}

TEST(Termination, ChangedCountsBetweenTheWavesStartOver) {
  TerminationTally t;
  Nodes nodes;
  EXPECT_EQ(t.judge(Replies{idle(1, 0), idle(0, 1)}, 0, nodes), Verdict::again_now);
  // Work moved between the waves: balanced again, but with other counts.
  EXPECT_EQ(t.judge(Replies{idle(2, 0), idle(0, 2)}, 0, nodes), Verdict::again_now);
  EXPECT_EQ(t.judge(Replies{idle(2, 0), idle(0, 2)}, 0, nodes), Verdict::done);
}

TEST(Termination, AnUnbalancedWaveBetweenTwoBalancedOnesStartsOver) {
  TerminationTally t;
  Nodes nodes;
  const Replies balanced{idle(1, 0), idle(0, 1)};
  EXPECT_EQ(t.judge(balanced, 0, nodes), Verdict::again_now);
  EXPECT_EQ(t.judge(Replies{idle(1, 0), idle(1, 1)}, 0, nodes), Verdict::again_later);
  EXPECT_EQ(t.judge(balanced, 0, nodes), Verdict::again_now) << "the first balanced wave was forgotten";
  EXPECT_EQ(t.judge(balanced, 0, nodes), Verdict::done);
}

// The race the loss count closes: node 2 is lost between two waves. Its
// counts leave everyone's sums, and work that moved meanwhile can bring the
// sums back to exactly what the first wave saw, with a message still in
// flight that the sums no longer show. Equal sums after a loss prove nothing.
TEST(Termination, ALossBetweenTheWavesStartsOverEvenWhenTheSumsMatch) {
  TerminationTally t;
  Nodes nodes;
  // Wave 1: 0 sent 2 to 1 and 1 to 2, 2 sent 1 to 1; all delivered.
  EXPECT_EQ(t.judge(Replies{idle(3, 0), idle(0, 3), idle(1, 1)}, 0, nodes), Verdict::again_now);
  // Node 2 is lost; every survivor finished handling it (lost = 1) and drops
  // its counts: 0 now sums 2 sent, 1 sums 2 delivered. Meanwhile loss
  // listeners on 1 sent two messages to 0, which handled them: the sums are
  // 4 and 4 again, exactly the first wave's.
  nodes.dead.insert(2);
  const Replies after{idle(2, 2, troupe::detail::loss_mark(2)), idle(2, 2, troupe::detail::loss_mark(2)), std::nullopt};
  EXPECT_EQ(t.judge(after, 0, nodes), Verdict::again_now) << "balanced, but not comparable with the wave before";
  EXPECT_EQ(t.judge(after, 0, nodes), Verdict::done);
}

TEST(Termination, NodesThatDisagreeOnTheLossesDoNotAddUp) {
  TerminationTally t;
  Nodes nodes;
  nodes.dead.insert(2);
  // Node 1 has not finished handling node 2's loss: its sums still hold it.
  const Replies w{idle(2, 1, troupe::detail::loss_mark(2)), idle(1, 2, 0), std::nullopt};
  EXPECT_EQ(t.judge(w, 0, nodes), Verdict::again_later);
  EXPECT_EQ(t.judge(w, 0, nodes), Verdict::again_later);
}

// As many losses, but not the same ones: node 3 died, and nodes 0 and 1 have
// handled its loss; node 2, which wrongly took node 1 for lost, has handled
// that loss and not yet node 3's. One loss each, so counts of losses agree;
// but node 2's sums leave out node 1 and its traffic, and may balance by
// chance, twice, while a message of node 1's to node 2 is dropped: node 1
// would be told "done" though node 2 holds it lost. Their digests differ.
TEST(Termination, NodesThatLostAsManyNodesButNotTheSameOnesDoNotAddUp) {
  using troupe::detail::loss_mark;
  TerminationTally t;
  Nodes nodes;
  nodes.dead.insert(3);
  const Replies w{idle(1, 1, loss_mark(3)), idle(1, 0, loss_mark(3)), idle(0, 1, loss_mark(1)), std::nullopt};
  EXPECT_EQ(t.judge(w, 0, nodes), Verdict::again_later) << "one loss each, but not the same";
  EXPECT_EQ(t.judge(w, 0, nodes), Verdict::again_later);
  // Once they agree, the waves compare as before.
  const Replies agreed{idle(1, 1, loss_mark(3)), idle(1, 1, loss_mark(3)), idle(1, 1, loss_mark(3)), std::nullopt};
  EXPECT_EQ(t.judge(agreed, 0, nodes), Verdict::again_now);
  EXPECT_EQ(t.judge(agreed, 0, nodes), Verdict::done);
}

TEST(Termination, TheDigestOfLossesIsTheSameInAnyOrderAndTellsSetsApart) {
  using troupe::detail::loss_mark;
  EXPECT_EQ(loss_mark(1) + loss_mark(3) + loss_mark(7), loss_mark(7) + loss_mark(1) + loss_mark(3));
  EXPECT_NE(loss_mark(1), loss_mark(3));
  EXPECT_NE(loss_mark(0), 0u) << "the loss of node 0 would not show";
  EXPECT_NE(loss_mark(1) + loss_mark(2), loss_mark(3)) << "one loss for two";
  std::set<std::uint64_t> seen;
  for (troupe::NodeId n = 0; n < 4096; ++n) seen.insert(loss_mark(n));
  EXPECT_EQ(seen.size(), 4096u);
}
