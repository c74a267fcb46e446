// Roles, dispatchers, the registry and process groups. Launched MPMD:
//   mpirun -np 1 roles_test --troupe-role=coordinator : -np 4 roles_test --troupe-role=worker
// so node 0 is the coordinator and nodes 1..4 the workers.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "polite_mpi.hpp"
#include "registry/name_services.hpp"
#include "remote/remote_node.hpp"
#include "troupe/mpi.hpp"
#include "troupe/remote.hpp"
#include "troupe/role.hpp"
#include "troupe/testing.hpp"
#include "troupe/troupe.hpp"

using namespace std::chrono_literals;

namespace rt_test {

class Echo {
 public:
  troupe::NodeId where() const { return troupe::runtime().node(); }
  void hold(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
  void noop() {}
  void bump() { ++bumps_; }
  int bumps() const { return bumps_; }

 private:
  int bumps_ = 0;
};
TROUPE_REMOTE(Echo, troupe::init<>, &Echo::where, &Echo::hold, &Echo::noop, &Echo::bump, &Echo::bumps);

}  // namespace rt_test

using rt_test::Echo;

namespace {

const std::vector<troupe::NodeId> kWorkers{1, 2, 3, 4};

struct Job {
  troupe::Runtime rt{troupe::adopt(MPI_COMM_WORLD)};
  troupe::NodeId me = rt.node();
  bool coordinator = me == 0;
};

/// What a test's control handler saw (values of type kTestControl), and a gate it may wait at.
struct ControlSeen {
  std::atomic<bool> entered{false}, release{false};
  std::mutex mu;
  std::vector<std::uint64_t> values;
};
/// A control type no component handles (32..47 are the registry's).
constexpr auto kType = static_cast<troupe::detail::Control>(47);

troupe::detail::Cluster& cluster_of(Job& j) {
  return dynamic_cast<troupe::detail::RemoteNode&>(*j.rt.core().remote()).cluster();
}

// Test-only: everyone reached this point (no rank is lost in these tests).
void barrier() { tt::barrier(); }

template <class F>
bool eventually(F&& pred, std::chrono::milliseconds limit = 10s) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

}  // namespace

TEST(Roles, RolesComeFromTheLaunchLine) {
  Job j;
  EXPECT_EQ(j.rt.config().role, j.coordinator ? "coordinator" : "worker");
  EXPECT_EQ(j.rt.role("worker").nodes(), kWorkers);
  EXPECT_EQ(j.rt.role("coordinator").nodes(), std::vector<troupe::NodeId>{0});
  EXPECT_TRUE(j.rt.role("worker").contains(3));
  EXPECT_FALSE(j.rt.role("worker").contains(0));
  EXPECT_TRUE(j.rt.role("nobody").nodes().empty());
  EXPECT_EQ(j.rt.cluster().node(2).role, "worker");
  j.rt.finish();
}

TEST(Roles, RoleCommunicatorsCarryCollectives) {
  Job j;
  MPI_Comm workers = j.rt.role("worker").comm();
  if (j.coordinator) {
    EXPECT_EQ(workers, MPI_COMM_NULL);
    int size = 0;
    MPI_Comm_size(j.rt.role("coordinator").comm(), &size);
    EXPECT_EQ(size, 1);
  } else {
    int size = 0, sum = 0, mine = static_cast<int>(j.me);
    MPI_Comm_size(workers, &size);
    EXPECT_EQ(size, 4);
    MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, workers);
    EXPECT_EQ(sum, 1 + 2 + 3 + 4);
    MPI_Comm live = j.rt.role("worker").live_comm();
    MPI_Comm_size(live, &size);
    EXPECT_EQ(size, 4);
    MPI_Comm_free(&live);
  }
  j.rt.finish();
}

