// Received vectors that a method left whole are kept for the next received
// vector: bounded by count and bytes, per element type, and a vector made from
// a kept one is filled only where it grew.
#include <cereal/types/vector.hpp>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>
#include <thread>
#include <tuple>
#include <vector>

#include "troupe/detail/vector_recycler.hpp"
#include "troupe/runtime.hpp"
#include "troupe/wire/archive.hpp"
#include "wire_encode.hpp"

using namespace troupe::detail;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kDoublesPerMiB = kMiB / sizeof(double);

/// Every test starts with nothing kept and the given budget, and ends with none.
class Recycler : public ::testing::Test {
 protected:
  void SetUp() override { set_recycle_budget(64 * kMiB); }
  void TearDown() override { set_recycle_budget(0); }
};

std::vector<double> filled(std::size_t n, double first) {
  std::vector<double> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

}  // namespace

TEST_F(Recycler, AKeptVectorIsTakenWithItsMemoryAndWrittenOnlyWhereItGrows) {
  auto v = filled(2 * kDoublesPerMiB, 1.0);
  const double* mem = v.data();
  const auto before = recycle_stats();
  VectorRecycler<double>::give(v);
  EXPECT_EQ(v.capacity(), 0u) << "its storage was taken in";
  EXPECT_EQ(recycle_stats().kept, before.kept + 1);
  EXPECT_EQ(recycle_stats().held_bytes, 2 * kMiB);

  std::vector<double> into;
  ASSERT_TRUE(VectorRecycler<double>::take(into, 2 * kDoublesPerMiB - 10));
  EXPECT_EQ(into.data(), mem);
  EXPECT_EQ(recycle_stats().reused, before.reused + 1);
  EXPECT_EQ(recycle_stats().held_bytes, 0u);
  // The size it had is kept: shrinking writes nothing, so the old contents
  // show through (a received message overwrites all of it).
  into.resize(2 * kDoublesPerMiB - 10);
  EXPECT_EQ(into[100], 101.0);
  EXPECT_FALSE(VectorRecycler<double>::take(into, 2 * kDoublesPerMiB)) << "nothing is left";
}

TEST_F(Recycler, TakeWantsRoomAndNoMoreThanAQuarterMore) {
  auto v = filled(4 * kDoublesPerMiB, 0.0);
  VectorRecycler<double>::give(v);
  std::vector<double> into;
  EXPECT_FALSE(VectorRecycler<double>::take(into, 4 * kDoublesPerMiB + 1)) << "too small";
  EXPECT_FALSE(VectorRecycler<double>::take(into, 3 * kDoublesPerMiB)) << "a third more than needed";
  EXPECT_FALSE(VectorRecycler<double>::take(into, 1000)) << "small vectors are never made from kept ones";
  EXPECT_TRUE(VectorRecycler<double>::take(into, 4 * kDoublesPerMiB * 17 / 20));
  EXPECT_GE(into.capacity(), 4 * kDoublesPerMiB);
}

TEST_F(Recycler, TheSmallestThatFitsIsTaken) {
  auto a = filled(6 * kDoublesPerMiB, 0.0), b = filled(3 * kDoublesPerMiB, 0.0);
  auto c = filled(3 * kDoublesPerMiB + kDoublesPerMiB / 2, 0.0), d = filled(3 * kDoublesPerMiB + kDoublesPerMiB / 2 + 8, 0.0);
  const double* c_mem = c.data();
  for (auto* v : {&a, &d, &b, &c}) VectorRecycler<double>::give(*v);
  std::vector<double> into;
  ASSERT_TRUE(VectorRecycler<double>::take(into, 3 * kDoublesPerMiB + 5));
  EXPECT_EQ(into.data(), c_mem);
  EXPECT_EQ(recycle_stats().held_bytes, 6 * kMiB + 3 * kMiB + 3 * kMiB + kMiB / 2 + 64);
}

TEST_F(Recycler, SmallVectorsAndOtherElementTypesAreKeptApart) {
  std::vector<double> small(1000, 1.0);
  VectorRecycler<double>::give(small);
  EXPECT_EQ(small.size(), 1000u) << "below 1 MiB a vector is left to its owner";
  std::vector<float> f(kMiB, 1.0f);  // 4 MiB of floats
  VectorRecycler<float>::give(f);
  std::vector<double> d;
  EXPECT_FALSE(VectorRecycler<double>::take(d, kMiB / 2)) << "a float vector never becomes a double vector";
  std::vector<float> g;
  EXPECT_TRUE(VectorRecycler<float>::take(g, kMiB));
}

