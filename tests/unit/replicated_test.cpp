// The version order of replicated registry entries (last writer wins, and a
// conditional delete removes exactly one version).
#include <gtest/gtest.h>

#include "registry/replicated_map.hpp"

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