TEST(Dispatch, EveryStrategy) {
  Job j;
  auto echo = j.rt.spawn<Echo>();
  j.rt.register_local("echo", echo);
  barrier();
  auto role = j.rt.role("worker");
  if (j.coordinator) {
    EXPECT_EQ(role.first<Echo>("echo").ask<&Echo::where>().get(), 1u);
    EXPECT_EQ(role.second<Echo>("echo").ask<&Echo::where>().get(), 2u);
    EXPECT_EQ(role.third<Echo>("echo").ask<&Echo::where>().get(), 3u);
    EXPECT_EQ(role.last<Echo>("echo").ask<&Echo::where>().get(), 4u);
    // Node 0 is outside the role: next is the first node after it, prev wraps.
    EXPECT_EQ(role.next<Echo>("echo").ask<&Echo::where>().get(), 1u);
    EXPECT_EQ(role.prev<Echo>("echo").ask<&Echo::where>().get(), 4u);
    std::vector<troupe::NodeId> rr;
    auto d = role.round_robin<Echo>("echo");
    for (int i = 0; i < 8; ++i) rr.push_back(d.ask<&Echo::where>().get());
    EXPECT_EQ(rr, (std::vector<troupe::NodeId>{1, 2, 3, 4, 1, 2, 3, 4}));
    std::set<troupe::NodeId> seen;
    for (int i = 0; i < 100; ++i) seen.insert(role.random<Echo>("echo").ask<&Echo::where>().get());
    EXPECT_GE(seen.size(), 2u);
    for (auto n : seen) EXPECT_TRUE(role.contains(n));
    // broadcast: tell reaches all, ask gathers all.
    role.broadcast<Echo>("echo").tell<&Echo::bump>();
    EXPECT_EQ(role.broadcast<Echo>("echo").ask<&Echo::where>().get(), kWorkers);
    EXPECT_EQ(role.broadcast<Echo>("echo").ask<&Echo::bumps>().get(), (std::vector<int>{1, 1, 1, 1}));
    // A role of one node: next and prev wrap to it, second does not exist.
    auto solo = j.rt.role("coordinator");
    EXPECT_EQ(solo.next<Echo>("echo").ask<&Echo::where>().get(), 0u);
    EXPECT_EQ(solo.prev<Echo>("echo").ask<&Echo::where>().get(), 0u);
    EXPECT_THROW(solo.second<Echo>("echo").ask<&Echo::where>().get(), troupe::NameNotFound);
    EXPECT_THROW(role.first<Echo>("no-such-name").ask<&Echo::where>().get(), troupe::NameNotFound);
    EXPECT_THROW(j.rt.role("nobody").first<Echo>("echo").ask<&Echo::where>().get(), troupe::NameNotFound);
    // least_busy: workers 1 and 2 are stuck with full mailboxes.
    for (troupe::NodeId busy : {1u, 2u}) {
      troupe::DispatchSpec spec{"worker", "echo", busy == 1 ? troupe::Strategy::first : troupe::Strategy::second, {}};
      troupe::Dispatcher<Echo> to(j.rt, spec);
      to.tell<&Echo::hold>(400);
      for (int i = 0; i < 20; ++i) to.tell<&Echo::noop>();
    }
    std::this_thread::sleep_for(50ms);
    for (int i = 0; i < 10; ++i) {
      auto n = role.least_busy<Echo>("echo").ask<&Echo::where>().get();
      EXPECT_TRUE(n == 3 || n == 4) << "least_busy chose busy node " << n;
    }
  } else {
    // Relative strategies from inside the role wrap around.
    const auto n = j.me;
    EXPECT_EQ(role.next<Echo>("echo").ask<&Echo::where>().get(), n == 4 ? 1u : n + 1);
    EXPECT_EQ(role.prev<Echo>("echo").ask<&Echo::where>().get(), n == 1 ? 4u : n - 1);
  }
  j.rt.finish();
}

TEST(Dispatch, UserDefinedDispatchers) {
  Job j;
  auto echo = j.rt.spawn<Echo>();
  j.rt.register_local("echo", echo);
  j.rt.register_dispatcher("even", [](const troupe::DispatchContext& ctx) {
    std::vector<troupe::DispatchTarget> out;
    for (auto n : ctx.nodes)
      if (n % 2 == 0) out.push_back(troupe::DispatchTarget{n, ctx.name, 0});
    return out;
  });
  barrier();
  if (j.coordinator) {
    auto even = j.rt.role("worker").dispatch<Echo>("even", "echo");
    EXPECT_EQ(even.ask<&Echo::where>().get(), (std::vector<troupe::NodeId>{2, 4}));
    EXPECT_THROW(j.rt.role("worker").dispatch<Echo>("unknown", "echo").ask<&Echo::where>().get(), troupe::NameNotFound);
  }
  j.rt.finish();
}

