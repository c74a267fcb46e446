// Received vectors that a method left whole are kept for the next received
// vector: bounded by count and bytes, per element type, and a vector made from
// a kept one is filled only where it grew.
#include <cereal/types/vector.hpp>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <numeric>
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

TEST_F(Recycler, TakeWantsRoomAndNoMoreThanTwiceTheSize) {
  auto v = filled(4 * kDoublesPerMiB, 0.0);
  VectorRecycler<double>::give(v);
  std::vector<double> into;
  EXPECT_FALSE(VectorRecycler<double>::take(into, 4 * kDoublesPerMiB + 1)) << "too small";
  EXPECT_FALSE(VectorRecycler<double>::take(into, 2 * kDoublesPerMiB - 1)) << "more than twice too large";
  EXPECT_FALSE(VectorRecycler<double>::take(into, 1000)) << "small vectors are never made from kept ones";
  EXPECT_TRUE(VectorRecycler<double>::take(into, 2 * kDoublesPerMiB));
  EXPECT_GE(into.capacity(), 4 * kDoublesPerMiB);
}

TEST_F(Recycler, TheSmallestThatFitsIsTaken) {
  auto a = filled(6 * kDoublesPerMiB, 0.0), b = filled(3 * kDoublesPerMiB, 0.0), c = filled(4 * kDoublesPerMiB, 0.0);
  const double* c_mem = c.data();
  VectorRecycler<double>::give(a);
  VectorRecycler<double>::give(b);
  VectorRecycler<double>::give(c);
  std::vector<double> into;
  ASSERT_TRUE(VectorRecycler<double>::take(into, 3 * kDoublesPerMiB + 5));
  EXPECT_EQ(into.data(), c_mem);
  EXPECT_EQ(recycle_stats().held_bytes, 9 * kMiB);
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

TEST_F(Recycler, CountAndBytesAreBounded) {
  std::vector<std::vector<double>> many;
  for (std::size_t i = 0; i < kRecycleSlots + 2; ++i) many.push_back(filled(kDoublesPerMiB, 0.0));
  for (auto& v : many) VectorRecycler<double>::give(v);
  std::size_t kept = 0;
  for (auto& v : many) kept += v.capacity() == 0;
  EXPECT_EQ(kept, kRecycleSlots) << "at most kRecycleSlots per element type";
  EXPECT_EQ(recycle_stats().held_bytes, kRecycleSlots * kMiB);

  set_recycle_budget(0);
  EXPECT_EQ(recycle_stats().held_bytes, 0u) << "a smaller budget frees what it no longer allows";
  set_recycle_budget(5 * kMiB);
  auto a = filled(3 * kDoublesPerMiB, 0.0), b = filled(3 * kDoublesPerMiB, 0.0);
  VectorRecycler<double>::give(a);
  VectorRecycler<double>::give(b);
  EXPECT_EQ(a.capacity(), 0u);
  EXPECT_EQ(b.size(), 3 * kDoublesPerMiB) << "over the budget: left to its owner";
  clear_recycled_vectors();
  EXPECT_EQ(recycle_stats().held_bytes, 0u);
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
    auto kept = filled(2 * kDoublesPerMiB + 16, -1.0);  // room for each n, its old values all negative
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
  troupe::Config none;
  none.threads = 1;
  none.recycled_vector_bytes = 0;
  troupe::Runtime rt(none);
  auto v = filled(kDoublesPerMiB, 0.0);
  VectorRecycler<double>::give(v);
  EXPECT_EQ(v.size(), kDoublesPerMiB) << "0 keeps none";
}
