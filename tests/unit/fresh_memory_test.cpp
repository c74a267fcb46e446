// Large blocks that are about to be written in full are mapped in one step
// (populated, huge pages where the kernel offers them), and a received
// std::vector of numbers gets that treatment while keeping cereal's bytes.
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "troupe/array.hpp"
#include "troupe/detail/fresh_memory.hpp"
#include "troupe/error.hpp"
#include "troupe/wire/archive.hpp"
#include "common/huge_pages.hpp"
#include "wire_encode.hpp"

using namespace troupe::detail;

namespace {

std::size_t page_size() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

/// Pages of [p, p + bytes) that are resident, by mincore (which touches nothing).
std::size_t resident_pages(void* p, std::size_t bytes) {
  std::vector<unsigned char> vec((bytes + page_size() - 1) / page_size());
  if (::mincore(p, bytes, vec.data()) != 0) return 0;
  std::size_t n = 0;
  for (unsigned char c : vec) n += c & 1;
  return n;
}

bool kernel_populates() {
  void* probe = ::mmap(nullptr, page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  const bool ok = ::madvise(probe, page_size(), MADV_POPULATE_WRITE) == 0;
  ::munmap(probe, page_size());
  return ok;
}

std::string thp_mode() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s;
  std::getline(f, s);
  return s;
}

/// The rest of the line `key` of the /proc/self/smaps entry of the mapping
/// that holds p ("" if there is none).
std::string smaps_field(const void* p, const std::string& key) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(f, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= a && a < hi;
      continue;
    }
    if (inside && line.rfind(key, 0) == 0) return line.substr(key.size());
  }
  return "";
}

/// AnonHugePages of the mapping that holds p, in KiB.
long huge_kib_at(const void* p) {
  const std::string kib = smaps_field(p, "AnonHugePages:");
  return kib.empty() ? -1 : std::stol(kib);
}

/// Whether the mapping that holds p has the given VmFlags entry.
bool has_vm_flag(const void* p, const std::string& flag) {
  std::istringstream flags(smaps_field(p, "VmFlags:"));
  std::string f;
  while (flags >> f)
    if (f == flag) return true;
  return false;
}

constexpr std::size_t kHuge = std::size_t{2} << 20;

/// A written mapping of `huges` huge pages' worth on small pages, starting
/// `offset` bytes after a huge-page boundary (so it holds whole huge pages only
/// when offset is 0), filled with 0, 1, 2, ... as doubles. Inaccessible pages
/// at both ends keep it a mapping of its own (smaps reports it alone).
struct SmallPages {
  /// collapsible: advised for huge pages once written (a collapse may take it);
  /// otherwise it stays on small pages whatever khugepaged does meanwhile.
  explicit SmallPages(std::size_t huges, std::size_t offset, bool collapsible = true) : bytes(huges * kHuge) {
    total = bytes + 2 * kHuge + 2 * page_size();
    raw = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return;
    auto* r = static_cast<char*>(raw);
    ::mprotect(r, page_size(), PROT_NONE);
    ::mprotect(r + total - page_size(), page_size(), PROT_NONE);
    base = reinterpret_cast<double*>(
        ((reinterpret_cast<std::uintptr_t>(r + page_size()) + kHuge - 1) & ~(kHuge - 1)) + offset);
    ::madvise(r + page_size(), total - 2 * page_size(), MADV_NOHUGEPAGE);  // written on 4 KiB pages, like most heaps
    std::iota(base, base + count(), 0.0);
    if (collapsible) ::madvise(r + page_size(), total - 2 * page_size(), MADV_HUGEPAGE);  // a collapse may take it from here
  }
  ~SmallPages() {
    if (raw != MAP_FAILED) ::munmap(raw, total);
  }
  std::size_t count() const { return bytes / sizeof(double); }
  bool intact() const {
    for (std::size_t i = 0; i < count(); ++i)
      if (base[i] != static_cast<double>(i)) return false;
    return true;
  }
  std::size_t bytes, total = 0;
  void* raw = MAP_FAILED;
  double* base = nullptr;
};

