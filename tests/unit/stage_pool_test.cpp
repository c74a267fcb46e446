// The staging pool of the engine (transport/stage_pool.hpp), when staging is
// wanted, and the envelope's mark on a block that travels in pieces.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "transport/stage_pool.hpp"
#include "troupe/error.hpp"
#include "wire/envelope.hpp"

using troupe::detail::kPiece;
using troupe::detail::kSegmentPieced;
using troupe::detail::StagePool;
using troupe::detail::StageSlot;

TEST(StagePool, SlotsAreDistinctWritableAndComeBackWhenTheirSendIsDone) {
  auto pool = StagePool::make();
  ASSERT_TRUE(pool);
  std::vector<StageSlot> held;
  std::set<std::byte*> seen;
  for (unsigned i = 0; i < StagePool::kSlots; ++i) {
    held.push_back(pool->take(kPiece));
    ASSERT_TRUE(held.back());
    std::memset(held.back().data(), static_cast<int>(i), kPiece);  // the whole piece is ours
    seen.insert(held.back().data());
  }
  EXPECT_EQ(seen.size(), StagePool::kSlots);
  for (auto* p : seen) EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % kPiece, 0u) << "slots start on piece boundaries";
  EXPECT_FALSE(pool->take(kPiece)) << "every slot is in use";
  EXPECT_FALSE(pool->take(64)) << "and full";
  EXPECT_EQ(pool->free_slots(), 0u);
  std::byte* freed = held[1].data();
  held[1].reset();
  EXPECT_EQ(pool->free_slots(), 1u);
  auto again = pool->take(kPiece);
  ASSERT_TRUE(again);
  EXPECT_EQ(again.data(), freed);
  // Moving a slot moves the claim; assigning over a slot gives the old one back.
  StageSlot moved = std::move(again);
  EXPECT_FALSE(again);
  EXPECT_EQ(pool->free_slots(), 0u);
  moved = std::move(held[0]);
  EXPECT_EQ(pool->free_slots(), 1u);
  EXPECT_EQ(moved.data()[0], std::byte{0}) << "the slot that was moved in keeps its bytes";
}

TEST(StagePool, SmallPiecesShareASlotThatIsFreeOnceTheyAllWereSent) {
  auto pool = StagePool::make();
  ASSERT_TRUE(pool);
  std::vector<StageSlot> quarter;
  for (int i = 0; i < 4; ++i) quarter.push_back(pool->take(kPiece / 4));
  EXPECT_EQ(pool->free_slots(), StagePool::kSlots - 1) << "four quarters fill one slot";
  for (int i = 1; i < 4; ++i) EXPECT_EQ(quarter[i].data(), quarter[0].data() + i * (kPiece / 4));
  auto odd = pool->take(100);  // the next slot; pieces start on cache lines
  auto odd2 = pool->take(100);
  EXPECT_EQ(pool->free_slots(), StagePool::kSlots - 2);
  EXPECT_EQ(odd2.data(), odd.data() + 128);
  std::memset(odd.data(), 1, 100);
  std::memset(odd2.data(), 2, 100);
  EXPECT_EQ(odd.data()[99], std::byte{1});
  quarter[0].reset();
  quarter[1].reset();
  quarter[2].reset();
  EXPECT_EQ(pool->free_slots(), StagePool::kSlots - 2) << "a slot with a piece still in flight stays taken";
  quarter[3].reset();
  EXPECT_EQ(pool->free_slots(), StagePool::kSlots - 1);
  // The open slot, emptied, is filled again from its start.
  std::byte* const open_start = odd.data();
  odd.reset();
  odd2.reset();
  auto again = pool->take(4096);
  EXPECT_EQ(again.data(), open_start);
  EXPECT_EQ(pool->free_slots(), StagePool::kSlots - 1);
  EXPECT_FALSE(pool->take(kPiece + 1)) << "no piece is larger than a slot";
}

TEST(StagePool, APoolLivesAsLongAsASlotOfItDoes) {
  // A peer lost with sends in flight: the engine drops its pool, and the slots
  // MPI may still read must stay mapped.
  auto pool = StagePool::make();
  ASSERT_TRUE(pool);
  std::weak_ptr<StagePool> watch = pool;
  StageSlot slot = pool->take(kPiece);
  pool.reset();
  EXPECT_FALSE(watch.expired());
  std::memset(slot.data(), 7, kPiece);
  slot.reset();
  EXPECT_TRUE(watch.expired());
}