TEST(Registry, PutGetRemoveAndAtAddressing) {
  Job j;
  auto echo = j.rt.spawn<Echo>();
  j.rt.register_local("echo", echo);
  barrier();
  if (j.coordinator) {
    j.rt.registry().put("svc", echo).get();
    j.rt.registry().put("pool", j.rt.role("worker").round_robin<Echo>("echo")).get();
  }
  barrier();  // the puts' futures completed: every node applied them
  auto svc = j.rt.registry().get<Echo>("svc");
  ASSERT_TRUE(svc.has_value());
  EXPECT_EQ(svc->node(), 0u);
  EXPECT_EQ(svc->ask<&Echo::where>().get(), 0u);
  EXPECT_EQ(j.rt.at<Echo>("@svc").ask<&Echo::where>().get(), 0u);
  auto via_pool = j.rt.at<Echo>("@pool").ask<&Echo::where>().get();
  EXPECT_TRUE(j.rt.role("worker").contains(via_pool));
  EXPECT_TRUE(j.rt.registry().get_dispatcher("pool").has_value());
  EXPECT_THROW(j.rt.registry().get<Echo>("pool"), troupe::Error);  // a dispatcher, not an actor
  EXPECT_FALSE(j.rt.registry().get<Echo>("missing").has_value());
  EXPECT_THROW(j.rt.at<Echo>("@missing").ask<&Echo::where>().get(), troupe::NameNotFound);
  barrier();
  if (j.coordinator) j.rt.registry().put("everyone", j.rt.role("worker").broadcast<Echo>("echo")).get();
  barrier();
  // An ask through a name that reaches several nodes would hear from one: refused.
  try {
    j.rt.at<Echo>("@everyone").ask<&Echo::where>().get();
    ADD_FAILURE() << "an ask through a broadcast dispatcher's name was not refused";
  } catch (const troupe::Error& e) {
    EXPECT_NE(std::string(e.what()).find("several nodes"), std::string::npos) << e.what();
  }
  barrier();
  if (j.coordinator) j.rt.registry().remove("svc").get();
  barrier();
  EXPECT_FALSE(j.rt.registry().contains("svc"));
  j.rt.finish();
}

TEST(Registry, ConcurrentPutsAgreeOnOneWinner) {
  Job j;
  auto echo = j.rt.spawn<Echo>();
  barrier();
  for (int round = 0; round < 5; ++round) j.rt.registry().put("contested", echo).get();
  barrier();
  auto winner = j.rt.registry().get<Echo>("contested");
  EXPECT_TRUE(winner.has_value());  // (no ASSERT: every rank must reach the collective below)
  unsigned long mine[2] = {winner ? winner->node() : 999ul, winner ? winner->id() : 0ul}, all[10];
  tt::allgather(mine, all, sizeof mine);
  for (int r = 1; r < 5; ++r) {
    EXPECT_EQ(all[2 * r], all[0]) << "nodes disagree on the winner";
    EXPECT_EQ(all[2 * r + 1], all[1]);
  }
  j.rt.finish();
}

TEST(Registry, NamesOfExitedActorsDisappear) {
  Job j;
  barrier();
  if (j.me == 2) {
    auto temp = j.rt.spawn<Echo>();
    j.rt.registry().put("temp", temp).get();
    temp.stop();
  }
  // The owner removes it when the actor exits; every replica follows.
  EXPECT_TRUE(eventually([&] {
    barrier();
    return true;
  }));
  EXPECT_TRUE(eventually([&] { return !j.rt.registry().contains("temp"); }));
  j.rt.finish();
}

