// take_out: what a node's loss uses to take the calls that waited for it out
// of their tables, with no memory to spare.
#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include "mpi/failing_new.hpp"
#include "remote/take_out.hpp"

using troupe::detail::take_out;

namespace {

/// 100 entries, keys 0..99, values "v<key>" (long enough to live on the heap).
template <class Map>
Map hundred() {
  Map m;
  for (int k = 0; k < 100; ++k) m.emplace(k, "value long enough to live on the heap " + std::to_string(k));
  return m;
}

/// Takes the odd keys out of a map of 100, in batches of 8, and checks that
/// each was handed over once and the even ones stayed, with every allocation
/// failing meanwhile.
template <class Map>
void takes_every_match_once_with_no_memory() {
  auto m = hundred<Map>();
  const auto expected = hundred<std::map<int, std::string>>();  // made before memory runs out
  std::mutex mu;
  int seen[100] = {};
  int taken = 0;
  tt::fail_allocations_from(0);
  try {
    take_out<8>(mu, m, [](const auto& e) { return e.first % 2 == 1; }, [&](auto& nh) {
      ++seen[nh.key()];
      ++taken;
      if (nh.mapped() != expected.at(nh.key())) ADD_FAILURE() << "key " << nh.key() << " came with another value";
    });
  } catch (const std::bad_alloc&) {
    tt::stop_failing();
    FAIL() << "take_out allocated";
  }
  EXPECT_FALSE(tt::stop_failing()) << "take_out allocated (and the failure was swallowed)";
  EXPECT_EQ(taken, 50);
  for (int k = 0; k < 100; ++k) EXPECT_EQ(seen[k], k % 2) << "key " << k;
  EXPECT_EQ(m.size(), 50u);
  for (const auto& [k, v] : m) EXPECT_EQ(k % 2, 0) << "key " << k << " stayed";
}

}  // namespace

TEST(TakeOut, TakesEveryMatchingEntryOnceInBatchesWithoutAllocating) {
  takes_every_match_once_with_no_memory<std::map<int, std::string>>();
  takes_every_match_once_with_no_memory<std::unordered_map<int, std::string>>();
}

TEST(TakeOut, HandsEachBatchOverOutsideTheLock) {
  // What a taker does may take the lock (a failed call's continuation asks
  // again, and the ask is recorded in the same table).
  auto m = hundred<std::map<int, std::string>>();
  std::mutex mu;
  int taken = 0;
  take_out<16>(mu, m, [](const auto&) { return true; }, [&](auto&) {
    EXPECT_TRUE(mu.try_lock()) << "the lock was held while an entry was handed over";
    mu.unlock();
    ++taken;
  });
  EXPECT_EQ(taken, 100);
  EXPECT_TRUE(m.empty());
}