TEST_F(Recycler, TheOldestMakeRoomForNewOnesWithinCountAndBytes) {
  std::vector<std::vector<double>> many;
  for (std::size_t i = 0; i < kRecycleSlots + 2; ++i) many.push_back(filled(kDoublesPerMiB, 0.0));
  std::vector<const double*> mem;
  for (auto& v : many) mem.push_back(v.data());
  const auto before = recycle_stats();
  for (auto& v : many) VectorRecycler<double>::give(v);
  for (auto& v : many) EXPECT_EQ(v.capacity(), 0u) << "each was taken in";
  EXPECT_EQ(recycle_stats().kept, before.kept + kRecycleSlots + 2);
  EXPECT_EQ(recycle_stats().held_bytes, kRecycleSlots * kMiB) << "at most kRecycleSlots per element type";
  // The two oldest made room: the newest eight are there, and taken newest last.
  std::vector<const double*> left;
  std::vector<double> into;
  while (VectorRecycler<double>::take(into, kDoublesPerMiB)) {
    left.push_back(into.data());
    into = {};
  }
  EXPECT_EQ(left.size(), kRecycleSlots);
  for (const double* p : left) EXPECT_NE(std::find(mem.begin() + 2, mem.end(), p), mem.end());

  // Bytes: a stream whose size changed keeps its new size.
  set_recycle_budget(5 * kMiB);
  auto a = filled(3 * kDoublesPerMiB, 0.0), b = filled(4 * kDoublesPerMiB, 0.0);
  VectorRecycler<double>::give(a);
  const double* b_mem = b.data();
  VectorRecycler<double>::give(b);
  EXPECT_EQ(recycle_stats().held_bytes, 4 * kMiB) << "the older one made room";
  EXPECT_TRUE(VectorRecycler<double>::take(into, 4 * kDoublesPerMiB));
  EXPECT_EQ(into.data(), b_mem);
  // Larger than the whole budget: left to its owner, and nothing made room for it.
  auto c = filled(kDoublesPerMiB, 0.0), huge = filled(6 * kDoublesPerMiB, 0.0);
  VectorRecycler<double>::give(c);
  VectorRecycler<double>::give(huge);
  EXPECT_EQ(huge.size(), 6 * kDoublesPerMiB);
  EXPECT_EQ(recycle_stats().held_bytes, kMiB);
  // Another element type cannot take this one's room.
  std::vector<std::int64_t> other(5 * kMiB / sizeof(std::int64_t), 1);
  VectorRecycler<std::int64_t>::give(other);
  EXPECT_EQ(other.size(), 5 * kMiB / sizeof(std::int64_t));
  set_recycle_budget(0);
  EXPECT_EQ(recycle_stats().held_bytes, 0u) << "lowering the budget frees what is kept";
}

TEST_F(Recycler, OnlyACallsOwnWholeVectorArgumentsAreGiven) {
  std::tuple<int, std::vector<double>, std::vector<double>, std::vector<bool>> args{
      7, filled(kDoublesPerMiB, 0.0), {}, std::vector<bool>(16 * kMiB)};
  recycle_arguments(args);
  EXPECT_EQ(std::get<1>(args).capacity(), 0u);
  EXPECT_EQ(std::get<3>(args).size(), 16 * kMiB) << "vector<bool> is not a block of numbers";
  EXPECT_EQ(recycle_stats().held_bytes, kMiB);
}