TEST(Registry, ANameWhoseActorsWatchFindsNoMemoryIsWatchedOnceThereIsSome) {
  // Node 2 binds names to its actors by watching them (the entry goes when
  // the actor exits). Its first three monitors find no memory: the watch is
  // tried again. It used to throw out of the update: the put from node 0
  // was never acknowledged (it waited for ever), and the name outlived its
  // actor everywhere.
  Job j;
  if (j.me == 2) {
    EXPECT_EQ(troupe::testing::fail_next_monitors(3), 0);
  }
  barrier();
  if (j.coordinator) {
    auto temp = j.rt.spawn_on<Echo>(2).get_for(10s);
    EXPECT_NO_THROW(j.rt.registry().put("frail", temp).get_for(10s));  // troupe::Timeout before the change
    temp.stop();
  }
  barrier();
  if (j.me == 2) {
    EXPECT_EQ(troupe::testing::fail_next_monitors(0), 0) << "the watch did not fail 3 times";
  }
  EXPECT_TRUE(eventually([&] { return !j.rt.registry().contains("frail"); })) << "the name outlived its actor";
  j.rt.finish();
}

// A write once finish() has returned fails at once: no node hears this one
// any more, and its future waited for their acks for ever.
TEST(Registry, AWriteOnceTheRuntimeHasFinishedFailsAtOnce) {
  Job j;
  auto echo = j.rt.spawn<Echo>();
  j.rt.finish();
  auto fails_at_once = [](troupe::Future<void> f, const char* what) {
    try {
      f.get_for(5s);
      ADD_FAILURE() << what << " succeeded";
    } catch (const troupe::Timeout&) {
      ADD_FAILURE() << what << " waited";
    } catch (const troupe::Error& e) {
      EXPECT_NE(std::string(e.what()).find("finished"), std::string::npos) << e.what();
    }
  };
  fails_at_once(j.rt.registry().put("late", echo), "a put");
  fails_at_once(j.rt.registry().remove("late"), "a remove");
  fails_at_once(j.rt.groups().join("late", echo), "a join");
}

TEST(Groups, JoinsAndLeavesConvergeEverywhere) {
  Job j;
  std::atomic<int> joined{0}, left{0};
  j.rt.groups().subscribe("g", [&](const troupe::GroupEvent& e) { (e.joined ? joined : left)++; });
  std::vector<troupe::ActorRef<Echo>> mine;
  for (int i = 0; i < 3; ++i) mine.push_back(j.rt.spawn<Echo>());
  barrier();
  // Every node joins its three actors at once; then each makes one leave.
  std::vector<troupe::Future<void>> ops;
  for (auto& a : mine) ops.push_back(j.rt.groups().join("g", a));
  for (auto& f : ops) f.get();
  j.rt.groups().leave("g", mine[0]).get();
  barrier();
  auto members = j.rt.groups().members<Echo>("g");
  EXPECT_EQ(members.size(), 2u * 5);
  unsigned long digest = 0;
  for (auto& m : members) digest = digest * 1000003u + m.node() * 131u + m.id();
  unsigned long all[5];
  tt::allgather(&digest, all, sizeof digest);
  for (int r = 1; r < 5; ++r) EXPECT_EQ(all[r], all[0]) << "node " << r << " sees other members";
  // A member whose actor exits leaves the group everywhere.
  mine[1].stop();
  EXPECT_TRUE(eventually([&] { return j.rt.groups().members<Echo>("g").size() == 5u; }));
  EXPECT_TRUE(eventually([&] { return joined.load() == 15 && left.load() == 10; }))
      << joined.load() << " joins, " << left.load() << " leaves seen";
  EXPECT_EQ(j.rt.groups().members<Echo>("nope").size(), 0u);
  j.rt.finish();
}

