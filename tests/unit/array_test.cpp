// troupe::Array: pooled, uninitialised, move-only bulk storage, and its wire
// form (a zero-copy segment once large enough).
#include <gtest/gtest.h>

#include <limits>
#include <new>
#include <numeric>
#include <stdexcept>

#include "troupe/array.hpp"
#include "troupe/wire/archive.hpp"
#include "wire_encode.hpp"

using troupe::Array;
using namespace troupe::detail;

TEST(Array, BasicsAndClone) {
  Array<double> a(1000, 2.5);
  EXPECT_EQ(a.size(), 1000u);
  EXPECT_EQ(a[999], 2.5);
  auto b = a.clone();
  b[0] = 7;
  EXPECT_EQ(a[0], 2.5);
  Array<double> c = std::move(b);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(c[0], 7);
  Array<int> d{1, 2, 3};
  EXPECT_EQ(std::accumulate(d.begin(), d.end(), 0), 6);
  Array<char> none;
  EXPECT_EQ(none.data(), nullptr);
}

TEST(Array, LargeBlocksAreRecycled) {
  const double* first = nullptr;
  {
    Array<double> big(1 << 20);  // 8 MiB
    first = big.data();
  }
  Array<double> again(1 << 20);
  EXPECT_EQ(again.data(), first) << "a released block of the same class is reused";
}

TEST(Array, TravelsAsAZeroCopySegment) {
  Array<double> src(100000);
  std::iota(src.begin(), src.end(), 0.0);
  const auto enc = wire_test::encode_with_segments(src);
  const auto& segs = enc.segments;
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].data, src.data()) << "sent from the array's own memory";
  std::uint64_t size = segs[0].size;
  Array<double> dst;
  WireInputArchive in(enc.bytes.data(), enc.bytes.size(), &size, 1);
  in(dst);
  ASSERT_TRUE(in.complete());
  ASSERT_EQ(in.destinations().size(), 1u);
  EXPECT_EQ(in.destinations()[0].data, dst.data()) << "received straight into the decoded array";
  std::memcpy(in.destinations()[0].data, segs[0].data, size);  // what MPI does
  EXPECT_EQ(dst[99999], 99999.0);
  static_assert(zero_copy_safe<std::tuple<Array<double>, int>>::value);
}

TEST(Array, AFullPoolMakesRoomForTheSizeInUseNow) {
  array_pool_set_budget(0);  // start empty: earlier tests left blocks behind
  array_pool_set_budget(std::size_t{8} << 20);
  {
    std::vector<Array<char>> small;
    for (int i = 0; i < 40; ++i) small.emplace_back(std::size_t{256} << 10);
  }
  EXPECT_EQ(array_pool_kept_blocks(std::size_t{256} << 10), 32u) << "8 MiB of 256 KiB blocks kept, the rest freed";
  { Array<char> big(std::size_t{3} << 20); }
  EXPECT_EQ(array_pool_kept_blocks(std::size_t{3} << 20), 1u) << "the size in use now is kept";
  EXPECT_EQ(array_pool_kept_blocks(std::size_t{256} << 10), 20u) << "by freeing 3 MiB of the older size";
  const char* kept = nullptr;
  {
    Array<char> again(std::size_t{3} << 20);
    kept = again.data();
  }
  {
    Array<char> third(std::size_t{3} << 20);
    EXPECT_EQ(third.data(), kept) << "and reused";
  }
  array_pool_set_budget(0);
  EXPECT_EQ(array_pool_kept_blocks(std::size_t{3} << 20), 0u);
  EXPECT_EQ(array_pool_kept_blocks(std::size_t{256} << 10), 0u);
  array_pool_set_budget(std::size_t{512} << 20);
}

TEST(Array, ACountTooLargeForMemoryIsRefusedNotWrapped) {
  const auto huge = std::numeric_limits<std::size_t>::max();  // a negative int, converted
  EXPECT_THROW(static_cast<void>(troupe::Array<double>(huge)), std::length_error);
  EXPECT_THROW(static_cast<void>(troupe::Array<double>(std::size_t{1} << 61)), std::length_error);  // 2^64 bytes: 0 once wrapped
  EXPECT_THROW(static_cast<void>(troupe::Array<char>(huge)), std::bad_alloc);
}
