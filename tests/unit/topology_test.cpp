// Thread placement: plans on hwloc synthetic topologies, and real pinning on
// this machine (inside the cpuset the process was given).
#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <set>
#include <string>
#include <thread>

#include "common/thread_names.hpp"
#include "core/thread_name.hpp"
#include "topology/placement.hpp"
#include "topology/topology.hpp"
#include "troupe/troupe.hpp"

using troupe::Pinning;
using troupe::detail::ThreadSlot;
using troupe::detail::Topology;

namespace {

constexpr const char* kTwoSockets = "pack:2 numa:2 core:8 pu:2";  // 4 NUMA nodes, 32 cores, 64 PUs

std::set<int> numas(const std::vector<ThreadSlot>& plan) {
  std::set<int> s;
  for (auto& slot : plan) s.insert(slot.numa);
  return s;
}

std::set<unsigned> all_pus(const std::vector<ThreadSlot>& plan) {
  std::set<unsigned> s;
  for (auto& slot : plan) s.insert(slot.pus.begin(), slot.pus.end());
  return s;
}

}  // namespace

TEST(Topology, SyntheticShape) {
  auto t = Topology::synthetic(kTwoSockets);
  EXPECT_TRUE(t.is_synthetic());
  EXPECT_EQ(t.packages(), 2u);
  EXPECT_EQ(t.numa_nodes(), 4u);
  EXPECT_EQ(t.cores(), 32u);
  EXPECT_EQ(t.pus(), 64u);
  EXPECT_EQ(t.allowed_pus().size(), 64u);
}

TEST(Topology, CompactFillsOneNumaNodeFirst) {
  auto t = Topology::synthetic(kTwoSockets);
  auto plan = t.plan(4, Pinning::compact);
  ASSERT_EQ(plan.size(), 4u);
  for (auto& s : plan) {
    EXPECT_EQ(s.pus.size(), 2u) << "a thread gets a whole core (both hyperthreads)";
    EXPECT_EQ(s.package, 0);
  }
  EXPECT_EQ(numas(plan).size(), 1u);
  EXPECT_EQ(all_pus(plan).size(), 8u) << "no two threads share a core";
}

TEST(Topology, ScatterSpreadsOverPackagesThenNumaNodes) {
  auto t = Topology::synthetic(kTwoSockets);
  auto two = t.plan(2, Pinning::scatter);
  EXPECT_NE(two[0].package, two[1].package);
  auto four = t.plan(4, Pinning::scatter);
  EXPECT_EQ(numas(four).size(), 4u);
  auto eight = t.plan(8, Pinning::scatter);
  std::map<int, int> per_numa;
  for (auto& s : eight) per_numa[s.numa]++;
  for (auto& [n, c] : per_numa) EXPECT_EQ(c, 2) << "NUMA node " << n;
}

TEST(Topology, MoreThreadsThanCoresUseSinglePus) {
  auto t = Topology::synthetic(kTwoSockets);
  for (auto policy : {Pinning::compact, Pinning::scatter}) {
    auto plan = t.plan(64, policy);
    for (auto& s : plan) EXPECT_EQ(s.pus.size(), 1u);
    EXPECT_EQ(all_pus(plan).size(), 64u) << "every PU used exactly once";
  }
  // Past the PU count, threads wrap around.
  auto over = t.plan(70, Pinning::compact);
  EXPECT_EQ(over.size(), 70u);
  EXPECT_EQ(over[64].pus, over[0].pus);
}

TEST(Topology, PlansStayInsideTheLaunchersCpuset) {
  auto t = Topology::synthetic(kTwoSockets);
  auto pkg1 = t.plan(64, Pinning::compact);
  std::vector<unsigned> second_package;
  for (auto& s : pkg1)
    if (s.package == 1) second_package.insert(second_package.end(), s.pus.begin(), s.pus.end());
  ASSERT_EQ(second_package.size(), 32u);
  t.restrict_to(second_package);
  for (auto policy : {Pinning::compact, Pinning::scatter, Pinning::none}) {
    auto plan = t.plan(6, policy);
    for (auto& s : plan)
      for (auto pu : s.pus)
        EXPECT_NE(std::find(second_package.begin(), second_package.end(), pu), second_package.end());
  }
  auto scatter = t.plan(2, Pinning::scatter);
  EXPECT_NE(scatter[0].numa, scatter[1].numa) << "still spread over the NUMA nodes it may use";
}

TEST(Topology, NoneGivesEveryThreadTheWholeCpuset) {
  auto t = Topology::synthetic(kTwoSockets);
  auto plan = t.plan(3, Pinning::none);
  for (auto& s : plan) EXPECT_EQ(s.pus.size(), 64u);
}

TEST(Topology, BadInputIsReported) {
  EXPECT_THROW(Topology::synthetic("pack:two"), troupe::Error);
  auto t = Topology::synthetic("core:2 pu:1");
  EXPECT_THROW(t.restrict_to({99}), troupe::Error);
  EXPECT_EQ(troupe::detail::parse_cpu_list("0-2,5"), (std::vector<unsigned>{0, 1, 2, 5}));
  EXPECT_THROW(troupe::detail::parse_cpu_list("a-b"), troupe::Error);
}