TEST(Groups, RoleScopedGroupsAreKeptOnTheirRoleOnly) {
  std::atomic<int> joined{0}, left{0};  // outlive the runtime, whose subscriber counts into them
  Job j;
  auto pool = j.rt.role("worker").groups();
  EXPECT_EQ(pool.scope(), "worker");
  EXPECT_THROW(j.rt.role("").groups(), troupe::Error);
  EXPECT_THROW(j.rt.groups().join("a\x1e" "b", j.rt.spawn<Echo>()).get(), troupe::Error) << "a separator in a name";
  if (j.coordinator) {
    // Not of the role: its groups are not kept here.
    EXPECT_THROW(pool.members<Echo>("pool"), troupe::Error);
    EXPECT_THROW(pool.groups(), troupe::Error);
    EXPECT_THROW(pool.subscribe("pool", [](const troupe::GroupEvent&) {}), troupe::Error);
    EXPECT_THROW(pool.join("pool", j.rt.spawn<Echo>()).get(), troupe::Error);
  } else {
    pool.subscribe("pool", [&](const troupe::GroupEvent& e) {
      if (e.scope == "worker" && e.group == "pool") (e.joined ? joined : left)++;
    });
  }
  barrier();
  troupe::ActorRef<Echo> mine;
  if (!j.coordinator) {
    mine = j.rt.spawn<Echo>();
    pool.join("pool", mine).get();  // done once every worker applied it
    j.rt.groups().join("pool", mine).get();  // the cluster-wide group of that name is another group
    if (j.me == 1) {
      auto elsewhere = j.rt.spawn_on<Echo>(0).get();
      EXPECT_THROW(pool.join("pool", elsewhere).get(), troupe::Error) << "an actor of another role";
    }
  }
  barrier();
  if (j.coordinator) {
    // Nothing of the worker scope was ever sent here.
    EXPECT_TRUE(j.rt.names().group_map().scan("\x1e").empty());
  } else {
    auto members = pool.members<Echo>("pool");
    EXPECT_EQ(members.size(), 4u);  // (no ASSERT: every rank must reach the barriers below)
    for (std::size_t i = 0; i < members.size() && i < kWorkers.size(); ++i) EXPECT_EQ(members[i].node(), kWorkers[i]);
    EXPECT_EQ(pool.groups(), std::vector<std::string>{"pool"});
  }
  EXPECT_EQ(j.rt.groups().members<Echo>("pool").size(), 4u);
  EXPECT_EQ(j.rt.groups().groups(), std::vector<std::string>{"pool"}) << "scoped groups stay out of the cluster's list";
  barrier();
  // A member whose actor exits leaves the scoped group on every worker.
  if (j.me == 1) mine.stop();
  if (!j.coordinator) {
    EXPECT_TRUE(eventually([&] { return pool.members<Echo>("pool").size() == 3u; }));
    EXPECT_TRUE(eventually([&] { return joined.load() == 4 && left.load() == 1; }))
        << joined.load() << " joins, " << left.load() << " leaves seen";
  }
  j.rt.finish();
}

// NameServices is destroyed with its runtime while the progress thread may be
// inside its control handler: removing the handler must wait for that call to
// end (or the handler runs on a destroyed object), and control messages of
// its types that come while no handler is set must wait for the next one.
TEST(Registry, RemovingTheControlHandlerWaitsForItsCallAndLaterMessagesWaitForTheNext) {
  auto seen = std::make_shared<ControlSeen>();
  Job j;
  auto& cluster = cluster_of(j);
  auto record = [seen](troupe::NodeId, std::uint64_t type, troupe::detail::WireInputArchive& ar) {
    if (type != 47) return;
    std::uint64_t v = 0;
    ar(v);
    std::lock_guard lk(seen->mu);
    seen->values.push_back(v);
  };
  if (j.me == 1) {
    cluster.set_extra_control([seen](troupe::NodeId, std::uint64_t type, troupe::detail::WireInputArchive&) {
      if (type != 47) return;
      seen->entered = true;
      while (!seen->release) std::this_thread::sleep_for(1ms);
    });
  }
  barrier();
  auto send = [&](std::uint64_t v) {
    cluster.send_control(1, kType, [v](troupe::detail::WireOutputArchive& ar) { ar(v); }, /*work=*/true);
  };
  if (j.coordinator) send(0);
  if (j.me == 1) {
    EXPECT_TRUE(eventually([&] { return seen->entered.load(); })) << "the handler was never called";
    std::atomic<bool> removed{false};
    std::thread remover([&] {
      cluster.set_extra_control(nullptr);
      removed = true;
    });
    std::this_thread::sleep_for(100ms);
    EXPECT_FALSE(removed.load()) << "the handler was removed while a call of it was still running";
    seen->release = true;
    remover.join();
    EXPECT_TRUE(removed.load());
  }
  barrier();
  // No handler on node 1 now: these wait for the next one, in order.
  if (j.coordinator) {
    for (std::uint64_t v = 1; v <= 3; ++v) send(v);
    // Delivered in order: once this ask is answered, they were delivered too.
    j.rt.spawn_on<Echo>(1).get().ask<&Echo::noop>().get();
  }
  barrier();
  if (j.me == 1) {
    cluster.set_extra_control(record);
    EXPECT_TRUE(eventually([&] {
      std::lock_guard lk(seen->mu);
      return seen->values.size() >= 3;
    }));
    std::lock_guard lk(seen->mu);
    EXPECT_EQ(seen->values, (std::vector<std::uint64_t>{1, 2, 3})) << "messages that came without a handler";
  }
  j.rt.finish();
}

