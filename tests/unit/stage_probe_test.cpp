// Stage probes (include/troupe/detail/stage_probe.hpp), compiled here with
// TROUPE_STAGE_PROBES whatever the build's option (tests/unit/CMakeLists.txt).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>

#include "troupe/detail/stage_probe.hpp"

namespace {

using namespace troupe::detail::stage;

struct Step {
  std::string from, to;
  unsigned long long count = 0;
  double ns = 0;
};

/// The step from -> to in report()'s lines, count 0 if absent.
Step find(const std::string& report, const std::string& from, const std::string& to) {
  std::istringstream lines(report);
  std::string line;
  while (std::getline(lines, line)) {
    char a[32] = {}, b[32] = {};
    Step s;
    if (std::sscanf(line.c_str(), "{\"from\":\"%31[^\"]\",\"to\":\"%31[^\"]\",\"count\":%llu,\"ns\":%lf}", a, b, &s.count,
                    &s.ns) == 4 &&
        from == a && to == b) {
      s.from = a;
      s.to = b;
      return s;
    }
  }
  return {};
}

void spin_for(std::chrono::microseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

}  // namespace

TEST(StageProbe, TimesEachStepBetweenAThreadsProbes) {
  static_assert(enabled);
  reset();
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) {
    TROUPE_STAGE(post);
    spin_for(std::chrono::microseconds(20));
    TROUPE_STAGE(isend_begin);
  }
  const double wall_ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - started).count();
  const std::string r = report(1);
  const Step work = find(r, "post", "isend_begin");
  EXPECT_EQ(work.count, 100u) << r;
  EXPECT_GE(work.ns, 20'000.0) << r;
  EXPECT_LT(work.ns, 20'000'000.0) << r;  // calibrated to ns, not raw ticks of another scale
  const Step back = find(r, "isend_begin", "post");
  EXPECT_EQ(back.count, 99u) << r;
  // The steps of one thread never add up to more than the time that passed
  // (however the thread was scheduled meanwhile).
  EXPECT_LE(work.ns * 100 + back.ns * 99, wall_ns * 1.01) << r;
}

TEST(StageProbe, ThreadsKeepChainsOfTheirOwnAndResetForgets) {
  reset();
  auto chain = [](int n) {
    for (int i = 0; i < n; ++i) {
      TROUPE_STAGE(frame_landed);
      TROUPE_STAGE(frame_done);
    }
  };
  std::thread t1(chain, 500), t2(chain, 300);
  t1.join();
  t2.join();
  std::string r = report(1);
  EXPECT_EQ(find(r, "frame_landed", "frame_done").count, 800u) << r;
  // Each thread's chain: n - 1 steps back to its start, none across threads.
  EXPECT_EQ(find(r, "frame_done", "frame_landed").count, 798u) << r;
  EXPECT_TRUE(report(801).empty()) << "min_count leaves out rarer steps";
  reset();
  EXPECT_EQ(find(report(1), "frame_landed", "frame_done").count, 0u);
}

TEST(StageProbe, NoStepSpansAReset) {
  reset();
  TROUPE_STAGE(on_call);
  reset();
  TROUPE_STAGE(on_reply);
  TROUPE_STAGE(reply_begin);
  const std::string r = report(1);
  EXPECT_EQ(find(r, "on_call", "on_reply").count, 0u) << r;
  EXPECT_EQ(find(r, "on_reply", "reply_begin").count, 1u) << r;
}

TEST(StageProbe, EveryStageHasAName) {
  for (int s = 0; s < static_cast<int>(Stage::count); ++s)
    EXPECT_STRNE(name(static_cast<Stage>(s)), "?") << s;
  EXPECT_STREQ(name(Stage::count), "?");
}