using test_support::kernel_collapses;

}  // namespace

TEST(FreshMemory, NewMemoryIsMappedBeforeItIsWrittenAndMemoryInUseIsLeftAlone) {
  if (!kernel_populates()) GTEST_SKIP() << "kernel without MADV_POPULATE_WRITE";
  const std::size_t bytes = 8u << 20;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  ASSERT_EQ(resident_pages(p, bytes), 0u) << "a fresh mapping has no pages yet";
  prepare_fresh_memory(p, bytes);
  EXPECT_EQ(resident_pages(p, bytes), bytes / page_size()) << "every page is mapped in one step";
  const auto* b = static_cast<const unsigned char*>(p);
  EXPECT_EQ(std::count(b, b + bytes, 0), static_cast<std::ptrdiff_t>(bytes)) << "contents unchanged";
  EXPECT_EQ(has_vm_flag(p, "hg"), huge_pages_wanted()) << "huge pages asked for (smaps VmFlags)";
  // New memory whose first bytes an allocator wrote (a header, a sanitizer's
  // malloc fill) is still new.
  void* headed = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(headed, MAP_FAILED);
  std::memset(headed, 0xbe, 4096);
  prepare_fresh_memory(headed, bytes);
  EXPECT_EQ(resident_pages(headed, bytes), bytes / page_size());
  ::munmap(headed, bytes);
  // Memory in use already (an allocator's reused heap) is left alone: no
  // huge-page request on it.
  void* used = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(used, MAP_FAILED);
  std::memset(used, 1, bytes);
  prepare_fresh_memory(used, bytes);
  EXPECT_FALSE(has_vm_flag(used, "hg"));
  ::munmap(used, bytes);
  // Small blocks are left to ordinary page faults.
  void* q = ::mmap(nullptr, 64 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  prepare_fresh_memory(q, 64 * 1024);
  EXPECT_EQ(resident_pages(q, 64 * 1024), 0u);
  ::munmap(q, 64 * 1024);
  ::munmap(p, bytes);
}

TEST(FreshMemory, AReceivedLargeVectorKeepsCerealsBytesAndGetsHugePages) {
  std::vector<double> src(3u << 20);  // 24 MiB: new memory from the system on any allocator
  std::iota(src.begin(), src.end(), 0.0);
  const auto enc = wire_test::encode_with_segments(src);
  const auto& segs = enc.segments;
  ASSERT_EQ(segs.size(), 1u);
  std::uint64_t size = segs[0].size;
  std::vector<double> dst;
  WireInputArchive in(enc.bytes.data(), enc.bytes.size(), &size, 1);
  in(dst);
  ASSERT_TRUE(in.complete());
  ASSERT_EQ(dst.size(), src.size());
  ASSERT_EQ(in.destinations().size(), 1u);
  EXPECT_EQ(in.destinations()[0].data, dst.data()) << "received straight into the vector";
  std::memcpy(in.destinations()[0].data, segs[0].data, size);  // what MPI does
  EXPECT_EQ(dst, src);
  const std::string thp = thp_mode();
  if (thp.find("[never]") != std::string::npos || thp.empty() || !huge_pages_wanted())
    GTEST_SKIP() << "no transparent huge pages, or TROUPE_HUGE_PAGES=0";
  EXPECT_GT(huge_kib_at(dst.data() + dst.size() / 2), 0) << "the vector's memory asked for huge pages";
}

TEST(FreshMemory, SmallAndReusedVectorsDecodeAsBeforeAndOversizedClaimsAreRefused) {
  for (std::size_t n : {std::size_t{0}, std::size_t{7}, std::size_t{5000}, std::size_t{200000}}) {
    std::vector<std::int32_t> src(n);
    std::iota(src.begin(), src.end(), 1);
    const auto enc = wire_test::encode_with_segments(src);
    std::vector<std::int32_t> dst(300000, -1);  // larger than any: its memory is reused
    const auto* before = dst.data();
    WireInputArchive in(enc.bytes.data(), enc.bytes.size(), enc.sizes.data(), enc.sizes.size());
    in(dst);
    ASSERT_TRUE(in.complete());
    for (auto& d : in.destinations()) std::memcpy(d.data, enc.segments[0].data, d.size);
    EXPECT_EQ(dst, src) << n;
    EXPECT_EQ(dst.data(), before) << "a vector with room keeps its memory";
  }
  // A size the remaining bytes cannot hold is refused before anything is allocated.
  ByteBuffer buf;
  {
    WireOutputArchive ar(buf, nullptr);
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(1ull << 40)));
  }
  std::vector<double> dst;
  WireInputArchive in(buf.data(), buf.size(), nullptr, 0);
  EXPECT_THROW(in(dst), troupe::DecodeError);
  EXPECT_EQ(dst.capacity(), 0u);
  // Claims that pass the element count (one byte each) but not the block's
  // real size are refused before anything is allocated, too: 4096 doubles
  // against a declared 4096-byte segment, and 100 doubles against 100 inline bytes.
  {
    ByteBuffer b;
    {
      WireOutputArchive ar(b, nullptr);
      ar(cereal::make_size_tag(static_cast<cereal::size_type>(4096)));
    }
    const std::uint64_t seg = 4096;
    std::vector<double> v;
    WireInputArchive bad(b.data(), b.size(), &seg, 1);
    EXPECT_THROW(bad(v), troupe::DecodeError);
    EXPECT_EQ(v.capacity(), 0u);
  }
  {
    ByteBuffer b;
    {
      WireOutputArchive ar(b, nullptr);
      ar(cereal::make_size_tag(static_cast<cereal::size_type>(100)));
      const std::vector<char> bytes(100, 1);
      ar.saveBinary(bytes.data(), bytes.size());
    }
    std::vector<double> v;
    WireInputArchive bad(b.data(), b.size(), nullptr, 0);
    EXPECT_THROW(bad(v), troupe::DecodeError);
    EXPECT_EQ(v.capacity(), 0u);
  }
}