namespace {
struct WhereAmI {
  std::vector<unsigned> binding() { return Topology::system().current_thread_binding(); }
};

std::vector<std::vector<unsigned>> worker_bindings(troupe::Runtime& rt, int samples) {
  std::vector<troupe::ActorRef<WhereAmI>> actors;
  for (int i = 0; i < samples; ++i) actors.push_back(rt.spawn<WhereAmI>());
  std::vector<troupe::Future<std::vector<unsigned>>> fs;
  for (auto& a : actors) fs.push_back(a.ask<&WhereAmI::binding>());
  return troupe::when_all(std::move(fs)).get();
}
}  // namespace

TEST(Topology, WorkersArePinnedOnThisMachine) {
  auto sys = Topology::system();
  auto allowed = sys.allowed_pus();
  troupe::Config cfg;
  cfg.threads = allowed.size();
  cfg.pinning = Pinning::compact;
  troupe::Runtime rt(cfg);
  auto plan = sys.plan(cfg.threads, Pinning::compact);
  for (auto& b : worker_bindings(rt, 32)) {
    bool matches = std::any_of(plan.begin(), plan.end(), [&](const ThreadSlot& s) { return s.pus == b; });
    EXPECT_TRUE(matches) << "worker bound to a set outside the plan";
  }
}

TEST(Topology, PinningRespectsTheProcessBinding) {
  // Act as mpirun would: bind the launching thread to one PU, then start.
  cpu_set_t old_set;
  ASSERT_EQ(sched_getaffinity(0, sizeof(old_set), &old_set), 0);
  auto allowed = Topology::system().allowed_pus();
  const unsigned last = allowed.back();
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(last, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  {
    auto sys = Topology::system();
    EXPECT_EQ(sys.allowed_pus(), std::vector<unsigned>{last});
    troupe::Config cfg;
    cfg.threads = 3;  // more threads than PUs: they share the one PU
    troupe::Runtime rt(cfg);
    EXPECT_EQ(rt.threads(), 3u);
    for (auto& b : worker_bindings(rt, 12)) EXPECT_EQ(b, std::vector<unsigned>{last});
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof(old_set), &old_set), 0);
}

TEST(Topology, ThreadCountDefaultsToTheCpuset) {
  troupe::Config cfg;
  troupe::Runtime rt(cfg);
  EXPECT_EQ(rt.threads(), Topology::system().allowed_pus().size());
}

namespace {
struct WhoAmI {
  std::string name() { return troupe::detail::this_thread_name(); }
};
}  // namespace

TEST(Topology, RuntimeThreadsCarryTheirNames) {
  troupe::Config cfg;
  cfg.threads = 2;
  troupe::Runtime rt(cfg);
  auto a = rt.spawn<WhoAmI>();
  for (int i = 0; i < 8; ++i) {
    const auto name = a.ask<&WhoAmI::name>().get();
    EXPECT_TRUE(name == "troupe-worker0" || name == "troupe-worker1") << "an actor ran on a thread named '" << name << "'";
  }
  const auto names = test_support::thread_names_of_this_process();
  EXPECT_EQ(std::count(names.begin(), names.end(), "troupe-timer"), 1);
  // Longer names are cut to the kernel's 15 characters, never refused.
  std::thread([] {
    troupe::detail::name_this_thread("a-name-longer-than-fifteen");
    EXPECT_EQ(troupe::detail::this_thread_name(), "a-name-longer-t");
  }).join();
}

TEST(Topology, RanksThatShareTheAllowedSetStartWhereTheOnesBeforeThemLeftOff) {
  auto t = Topology::synthetic(kTwoSockets);
  // Four ranks of two workers each on one cpuset: eight different cores, not
  // the first two four times over.
  std::set<unsigned> pus;
  for (std::size_t rank = 0; rank < 4; ++rank)
    for (auto& s : t.plan(2, Pinning::compact, rank * 2)) pus.insert(s.pus.begin(), s.pus.end());
  EXPECT_EQ(pus.size(), 16u) << "two threads of different ranks share a core while others are free";
  // The offset wraps: a rank past the cores starts again at the first.
  EXPECT_EQ(t.plan(1, Pinning::compact, 32)[0].pus, t.plan(1, Pinning::compact, 0)[0].pus);
  EXPECT_EQ(t.plan(1, Pinning::compact, 33)[0].pus, t.plan(1, Pinning::compact, 1)[0].pus);
  // Single PUs (more threads than cores) wrap the same way.
  EXPECT_EQ(t.plan(64, Pinning::compact, 64)[5].pus, t.plan(64, Pinning::compact)[5].pus);
}

TEST(Topology, TheLocalRankComesFromTheLauncher) {
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  unsetenv("MPI_LOCALRANKID");
  unsetenv("SLURM_LOCALID");
  EXPECT_EQ(troupe::detail::local_rank(), 0u);
  setenv("SLURM_LOCALID", "3", 1);
  EXPECT_EQ(troupe::detail::local_rank(), 3u);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "2", 1);  // mpirun's word first
  EXPECT_EQ(troupe::detail::local_rank(), 2u);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "x", 1);  // not a number: the next
  EXPECT_EQ(troupe::detail::local_rank(), 3u);
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  unsetenv("SLURM_LOCALID");
}