namespace {
/// Sets or clears an environment variable for one scope.
class Env {
 public:
  Env(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~Env() {
    if (had_) ::setenv(name_, old_.c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};
}  // namespace

TEST(StagePool, StagingIsWantedUnlessConfigOrEnvironmentSayOtherwise) {
  using troupe::detail::stage_blocks_wanted;
  Env a("TROUPE_STAGE_BLOCKS", nullptr), b("OMPI_MCA_btl", nullptr), c("MPIR_CVAR_NOLOCAL", nullptr),
      d("MPIR_CVAR_CH3_NOLOCAL", nullptr), e("GLIBC_TUNABLES", nullptr),
      f("OMPI_MCA_btl_vader_single_copy_mechanism", nullptr), g("OMPI_MCA_btl_sm_single_copy_mechanism", nullptr);
  EXPECT_TRUE(stage_blocks_wanted(true));
  EXPECT_FALSE(stage_blocks_wanted(false));
  struct Case {
    const char* var;
    const char* value;
    bool wanted;
  };
  const Case cases[] = {
      {"OMPI_MCA_btl", "tcp,self", false},       {"OMPI_MCA_btl", "vader,self", true},
      {"OMPI_MCA_btl", "self,sm", true},         {"OMPI_MCA_btl", "^vader", false},
      {"OMPI_MCA_btl", "^tcp,openib", true},     {"OMPI_MCA_btl", "smcuda,self", true},
      {"MPIR_CVAR_NOLOCAL", "1", false},         {"MPIR_CVAR_NOLOCAL", "0", true},
      {"MPIR_CVAR_CH3_NOLOCAL", "1", false},     {"GLIBC_TUNABLES", "glibc.malloc.hugetlb=1", false},
      {"GLIBC_TUNABLES", "glibc.malloc.hugetlb=0", true},
      {"GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2", false},
      {"OMPI_MCA_btl_vader_single_copy_mechanism", "none", false},
      {"OMPI_MCA_btl_sm_single_copy_mechanism", "none", false},
      {"OMPI_MCA_btl_vader_single_copy_mechanism", "cma", true},
  };
  for (const auto& k : cases) {
    Env set(k.var, k.value);
    EXPECT_EQ(stage_blocks_wanted(true), k.wanted) << k.var << "=" << k.value;
    {
      Env force("TROUPE_STAGE_BLOCKS", "1");  // the variable wins over everything
      EXPECT_TRUE(stage_blocks_wanted(false)) << k.var << "=" << k.value;
    }
    Env never("TROUPE_STAGE_BLOCKS", "0");
    EXPECT_FALSE(stage_blocks_wanted(true)) << k.var << "=" << k.value;
  }
}

TEST(StagePool, AnEnvelopeSaysWhichOfItsBlocksTravelInPieces) {
  using namespace troupe::detail;
  ByteBuffer buf;
  EnvelopeWriter w(buf);
  w.begin(Kind::call, 3, 9, 1, 2, 0);
  const std::uint64_t sizes[] = {(std::uint64_t{5} << 20) | kSegmentPieced, 40000, 20000 | kSegmentPieced};
  w.finish(sizes, 3);
  Envelope env;
  EnvelopeFault fault;
  ASSERT_EQ(parse_envelope(buf.data(), buf.size(), env, fault), buf.size()) << fault.what;
  EXPECT_EQ(env.segment_sizes, (std::vector<std::uint64_t>{std::uint64_t{5} << 20, 40000, 20000}));
  EXPECT_EQ(env.segment_pieced, (std::vector<std::uint8_t>{1, 0, 1}));
  EXPECT_EQ(env.segment_bytes, (std::uint64_t{5} << 20) + 60000);
  // The mark does not count towards a block's size limit, and hides no oversized block.
  ByteBuffer big;
  EnvelopeWriter w2(big);
  w2.begin(Kind::call, 3, 9, 1, 2, 0);
  const std::uint64_t over[] = {(kMaxSegmentBytes + 1) | kSegmentPieced};
  EXPECT_THROW(w2.finish(over, 1), troupe::Error);
}

TEST(StagePool, ABlockClaimedInPiecesBeyondTheLimitMakesItsEnvelopeUnreadable) {
  // A block of up to 2^36 bytes claimed pieced (1 MiB each) would have the
  // receiver make room for 2^16 receives per block: a claim over
  // kMaxPiecedBlock is refused where it is read, as an oversized block is, in
  // this version and in another one, and no sender of ours makes one.
  using namespace troupe::detail;
  static_assert(kStageUpTo <= kMaxPiecedBlock);
  for (const std::uint8_t version : {kProtocolVersion, std::uint8_t{9}}) {
    for (const std::uint64_t size : {kMaxPiecedBlock, kMaxPiecedBlock + 1}) {
      ByteBuffer buf;
      EnvelopeWriter w(buf);
      w.begin(Kind::call, 3, 9, 1, 2, 0);
      // Written as a legal claim, then marked pieced by hand, as a broken peer would.
      const std::uint64_t sizes[] = {40000, size};
      w.finish(sizes, 2);
      const std::uint64_t marked = size | kSegmentPieced;
      std::memcpy(buf.data() + buf.size() - 8, &marked, 8);
      buf.data()[2] = static_cast<std::byte>(version);
      Envelope env;
      EnvelopeFault fault;
      const auto read = parse_envelope(buf.data(), buf.size(), env, fault);
      const bool legal = size <= kMaxPiecedBlock;
      if (version == kProtocolVersion && legal) {
        EXPECT_EQ(read, buf.size()) << fault.what;
        EXPECT_EQ(env.segment_pieced, (std::vector<std::uint8_t>{0, 1}));
      } else {
        EXPECT_EQ(read, 0u);
        EXPECT_EQ(fault.frame_lost, !legal) << "version " << int{version} << ", " << size << " bytes: " << fault.what;
        if (!legal) {
          EXPECT_NE(fault.what.find(version == kProtocolVersion ? "in pieces" : "oversized"), std::string::npos)
              << fault.what;
        }
      }
    }
    ByteBuffer out;
    EnvelopeWriter w(out);
    w.begin(Kind::call, 3, 9, 1, 2, 0);
    const std::uint64_t over[] = {(kMaxPiecedBlock + 1) | kSegmentPieced};
    EXPECT_THROW(w.finish(over, 1), troupe::Error);
  }
}

TEST(StagePool, AnEnvelopeOfAnOlderVersionLaidOutAlikeStillShowsItsFlags) {
  // A control message counted as work, from a node of version 1 (the same
  // header): unreadable here, but its work flag is read, so that it is
  // counted as its sender counted it; finish() waited for it for ever. A
  // version whose layout this build does not know shows none.
  using namespace troupe::detail;
  static_assert(kSameHeaderSince < kProtocolVersion);
  for (const std::uint8_t version : {kSameHeaderSince, kProtocolVersion, std::uint8_t{kProtocolVersion + 1}}) {
    ByteBuffer buf;
    EnvelopeWriter w(buf);
    w.begin(Kind::control, 3, 0, 0, 40, 0, kFlagWork);
    const std::uint64_t value = 7;
    buf.append(&value, sizeof value);
    w.finish(nullptr, 0);
    buf.data()[2] = static_cast<std::byte>(version);
    Envelope env;
    EnvelopeFault fault;
    const auto read = parse_envelope(buf.data(), buf.size(), env, fault);
    if (version == kProtocolVersion) {
      ASSERT_EQ(read, buf.size()) << fault.what;
      EXPECT_EQ(env.flags, kFlagWork);
      continue;
    }
    EXPECT_EQ(read, 0u);
    EXPECT_FALSE(fault.frame_lost) << "version " << int{version} << ": " << fault.what;
    EXPECT_EQ(fault.skip, buf.size());
    EXPECT_NE(fault.what.find("version"), std::string::npos) << fault.what;
    EXPECT_EQ(fault.flags, version == kSameHeaderSince ? kFlagWork : 0u) << "version " << int{version};
  }
}