TEST(FreshMemory, PooledArraysFromOneMiBSitOnHugePages) {
  troupe::Array<double> small(1000);
  troupe::Array<double> one_mib(std::size_t{1} << 17);
  troupe::Array<double> five_mib(std::size_t{5} << 17);
  constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(one_mib.data()) % huge, 0u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(five_mib.data()) % huge, 0u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(small.data()) % 64, 0u);
  std::fill(one_mib.begin(), one_mib.end(), 1.0);
  const std::string thp = thp_mode();
  if (thp.find("[never]") != std::string::npos || thp.empty() || !huge_pages_wanted())
    GTEST_SKIP() << "no transparent huge pages, or TROUPE_HUGE_PAGES=0";
  EXPECT_GT(huge_kib_at(one_mib.data()), 0);
  EXPECT_GT(huge_kib_at(five_mib.data() + (std::size_t{1} << 17)), 0);
}

TEST(FreshMemory, ABlockSentToANeighbourIsGatheredOntoHugePagesWithItsContents) {
  if (thp_mode().find("[never]") != std::string::npos || thp_mode().empty() || !huge_pages_wanted())
    GTEST_SKIP() << "no transparent huge pages, or TROUPE_HUGE_PAGES=0";
  if (!kernel_collapses(5)) GTEST_SKIP() << "kernel without MADV_COLLAPSE (Linux 6.1+), or no huge pages free";
  test_support::SlowGatherThreshold no_pause(std::chrono::seconds(10));  // this test checks what is gathered
  {
    // Through the archive, as a vector's memory in a message to a rank on this
    // host: every huge page that holds part of the block is gathered, the two
    // at its ends included; its contents, and the bytes around it in those
    // pages, are the same.
    forget_gathered_pages_for_tests();  // each new mapping may lie where the one before it was
    SmallPages block(4, 4096);  // 8 MiB from 4 KiB past a boundary: 3 whole huge pages inside, 5 touched
    ASSERT_NE(block.raw, MAP_FAILED);
    ASSERT_EQ(huge_kib_at(block.base), 0);
    auto* before = reinterpret_cast<unsigned char*>(block.base) - 8;  // in the first end page
    auto* after = reinterpret_cast<unsigned char*>(block.base + block.count()) + 8;  // in the last
    before[0] = 0x5a;
    after[0] = 0xa5;
    ByteBuffer bytes;
    std::vector<OutSegment> segs;
    WireOutputArchive ar(bytes, &segs);
    ar.gather_blocks_on_huge_pages(true);
    ar.saveHeapBlock(block.base, block.bytes, block.bytes);
    ASSERT_EQ(segs.size(), 1u);
    EXPECT_EQ(segs[0].data, block.base) << "still sent from where it is";
    EXPECT_EQ(huge_kib_at(block.base), 5 * 2048) << "the huge pages that hold the block, and nothing else";
    EXPECT_TRUE(block.intact());
    EXPECT_EQ(before[0], 0x5a) << "a neighbour in an end page keeps its bytes";
    EXPECT_EQ(after[0], 0xa5);
  }
  {
    // A thread writing beside the block in an end page while it is gathered
    // loses nothing (that page may stay small: the kernel gives up on a page
    // in use, EAGAIN).
    forget_gathered_pages_for_tests();
    SmallPages block(2, 4096);
    ASSERT_NE(block.raw, MAP_FAILED);
    auto* beside = reinterpret_cast<std::atomic<std::uint64_t>*>(reinterpret_cast<char*>(block.base) - 64);
    std::atomic<bool> stop{false};
    std::uint64_t written = 0, misread = 0;
    std::thread neighbour([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        beside->store(++written, std::memory_order_relaxed);
        if (beside->load(std::memory_order_relaxed) != written) ++misread;
      }
    });
    prepare_sent_memory(block.base, block.bytes, block.bytes);
    stop.store(true);
    neighbour.join();
    EXPECT_GE(huge_kib_at(block.base), 2048) << "the pages nobody writes are gathered";
    EXPECT_TRUE(block.intact());
    EXPECT_EQ(beside->load(), written) << "a neighbour's writes during the gather are kept";
    EXPECT_EQ(misread, 0u);
  }
  {
    // 1 MiB, inside one huge page (it holds no whole one): that page. Sent
    // again, the page is remembered and the kernel is not asked again.
    forget_gathered_pages_for_tests();
    SmallPages block(1, 512 << 10);
    ASSERT_NE(block.raw, MAP_FAILED);
    const auto asked = sent_pages_asked();
    const auto gathered = sent_bytes_gathered();
    prepare_sent_memory(block.base, std::size_t{1} << 20, std::size_t{1} << 20);
    EXPECT_EQ(huge_kib_at(block.base), 2048);
    EXPECT_EQ(sent_pages_asked() - asked, 1u);
    prepare_sent_memory(block.base, std::size_t{1} << 20, std::size_t{1} << 20);
    EXPECT_EQ(sent_pages_asked() - asked, 1u) << "a page gathered lately is not asked about again";
    EXPECT_EQ(sent_bytes_gathered() - gathered, 2 * kHuge) << "each send counts it";
    forget_gathered_pages_for_tests();
    prepare_sent_memory(block.base, std::size_t{1} << 20, std::size_t{1} << 20);
    EXPECT_EQ(sent_pages_asked() - asked, 2u);
    EXPECT_TRUE(block.intact());
  }
  // Left alone (nothing asked, nothing counted: khugepaged may still gather
  // these mappings on its own, so their pages are not what is checked).
  const auto asked = sent_pages_asked();
  const auto gathered = sent_bytes_gathered();
  {
    // A message to another host, an Array's block (on huge pages already),
    // and memory of unknown kind (binary_data: any pointer, a shared mapping
    // say) to a rank on this host.
    SmallPages block(2, 0);
    ASSERT_NE(block.raw, MAP_FAILED);
    ByteBuffer bytes;
    std::vector<OutSegment> segs;
    WireOutputArchive ar(bytes, &segs);
    ar.saveHeapBlock(block.base, block.bytes, block.bytes);
    ar.gather_blocks_on_huge_pages(true);
    ar.saveBlock(block.base, block.bytes, /*huge_pages=*/true);
    ar(cereal::binary_data(block.base, block.bytes));
    EXPECT_EQ(segs.size(), 3u);
    EXPECT_TRUE(block.intact());
  }
  {
    // Under 1 MiB; in an allocation malloc maps on its own (from 32 MiB, with
    // its header), whatever the size sent; up to the size a staging
    // neighbour takes (the engine copies those into its slots).
    SmallPages small(1, 4096);
    ASSERT_NE(small.raw, MAP_FAILED);
    prepare_sent_memory(small.base, (std::size_t{1} << 20) - 8, std::size_t{1} << 20);
    SmallPages large(17, 0);
    ASSERT_NE(large.raw, MAP_FAILED);
    prepare_sent_memory(large.base, kGatherUpTo, kGatherUpTo);
    prepare_sent_memory(large.base, std::size_t{20} << 20, kGatherUpTo - 16);  // a vector grown past its size
    SmallPages staged(1, 0);
    ASSERT_NE(staged.raw, MAP_FAILED);
    ByteBuffer bytes;
    std::vector<OutSegment> segs;
    WireOutputArchive ar(bytes, &segs);
    ar.gather_blocks_on_huge_pages(true, /*staged_up_to=*/staged.bytes);
    ar.saveHeapBlock(staged.base, staged.bytes, staged.bytes);
    EXPECT_EQ(segs.size(), 1u);
    EXPECT_TRUE(small.intact());
    EXPECT_TRUE(large.intact());
    EXPECT_TRUE(staged.intact());
  }
  EXPECT_EQ(sent_pages_asked(), asked);
  EXPECT_EQ(sent_bytes_gathered(), gathered);
  {
    // One byte more than a staging neighbour takes: gathered.
    forget_gathered_pages_for_tests();
    SmallPages block(2, 0);
    ASSERT_NE(block.raw, MAP_FAILED);
    ByteBuffer bytes;
    std::vector<OutSegment> segs;
    WireOutputArchive ar(bytes, &segs);
    ar.gather_blocks_on_huge_pages(true, /*staged_up_to=*/block.bytes - 1);
    ar.saveHeapBlock(block.base, block.bytes, block.bytes);
    EXPECT_EQ(sent_pages_asked() - asked, 2u);
  }
}