TEST_F(Recycler, AReceivedVectorIsMadeFromAKeptOneAndHoldsExactlyTheMessage) {
  for (const std::size_t n : {2 * kDoublesPerMiB, 2 * kDoublesPerMiB - 3, 2 * kDoublesPerMiB + 7}) {
    auto kept = filled(2 * kDoublesPerMiB + 16, -1.0);  // room for each n (shrunk to it), old values all negative
    const double* mem = kept.data();
    VectorRecycler<double>::give(kept);
    const auto src = filled(n, 5.0);
    const auto enc = wire_test::encode_with_segments(src);
    std::vector<double> dst;
    WireInputArchive in(enc.bytes.data(), enc.bytes.size(), enc.sizes.data(), enc.sizes.size());
    in(dst);
    ASSERT_TRUE(in.complete());
    ASSERT_EQ(in.destinations().size(), 1u);
    EXPECT_EQ(dst.data(), mem) << n;
    EXPECT_EQ(in.destinations()[0].data, dst.data()) << "received straight into the kept memory";
    std::memcpy(in.destinations()[0].data, enc.segments[0].data, enc.segments[0].size);  // what MPI does
    EXPECT_EQ(dst, src) << n;
  }
  // Kept with room beyond its size: a longer message grows it within its
  // memory (the new tail is filled, then received into).
  {
    std::vector<double> kept;
    kept.reserve(2 * kDoublesPerMiB);
    kept.assign(2 * kDoublesPerMiB - 100, -1.0);
    const double* mem = kept.data();
    VectorRecycler<double>::give(kept);
    const auto src = filled(2 * kDoublesPerMiB, 3.0);
    const auto enc = wire_test::encode_with_segments(src);
    std::vector<double> dst;
    WireInputArchive in(enc.bytes.data(), enc.bytes.size(), enc.sizes.data(), enc.sizes.size());
    in(dst);
    ASSERT_EQ(dst.data(), mem);
    ASSERT_EQ(dst.size(), src.size());
    EXPECT_EQ(dst.back(), 0.0) << "the grown tail is value-initialised before MPI writes it";
    std::memcpy(in.destinations()[0].data, enc.segments[0].data, enc.segments[0].size);
    EXPECT_EQ(dst, src);
  }
  // Decoded after its blocks arrived (types that are not zero-copy safe):
  // copied into the kept memory.
  {
    auto kept = filled(2 * kDoublesPerMiB, -1.0);
    const double* mem = kept.data();
    VectorRecycler<double>::give(kept);
    const auto src = filled(2 * kDoublesPerMiB - 1, 9.0);
    const auto enc = wire_test::encode_with_segments(src);
    ByteBuffer block;
    block.append(enc.segments[0].data, enc.segments[0].size);
    std::vector<double> dst;
    WireInputArchive in(enc.bytes.data(), enc.bytes.size(), enc.sizes.data(), enc.sizes.size());
    in.use_received_segments(&block);
    in(dst);
    ASSERT_TRUE(in.complete());
    EXPECT_EQ(dst.data(), mem);
    EXPECT_EQ(dst, src);
  }
  // Nothing kept fits: a new vector, as before.
  const auto src = filled(kDoublesPerMiB, 1.0);
  const auto enc = wire_test::encode_with_segments(src);
  std::vector<double> dst;
  WireInputArchive in(enc.bytes.data(), enc.bytes.size(), enc.sizes.data(), enc.sizes.size());
  const auto reused = recycle_stats().reused;
  in(dst);
  EXPECT_EQ(recycle_stats().reused, reused);
  EXPECT_EQ(dst.size(), src.size());
}

TEST_F(Recycler, ConcurrentGivesTakesAndBudgetChangesKeepTheAccountsRight) {
  // Calls are destroyed on worker threads while the engine thread makes
  // vectors, and a runtime may lower the budget meanwhile (run under TSan).
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; ++t)
    workers.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        const std::size_t n = kDoublesPerMiB + static_cast<std::size_t>((i + t) % 3) * 1000;
        std::vector<double> v;
        if (!VectorRecycler<double>::take(v, n)) v.reserve(n);
        ASSERT_GE(v.capacity(), n);
        v.resize(n);
        v[n - 1] = static_cast<double>(i);
        VectorRecycler<double>::give(v);
      }
    });
  std::thread budget([&] {
    for (int i = 0; !stop.load(); ++i) {
      set_recycle_budget(i % 2 == 0 ? 0 : 6 * kMiB);
      std::this_thread::yield();
    }
  });
  for (auto& w : workers) w.join();
  stop.store(true);
  budget.join();
  set_recycle_budget(6 * kMiB);
  EXPECT_LE(recycle_stats().held_bytes, 6 * kMiB);
  set_recycle_budget(0);
  EXPECT_EQ(recycle_stats().held_bytes, 0u) << "every byte held was accounted for";
}

TEST(RecyclerConfig, ARuntimeSetsTheBudgetAndFreesWhatIsKeptWhenItShutsDown) {
  {
    troupe::Config cfg;
    cfg.threads = 1;
    troupe::Runtime rt(cfg);
    EXPECT_EQ(recycle_budget(), cfg.recycled_vector_bytes);
    auto v = filled(kDoublesPerMiB, 0.0);
    VectorRecycler<double>::give(v);
    EXPECT_EQ(recycle_stats().held_bytes, kMiB);
  }
  EXPECT_EQ(recycle_stats().held_bytes, 0u);
  EXPECT_EQ(recycle_budget(), 0u);
  {
    troupe::Config none;
    none.threads = 1;
    none.recycled_vector_bytes = 0;
    troupe::Runtime rt(none);
    auto v = filled(kDoublesPerMiB, 0.0);
    VectorRecycler<double>::give(v);
    EXPECT_EQ(v.size(), kDoublesPerMiB) << "0 keeps none";
  }
  // The environment wins over the config.
  ::setenv("TROUPE_RECYCLED_VECTORS_MB", "3", 1);
  {
    troupe::Config cfg;
    cfg.threads = 1;
    troupe::Runtime rt(cfg);
    EXPECT_EQ(recycle_budget(), 3 * kMiB);
  }
  ::unsetenv("TROUPE_RECYCLED_VECTORS_MB");
}