// Messages that came before the handler are replayed in order when it is set;
// one that comes during the replay waits behind them (it ran at once, on its
// delivering thread, and overtook those still to be replayed).
TEST(Registry, AControlMessageThatComesWhileEarlierOnesAreReplayedWaitsBehindThem) {
  auto seen = std::make_shared<ControlSeen>();
  Job j;
  auto& cluster = cluster_of(j);
  auto send = [&](std::uint64_t v) {
    cluster.send_control(1, kType, [v](troupe::detail::WireOutputArchive& ar) { ar(v); }, /*work=*/true);
  };
  // No handler on node 1 (the registry's removed): these are stashed, in order.
  if (j.me == 1) cluster.set_extra_control(nullptr);
  barrier();
  if (j.coordinator) {
    for (std::uint64_t v = 1; v <= 3; ++v) send(v);
    j.rt.spawn_on<Echo>(1).get().ask<&Echo::noop>().get();  // delivered behind them
  }
  barrier();
  std::thread setter;
  if (j.me == 1) {
    // The replay holds at the first message until the coordinator's fourth has come.
    setter = std::thread([&cluster, seen] {
      cluster.set_extra_control([seen](troupe::NodeId, std::uint64_t type, troupe::detail::WireInputArchive& ar) {
        if (type != 47) return;
        std::uint64_t v = 0;
        ar(v);
        {
          std::lock_guard lk(seen->mu);
          seen->values.push_back(v);
        }
        if (v != 1) return;
        seen->entered = true;
        while (!seen->release) std::this_thread::sleep_for(1ms);
      });
    });
    EXPECT_TRUE(eventually([&] { return seen->entered.load(); })) << "the replay never began";
  }
  barrier();
  if (j.coordinator) {
    send(4);
    j.rt.spawn_on<Echo>(1).get().ask<&Echo::noop>().get();  // the fourth was delivered
  }
  barrier();
  if (j.me == 1) {
    seen->release = true;
    setter.join();
    EXPECT_TRUE(eventually([&] {
      std::lock_guard lk(seen->mu);
      return seen->values.size() >= 4;
    }));
    std::lock_guard lk(seen->mu);
    EXPECT_EQ(seen->values, (std::vector<std::uint64_t>{1, 2, 3, 4}));
  }
  j.rt.finish();
}

// A subscriber may throw anything: the events after it still come.
TEST(Groups, ASubscriberThatThrowsAnythingDoesNotSilenceTheGroup) {
  std::atomic<int> heard{0};  // outlives the runtime, whose subscriber counts into it
  Job j;
  if (j.me == 1) {
    j.rt.groups().subscribe("loud", [&](const troupe::GroupEvent&) {
      if (heard.fetch_add(1) == 0) throw 1;  // not a std::exception
    });
    auto a = j.rt.spawn<Echo>();
    auto b = j.rt.spawn<Echo>();
    j.rt.groups().join("loud", a).get();
    j.rt.groups().join("loud", b).get();
    EXPECT_TRUE(eventually([&] { return heard.load() == 2; })) << heard.load() << " of 2 events heard";
  }
  barrier();
  j.rt.finish();
}

// Once unsubscribe() returns, the callback is not running and will not run
// again: what it captured may go.
TEST(Groups, UnsubscribeReturnsOnlyOnceItsCallbackIsNoLongerRunning) {
  std::atomic<bool> entered{false}, left{false};
  std::atomic<int> calls{0}, later{0};
  Job j;
  if (j.me == 1) {
    auto token = j.rt.groups().subscribe("slow", [&](const troupe::GroupEvent&) {
      calls++;
      entered = true;
      std::this_thread::sleep_for(300ms);
      left = true;
    });
    j.rt.groups().join("slow", j.rt.spawn<Echo>()).get();
    ASSERT_TRUE(eventually([&] { return entered.load(); }));
    j.rt.groups().unsubscribe(token);
    EXPECT_TRUE(left.load()) << "unsubscribe returned while its callback was running";
    // Events reach subscribers in order: once a later subscriber heard the
    // next one, the first would have been called for it too.
    j.rt.groups().subscribe("slow", [&](const troupe::GroupEvent&) { later++; });
    j.rt.groups().join("slow", j.rt.spawn<Echo>()).get();
    EXPECT_TRUE(eventually([&] { return later.load() == 1; }));
    EXPECT_EQ(calls.load(), 1) << "called after unsubscribe returned";
  }
  barrier();
  j.rt.finish();
}