TEST(FreshMemory, VectorsAndStringsAreSentAsHeapBlocksWithCerealsBytes) {
  // The archive's own save of a std::vector of numbers and of a std::string
  // (heap blocks, which may be gathered) writes what cereal's would.
  std::vector<double> v(5000);
  std::iota(v.begin(), v.end(), 0.5);
  std::string text(70000, 'x');
  for (std::size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>('a' + i % 26);
  ByteBuffer ours;
  std::vector<OutSegment> segs;
  {
    WireOutputArchive ar(ours, &segs);
    ar(v, text);
  }
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0].data, v.data());
  EXPECT_EQ(segs[0].size, v.size() * sizeof(double));
  EXPECT_EQ(segs[1].data, text.data());
  EXPECT_EQ(segs[1].size, text.size());
  ByteBuffer theirs;
  {
    WireOutputArchive ar(theirs, nullptr);  // blocks inline, the way cereal writes them
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(v.size())));
    ar(cereal::binary_data(v.data(), v.size() * sizeof(double)));
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(text.size())));
    ar(cereal::binary_data(text.data(), text.size()));
  }
  ByteBuffer inline_ours;
  {
    WireOutputArchive ar(inline_ours, nullptr);
    ar(v, text);
  }
  ASSERT_EQ(inline_ours.size(), theirs.size());
  EXPECT_EQ(std::memcmp(inline_ours.data(), theirs.data(), theirs.size()), 0);
  // With segments, the payload is the two sizes.
  ASSERT_EQ(ours.size(), 2 * sizeof(std::uint64_t));
  std::uint64_t sizes[2];
  std::memcpy(sizes, ours.data(), sizeof sizes);
  EXPECT_EQ(sizes[0], v.size());
  EXPECT_EQ(sizes[1], text.size());
}

