// The version order of replicated registry entries (last writer wins, and a
// conditional delete removes exactly one version), and where a node that
// joined later takes its copy of the replicas from.
#include <gtest/gtest.h>

#include "registry/name_services.hpp"
#include "registry/replicated_map.hpp"

using troupe::NodeInfo;
using troupe::detail::copy_source;
using troupe::detail::ReplEntry;

TEST(ReplicatedEntries, LaterTimestampThenHigherNodeWins) {
  ReplEntry a{"a", 5, 1}, b{"b", 7, 0}, c{"c", 5, 2};
  EXPECT_TRUE(b.beats(a));
  EXPECT_FALSE(a.beats(b));
  EXPECT_TRUE(c.beats(a)) << "same time: the higher node wins";
  EXPECT_FALSE(a.beats(a)) << "a version does not beat itself";
}

TEST(ReplicatedEntries, DeletingAVersionSparesNewerOnes) {
  ReplEntry old{"A", 5, 1}, newer{"B", 7, 2};
  ReplEntry gone = old;
  gone.tombstone = true;
  EXPECT_TRUE(gone.beats(old)) << "the deletion of a version beats that version";
  EXPECT_FALSE(gone.beats(newer)) << "but not what was written after it";
  EXPECT_TRUE(newer.beats(gone));
}

namespace {
troupe::ClusterState nodes(std::vector<std::pair<const char*, bool>> role_alive) {
  std::vector<NodeInfo> v;
  for (std::size_t i = 0; i < role_alive.size(); ++i)
    v.push_back(NodeInfo{static_cast<troupe::NodeId>(i), role_alive[i].first, "host", role_alive[i].second});
  return troupe::ClusterState(std::move(v));
}
}  // namespace

// Nodes 4 and 5 joined together, as role "extra" that no earlier node has:
// each must take its copy from an earlier node, not from the other newcomer,
// which holds nothing yet.
TEST(CopySource, ANodeThatJoinedWithItIsTheLastChoice) {
  const auto st = nodes({{"w", true}, {"w", true}, {"w", false}, {"w", true}, {"extra", true}, {"extra", true}});
  EXPECT_EQ(copy_source(st, 4, "extra", 4), 0u);
  EXPECT_EQ(copy_source(st, 5, "extra", 4), 0u);
}

TEST(CopySource, AnEarlierNodeOfItsRoleComesFirstThenAnyEarlierNode) {
  const auto st = nodes({{"head", true}, {"w", false}, {"w", true}, {"w", true}});
  EXPECT_EQ(copy_source(st, 3, "w", 3), 2u) << "an earlier live worker keeps the worker-scoped groups too";
  EXPECT_EQ(copy_source(st, 3, "other", 3), 0u) << "no earlier node of its role: the lowest earlier one";
}

TEST(CopySource, WithEveryEarlierNodeLostANodeOfTheBatchIsAskedAndWithNoneNobody) {
  const auto st = nodes({{"w", false}, {"w", false}, {"w", true}, {"w", true}});
  EXPECT_EQ(copy_source(st, 3, "w", 2), 2u);
  EXPECT_EQ(copy_source(nodes({{"w", false}, {"w", true}}), 1, "w", 1), troupe::kInvalidNode);
}