// A callback may unsubscribe itself (unsubscribe returns at once there).
TEST(Groups, ACallbackMayUnsubscribeItself) {
  std::atomic<int> calls{0}, later{0};  // outlive the runtime, whose subscribers count into them
  std::atomic<std::uint64_t> token{0};
  std::atomic<bool> returned{false};
  Job j;
  if (j.me == 1) {
    token = j.rt.groups().subscribe("once", [&](const troupe::GroupEvent&) {
      calls++;
      j.rt.groups().unsubscribe(token.load());
      returned = true;
    });
    j.rt.groups().join("once", j.rt.spawn<Echo>()).get();
    EXPECT_TRUE(eventually([&] { return returned.load(); })) << "unsubscribe inside the callback did not return";
    j.rt.groups().subscribe("once", [&](const troupe::GroupEvent&) { later++; });
    j.rt.groups().join("once", j.rt.spawn<Echo>()).get();
    EXPECT_TRUE(eventually([&] { return later.load() == 1; }));
    EXPECT_EQ(calls.load(), 1);
  }
  barrier();
  j.rt.finish();
}

// A subscriber hears of the joins and leaves this node applies after it
// subscribed, not of one applied before and still waiting to be handed out.
TEST(Groups, ASubscriberDoesNotHearOfEventsAppliedBeforeItSubscribed) {
  std::atomic<bool> blocking{false}, release{false};
  std::vector<troupe::ActorId> heard;
  std::mutex heard_mu;
  Job j;
  if (j.me == 1) {
    // Events are handed out one at a time: this one holds the queue.
    j.rt.groups().subscribe("first", [&](const troupe::GroupEvent&) {
      blocking = true;
      for (int i = 0; i < 1000 && !release.load(); ++i) std::this_thread::sleep_for(5ms);
    });
    j.rt.groups().join("first", j.rt.spawn<Echo>()).get();
    ASSERT_TRUE(eventually([&] { return blocking.load(); }));
    auto before = j.rt.spawn<Echo>();
    j.rt.groups().join("g", before).get();  // applied here; its event waits in the queue
    j.rt.groups().subscribe("g", [&](const troupe::GroupEvent& e) {
      std::lock_guard lk(heard_mu);
      heard.push_back(e.actor);
    });
    auto after = j.rt.spawn<Echo>();
    j.rt.groups().join("g", after).get();
    release = true;
    EXPECT_TRUE(eventually([&] {
      std::lock_guard lk(heard_mu);
      return !heard.empty();
    }));
    std::this_thread::sleep_for(50ms);
    std::lock_guard lk(heard_mu);
    EXPECT_EQ(heard, std::vector<troupe::ActorId>{after.id()});
  }
  barrier();
  j.rt.finish();
}

// An entry that points at a node this node does not know yet (a member that
// took a new node in first wrote about it) is kept, not taken for an entry
// of a lost node and turned into a tombstone, which no later copy could undo.
TEST(Registry, AnEntryOwnedByANodeNotKnownYetIsKept) {
  Job j;
  if (j.me == 1) {
    auto& names = j.rt.names().registry_map();
    j.rt.registry().put("model", j.rt.spawn<Echo>()).get();
    auto e = *names.get("model");  // a value the registry can read
    e.owner = static_cast<troupe::NodeId>(j.rt.size());  // the next node to join
    e.ts = j.rt.core().clock().now().raw;
    EXPECT_TRUE(names.apply("ahead", e, /*from=*/0));
    EXPECT_TRUE(j.rt.registry().contains("ahead")) << "the entry was taken for one of a lost node";
  }
  barrier();
  j.rt.finish();
}