TEST(FreshMemory, ASlowGatherPausesGatheringForASecond) {
  if (thp_mode().find("[never]") != std::string::npos || thp_mode().empty() || !huge_pages_wanted())
    GTEST_SKIP() << "no transparent huge pages, or TROUPE_HUGE_PAGES=0";
  if (!kernel_collapses(5)) GTEST_SKIP() << "kernel without MADV_COLLAPSE (Linux 6.1+), or no huge pages free";
  test_support::SlowGatherThreshold every_page_slow(std::chrono::nanoseconds(0));
  SmallPages first(4, 0), second(4, 0), later(4, 0);
  ASSERT_NE(later.raw, MAP_FAILED);
  const auto before = sent_bytes_gathered();
  prepare_sent_memory(first.base, first.bytes, first.bytes);  // 4 huge pages: the first is gathered, then a pause
  EXPECT_EQ(sent_bytes_gathered() - before, kHuge);
  prepare_sent_memory(second.base, second.bytes, second.bytes);  // within the second: nothing
  EXPECT_EQ(sent_bytes_gathered() - before, kHuge);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  set_slow_gather_for_tests(std::chrono::seconds(10), /*end_pause=*/false);  // it ended by itself
  prepare_sent_memory(later.base, later.bytes, later.bytes);
  EXPECT_EQ(sent_bytes_gathered() - before, 5 * kHuge) << "gathering resumed after the second";
  EXPECT_TRUE(first.intact() && second.intact() && later.intact());
}

