// The version order of replicated registry entries (last writer wins, and a
// conditional delete removes exactly one version), where a node that joined
// later takes its copy of the replicas from, and a node's loss in a map when
// memory runs short (and the watch of a local actor an entry points at).
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "mpi/failing_new.hpp"
#include "registry/name_services.hpp"
#include "registry/replicated_map.hpp"
#include "troupe/runtime.hpp"
#include "troupe/testing.hpp"
#include "troupe/troupe.hpp"

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

TEST(ReplicatedMap, ANodesLossRemovesAllItsEntriesEvenWhenMemoryRunsShort) {
  // The k-th allocation of the loss's handling fails, for k = 0, 1, ... until
  // it needs fewer. It used to throw out half way, with some of the lost
  // node's entries removed and the others left pointing at its actors for
  // ever; now it makes what it needs first, again once there is memory, and
  // then removes all of them.
  troupe::Runtime rt;
  constexpr int kEntries = 20;
  auto key = [](int i) { return "a key long enough to live on the heap " + std::to_string(i); };
  bool met = true;
  long k = 0;
  for (; met && k < 1000; ++k) {
    troupe::detail::ReplicatedMap map(rt.names(), 9, nullptr);
    for (int i = 0; i < kEntries; ++i) {
      ReplEntry e{"a value long enough to live on the heap", static_cast<std::uint64_t>(i + 1), 1, 1,
                  static_cast<troupe::ActorId>(i + 1)};
      ASSERT_TRUE(map.apply(key(i), e, 1));
    }
    tt::fail_allocation_after(k);
    try {
      map.node_lost(1);
    } catch (const std::bad_alloc&) {
      ADD_FAILURE() << "allocation " << k << ": the loss threw";
    }
    met = tt::stop_failing();
    int left = 0;
    for (int i = 0; i < kEntries; ++i) {
      const auto e = map.get(key(i));
      left += e && !e->tombstone ? 1 : 0;
    }
    EXPECT_EQ(left, 0) << "allocation " << k << ": entries of the lost node stayed";
  }
  EXPECT_FALSE(met) << "1000 allocations, and the loss needed more";
  EXPECT_GT(k, kEntries) << "the copies of the lost node's writes were never reached";
}

TEST(ReplicatedMap, ANodesLossThatNeverFindsMemoryIsGivenUpWholeOnceThePatienceIsOut) {
  // No allocation of the loss's handling ever succeeds: it is tried again for
  // the runtime's patience (cut to 100 ms here), not for ever, and then given
  // up having changed nothing (all or nothing: no entry half removed). With
  // memory back, the same loss removes every entry of the node.
  troupe::Runtime rt;
  constexpr int kEntries = 20;
  auto key = [](int i) { return "a key long enough to live on the heap " + std::to_string(i); };
  troupe::detail::ReplicatedMap map(rt.names(), 9, nullptr);
  for (int i = 0; i < kEntries; ++i) {
    ReplEntry e{"a value long enough to live on the heap", static_cast<std::uint64_t>(i + 1), 1, 1,
                static_cast<troupe::ActorId>(i + 1)};
    ASSERT_TRUE(map.apply(key(i), e, 1));
  }
  auto live = [&] {
    int n = 0;
    for (int i = 0; i < kEntries; ++i) {
      const auto e = map.get(key(i));
      n += e && !e->tombstone ? 1 : 0;
    }
    return n;
  };
  // Writes waiting for acks: of node 1 alone, and of nodes 1 and 2.
  std::uint64_t of_1 = 0, of_1_and_2 = 0;
  auto waits_for_1 = map.expect_acks({1}, of_1);
  auto waits_for_both = map.expect_acks({1, 2}, of_1_and_2);
  constexpr auto patience = std::chrono::milliseconds(100);
  const auto before = troupe::testing::set_memory_patience(patience);
  const auto start = std::chrono::steady_clock::now();
  tt::fail_allocations_from(0);
  try {
    map.node_lost(1);
  } catch (const std::bad_alloc&) {
    ADD_FAILURE() << "the loss threw";
  }
  const bool failed = tt::stop_failing();
  const auto took = std::chrono::steady_clock::now() - start;
  troupe::testing::set_memory_patience(before);
  EXPECT_TRUE(failed);
  EXPECT_GE(took, patience) << "given up before the patience was out";
  EXPECT_LT(took, std::chrono::seconds(5)) << "not given up";
  EXPECT_EQ(live(), kEntries) << "entries were removed half way";
  // The waits end all the same: node 1 will never ack (they waited for ever).
  EXPECT_TRUE(waits_for_1.ready()) << "a write waits for a lost node's ack";
  EXPECT_FALSE(waits_for_both.ready()) << "node 2 has not acked";
  map.acked(of_1_and_2, 2);
  EXPECT_TRUE(waits_for_both.ready());
  map.node_lost(1);
  EXPECT_EQ(live(), 0);
}

namespace {
struct Idle {
  void noop() {}
};
}  // namespace

TEST(ReplicatedMap, AnEntryOfALocalActorIsAppliedWatchedOrNotAtAllWhicheverAllocationFails) {
  // An entry that points at an actor of this node is watched, so that it goes
  // when the actor exits. The k-th allocation of its applying fails, for
  // k = 0, 1, ... until it needs fewer: it is applied and watched, or (the
  // map's own allocation) not applied at all and then applied again; never
  // applied and left unwatched, as it was when the watch's own allocations
  // threw out of apply() (the key's copies, the monitor): the entry then
  // outlived its actor, and an update from another node went unacknowledged.
  // The maps outlive the runtime: an actor's exit reaches its map (removing
  // the entry, then telling the other nodes) on a worker, after the test saw
  // the entry go; the runtime's end waits for that.
  std::vector<std::unique_ptr<troupe::detail::ReplicatedMap>> maps;
  troupe::Runtime rt;
  const std::string key = "a key long enough to live on the heap, and in its watch";
  bool met = true;
  long k = 0;
  for (; met && k < 500; ++k) {
    maps.push_back(std::make_unique<troupe::detail::ReplicatedMap>(rt.names(), 9, nullptr));
    auto& map = *maps.back();
    auto actor = rt.spawn<Idle>();
    const ReplEntry e{"a value", static_cast<std::uint64_t>(k + 1), 1, rt.node(), actor.id()};
    bool applied = false;
    tt::fail_allocation_after(k);
    try {
      applied = map.apply(key, e, 1);
    } catch (const std::bad_alloc&) {
    }
    met = tt::stop_failing();
    if (!applied) {
      EXPECT_FALSE(map.get(key)) << "allocation " << k << ": applied, and the caller told it was not";
      ASSERT_TRUE(map.apply(key, e, 1)) << "allocation " << k;
    }
    actor.stop();
    bool gone = false;
    for (int i = 0; i < 2000 && !gone; ++i) {
      gone = !map.get(key);
      if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE(gone) << "allocation " << k << ": the entry outlived its actor";
  }
  EXPECT_FALSE(met) << "500 allocations, and applying needed more";
  EXPECT_GT(k, 3);
}
