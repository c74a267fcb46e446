// Nodes that register one class differently (an MPMD job of two binaries, made
// here by one binary that registers by rank) refuse to start, all of them,
// with the reason (run on 2 ranks).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>
#include <string>

#include "troupe/mpi.hpp"
#include "troupe/remote.hpp"
#include "troupe/troupe.hpp"
#include "troupe/wire/registry.hpp"

namespace first {
struct Probe {
  explicit Probe(int v) : v_(v) {}
  int get(int k) const { return v_ + k; }
  int v_;
};
struct Sample {
  int count = 0;
  double mean = 0;
  template <class A>
  void serialize(A& ar) {
    ar(count, mean);
  }
};
struct Meter {
  void take(const Sample&) {}
};
}  // namespace first

namespace second {
struct Probe {  // the "other binary's" Probe: other types under the same names
  explicit Probe(double v) : v_(v) {}
  double get(double k) const { return v_ + k; }
  double v_;
};
struct Sample {  // the same fields, in another order
  double mean = 0;
  int count = 0;
  template <class A>
  void serialize(A& ar) {
    ar(mean, count);
  }
};
struct Meter {
  void take(const Sample&) {}
};
}  // namespace second

// Both ask for their fields to be compared.
template <>
struct troupe::compare_wire_fields<first::Sample> : std::true_type {};
template <>
struct troupe::compare_wire_fields<second::Sample> : std::true_type {};

namespace {

// The launcher's rank, known before MPI starts (registration runs before main).
int launch_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"})
    if (const char* v = std::getenv(var); v != nullptr && *v != '\0') return std::atoi(v);
  return -1;
}

const bool registered = launch_rank() == 0
                            ? troupe::detail::register_remote<first::Probe, troupe::init<int>, &first::Probe::get>(
                                  "Probe", "troupe::init<int>, &Probe::get")
                            : troupe::detail::register_remote<second::Probe, troupe::init<double>, &second::Probe::get>(
                                  "Probe", "troupe::init<double>, &Probe::get");
const bool meter_registered =
    launch_rank() == 0
        ? troupe::detail::register_remote<first::Meter, troupe::init<>, &first::Meter::take>(
              "Meter", "troupe::init<>, &Meter::take")
        : troupe::detail::register_remote<second::Meter, troupe::init<>, &second::Meter::take>(
              "Meter", "troupe::init<>, &Meter::take");

std::string refusal() {
  try {
    troupe::Runtime rt(troupe::adopt(MPI_COMM_WORLD));
    rt.finish();
  } catch (const troupe::Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST(WireAgreement, NodesThatRegisterAClassDifferentlyAllRefuseToStartAndSayWhy) {
  ASSERT_TRUE(registered && meter_registered);
  ASSERT_GE(launch_rank(), 0) << "this test needs the launcher's rank in the environment";
  const std::string why = refusal();
  EXPECT_TRUE(has(why, "class 'Probe' is registered as init(i4) on node 0 but as init(f8) on node 1")) << why;
  EXPECT_TRUE(has(why, "method 'Probe::get' is registered as (i4)->i4 on node 0 but as (f8)->f8 on node 1")) << why;
  // A user class's fields are compared too: the same fields in another order.
  EXPECT_TRUE(has(why, "method 'Meter::take' is registered as ({i4,f8})->- on node 0 but as ({f8,i4})->- on node 1"))
      << why;
  EXPECT_FALSE(has(why, "class 'Meter'")) << why;  // its init<> is alike
}

TEST(WireAgreement, ARegistrationProblemOfOneNodeStopsEveryNode) {
  // Node 1 registers once more after a runtime started (a mistake of its
  // own). Node 0 must refuse as well: left to go on alone, it would wait in
  // the next collective for ever.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  troupe::detail::WireRegistry::instance().freeze();  // as a runtime's start does (this test may run first)
  if (rank == 1)
    troupe::detail::register_remote<second::Probe, troupe::init<double>, &second::Probe::get>(
        "Late", "troupe::init<double>, &Probe::get");
  const std::string why = refusal();
  // Every node tells the same: node 1's problems, in its words.
  EXPECT_TRUE(has(why, "node 1: TROUPE_REMOTE: 'Late' registered after a runtime started")) << why;
  EXPECT_TRUE(has(why, "node 1: TROUPE_REMOTE: 'Late::Probe::get' registered after a runtime started")) << why;
  EXPECT_FALSE(has(why, "node 0:")) << why;
  EXPECT_TRUE(has(why, "is registered as init(i4) on node 0 but as init(f8) on node 1")) << why;
}

TEST(StartUp, HeartbeatSettingsThatWouldDeclareEveryNodeLostAreRefused) {
  // 0 ms, or a value that is not a number (read as 0 before), had every node
  // take its neighbour for lost at the first look.
  const char* was = std::getenv("TROUPE_HEARTBEAT_TIMEOUT_MS");
  const std::string kept = was != nullptr ? was : "";
  for (const char* bad : {"abc", "0", "-5", "12ms", "99999999999999999999"}) {
    setenv("TROUPE_HEARTBEAT_TIMEOUT_MS", bad, 1);
    const std::string why = refusal();
    EXPECT_TRUE(has(why, std::string("TROUPE_HEARTBEAT_TIMEOUT_MS='") + bad + "' is not a number of milliseconds"))
        << bad << ": " << why;
  }
  setenv("TROUPE_HEARTBEAT_TIMEOUT_MS", "50", 1);  // shorter than the 100 ms period
  const std::string why = refusal();
  EXPECT_TRUE(has(why, "the heartbeat timeout (50 ms) must be longer than the heartbeat period (100 ms)")) << why;
  if (was != nullptr) {
    setenv("TROUPE_HEARTBEAT_TIMEOUT_MS", kept.c_str(), 1);
  } else {
    unsetenv("TROUPE_HEARTBEAT_TIMEOUT_MS");
  }
}