// Run by ctest a second time with TROUPE_HUGE_PAGES=0 (unit.fresh_memory_no_huge_pages).
TEST(FreshMemory, HugePagesCanBeTurnedOff) {
  const char* v = std::getenv("TROUPE_HUGE_PAGES");
  if (v == nullptr || std::string(v) != "0") GTEST_SKIP() << "runs with TROUPE_HUGE_PAGES=0";
  EXPECT_FALSE(huge_pages_wanted());
  if (thp_mode().find("[madvise]") == std::string::npos) GTEST_SKIP() << "huge pages not on request only";
  constexpr std::size_t huge = std::size_t{2} << 20;
  const std::size_t bytes = 4 * huge;
  void* raw = ::mmap(nullptr, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(raw, MAP_FAILED);
  auto* p = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(raw) + huge - 1) & ~(huge - 1));
  prepare_fresh_memory(p, bytes);
  if (kernel_populates()) {
    EXPECT_EQ(resident_pages(p, bytes), bytes / page_size()) << "still mapped in one step";
  }
  EXPECT_EQ(huge_kib_at(p), 0) << "but on small pages";
  ::munmap(raw, bytes + huge);
  // A block on its way to a neighbour stays on its small pages too (not
  // advised for huge pages: khugepaged cannot gather it behind the test's back).
  SmallPages sent(2, 0, /*collapsible=*/false);
  ASSERT_NE(sent.raw, MAP_FAILED);
  const auto asked = sent_pages_asked();
  prepare_sent_memory(sent.base, sent.bytes, sent.bytes);
  EXPECT_EQ(sent_pages_asked(), asked);
  EXPECT_EQ(huge_kib_at(sent.base), 0);
  EXPECT_TRUE(sent.intact());
}
