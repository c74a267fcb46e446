// Argument tuples and results of plain numbers skip cereal's dispatch on both
// sides: the bytes must be the ones cereal writes, and reading must refuse what
// the generic path refuses.
#include <cereal/types/array.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/vector.hpp>
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>

#include "troupe/array.hpp"
#include "troupe/error.hpp"
#include "troupe/future.hpp"
#include "troupe/remote.hpp"
#include "troupe/wire/archive.hpp"
#include "troupe/wire/registry.hpp"
#include "transport/engine.hpp"
#include "wire/envelope.hpp"

using troupe::DecodeError;
using troupe::detail::ByteBuffer;
using troupe::detail::WireInputArchive;
using troupe::detail::WireOutputArchive;

namespace {

template <class Tuple>
ByteBuffer through_cereal(const Tuple& t) {
  ByteBuffer b;
  WireOutputArchive ar(b, nullptr);
  ar(t);
  return b;
}

template <class Tuple>
ByteBuffer fast(const Tuple& t) {
  ByteBuffer b;
  WireOutputArchive ar(b, nullptr);
  troupe::detail::save_args(ar, t);
  return b;
}

bool same(const ByteBuffer& a, const ByteBuffer& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0;
}

/// A result as the generic reply writes it (ValueWriter through the archive).
template <class R>
ByteBuffer written(const R& v) {
  ByteBuffer b;
  WireOutputArchive ar(b, nullptr);
  troupe::detail::ValueWriter<R>(v).write(ar);
  return b;
}

/// What RemoteReply hands its sink for a result of R: the bytes it sends.
class RecordingSink final : public troupe::detail::ReplySink {
 public:
  void reply_value(troupe::NodeId, std::uint64_t, std::unique_ptr<troupe::detail::PayloadWriter> value) override {
    WireOutputArchive ar(bytes, nullptr);
    value->write(ar);
    ++replies;
  }
  void reply_bytes(troupe::NodeId, std::uint64_t, const void* data, std::size_t size) override {
    bytes.append(data, size);
    ++replies;
  }
  void reply_error(troupe::NodeId, std::uint64_t, std::exception_ptr) override { ++errors; }
  ByteBuffer bytes;
  int replies = 0, errors = 0;
};

/// The bytes RemoteReply<R> sends for a result (none for void).
template <class R, class... V>
ByteBuffer sent(V... v) {
  RecordingSink sink;
  {
    troupe::detail::RemoteReply<R> reply(troupe::detail::RemoteCaller{&sink, 1, 42}, 0, 7);
    troupe::detail::TaskResult<R> result;
    result.value.emplace(v...);
    reply(std::move(result));
  }
  EXPECT_EQ(sink.replies, 1);
  EXPECT_EQ(sink.errors, 0);
  return std::move(sink.bytes);
}

/// The error the archive's way gives for the same bytes (TypedReply::decode,
/// then the receiver's check that every byte was read).
template <class R>
std::string archive_refusal(const ByteBuffer& b) {
  troupe::Promise<R> p;
  troupe::detail::TypedReply<R> reply(std::move(p));
  try {
    WireInputArchive ar(b.data(), b.size(), nullptr, 0);
    reply.decode(ar);
    if (!ar.complete()) throw DecodeError("troupe: message has bytes or segments its type does not read");
  } catch (const DecodeError& e) {
    return e.what();
  }
  return "(accepted)";
}

/// Reads a reply's bytes the fast way into the ask's future.
template <class R>
troupe::Future<R> read_reply(const ByteBuffer& b, bool* handled = nullptr) {
  troupe::Promise<R> p;
  auto f = p.get_future();
  troupe::detail::TypedReply<R> reply(std::move(p));
  const bool ok = reply.decode_bytes(b.data(), b.size());
  if (handled != nullptr) *handled = ok;
  if (ok) reply.complete();
  return f;
}

template <class R>
std::string refusal(const ByteBuffer& b) {
  try {
    read_reply<R>(b);
  } catch (const DecodeError& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

TEST(WireArgs, NumbersWriteTheBytesCerealWrites) {
  const std::tuple<std::uint64_t, int, double, bool, char, float, std::int16_t> t{
      0x0102030405060708ull, -7, 3.25, true, 'x', -1.5f, std::int16_t{-300}};
  static_assert(troupe::detail::all_arithmetic<std::remove_cv_t<decltype(t)>>::value);
  EXPECT_TRUE(same(fast(t), through_cereal(t)));
  EXPECT_EQ(fast(t).size(), 8u + 4 + 8 + 1 + 1 + 4 + 2);
  ByteBuffer in_place;  // a tell of plain numbers, written straight into its frame
  troupe::detail::append_numbers(in_place, t);
  EXPECT_TRUE(same(in_place, through_cereal(t)));
  const std::tuple<> none;
  EXPECT_EQ(fast(none).size(), 0u);
  // Anything else still goes through cereal.
  const std::tuple<int, std::string> mixed{5, "five"};
  static_assert(!troupe::detail::all_arithmetic<std::remove_cv_t<decltype(mixed)>>::value);
  EXPECT_TRUE(same(fast(mixed), through_cereal(mixed)));
}

TEST(WireArgs, NumbersReadBackAndBadBytesAreRefused) {
  using Args = std::tuple<std::uint64_t, int, bool>;
  const Args in{42, -3, true};
  auto bytes = fast(in);
  Args out{};
  troupe::detail::read_numbers(bytes.data(), bytes.size(), out);
  EXPECT_EQ(out, in);

  // The generic path agrees on the same bytes.
  Args generic{};
  WireInputArchive ar(bytes.data(), bytes.size(), nullptr, 0);
  troupe::detail::load_args(ar, generic);
  EXPECT_EQ(generic, in);

  auto refused = [&](std::size_t size, const char* what) {
    Args t{};
    try {
      troupe::detail::read_numbers(bytes.data(), size, t);
    } catch (const DecodeError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      return true;
    }
    return false;
  };
  EXPECT_TRUE(refused(bytes.size() - 1, "truncated"));
  EXPECT_TRUE(refused(3, "truncated"));
  EXPECT_TRUE(refused(0, "truncated"));
  bytes.append("\x00", 1);  // one byte more than the arguments
  EXPECT_TRUE(refused(bytes.size(), "does not read"));
  bytes.resize(bytes.size() - 1);
  bytes.data()[bytes.size() - 1] = std::byte{2};  // a bool that is neither 0 nor 1
  EXPECT_TRUE(refused(bytes.size(), "invalid bool"));
}

TEST(WireReplies, NumbersTravelAsTheBytesCerealWritesAndReadBack) {
  const std::uint64_t big = 0x0102030405060708ull;
  EXPECT_TRUE(same(sent<std::uint64_t>(big), written(big)));
  EXPECT_TRUE(same(sent<double>(-2.5), written(-2.5)));
  EXPECT_TRUE(same(sent<bool>(true), written(true)));
  EXPECT_TRUE(same(sent<bool>(false), written(false)));
  EXPECT_TRUE(same(sent<std::int16_t>(std::int16_t{-300}), written(std::int16_t{-300})));
  EXPECT_TRUE(same(sent<std::string>(std::string("five")), written(std::string("five"))));  // the archive's way
  EXPECT_EQ(read_reply<std::uint64_t>(written(big)).get(), big);
  EXPECT_EQ(read_reply<double>(written(-2.5)).get(), -2.5);
  EXPECT_EQ(read_reply<bool>(written(false)).get(), false);
  EXPECT_EQ(read_reply<std::int16_t>(written(std::int16_t{-300})).get(), -300);
  // A void result is no bytes at all.
  ByteBuffer none;
  {
    WireOutputArchive ar(none, nullptr);
    troupe::detail::ValueWriter<void>(troupe::detail::Unit{}).write(ar);
  }
  EXPECT_EQ(none.size(), 0u);
  EXPECT_EQ(sent<void>().size(), 0u);
  bool handled = false;
  read_reply<void>(none, &handled).get();
  EXPECT_TRUE(handled);
  // Anything else is decoded through the archive.
  read_reply<std::string>(written(std::string("five")), &handled);
  EXPECT_FALSE(handled);
}

TEST(WireReplies, BadNumberBytesAreRefusedAsTheArchiveRefusesThem) {
  auto u64 = written(std::uint64_t{7});
  ByteBuffer short_one;
  short_one.append(u64.data(), 5);
  ByteBuffer longer;
  longer.append(u64.data(), u64.size());
  longer.append("\x00", 1);
  ByteBuffer two;
  two.append("\x02", 1);
  // The same errors, word for word, as the archive's way.
  EXPECT_NE(refusal<std::uint64_t>(short_one).find("truncated"), std::string::npos);
  EXPECT_EQ(refusal<std::uint64_t>(short_one), archive_refusal<std::uint64_t>(short_one));
  EXPECT_EQ(refusal<std::uint64_t>(ByteBuffer{}), archive_refusal<std::uint64_t>(ByteBuffer{}));
  EXPECT_NE(refusal<std::uint64_t>(longer).find("does not read"), std::string::npos);
  EXPECT_EQ(refusal<std::uint64_t>(longer), archive_refusal<std::uint64_t>(longer));
  EXPECT_NE(refusal<bool>(two).find("invalid bool"), std::string::npos);
  EXPECT_EQ(refusal<bool>(two), archive_refusal<bool>(two));
  EXPECT_NE(refusal<void>(two).find("does not read"), std::string::npos);
  EXPECT_EQ(refusal<void>(two), archive_refusal<void>(two));
}

TEST(WireEnvelopes, TheLargestEnvelopeStillFitsAFrameOfMpisIntCount) {
  using namespace troupe::detail;
  // The whole envelope counts, header and block sizes with the inline bytes:
  // a frame of it, with its 4-byte slot, is sent with an int count.
  const std::uint64_t room = kMaxEnvelope - kHeaderSize;
  EXPECT_TRUE(envelope_fits(room, 0));
  EXPECT_FALSE(envelope_fits(room + 1, 0));
  EXPECT_TRUE(envelope_fits(room - 8 * kMaxSegments, kMaxSegments));
  EXPECT_FALSE(envelope_fits(room - 8 * kMaxSegments + 1, kMaxSegments));
  EXPECT_FALSE(envelope_fits(0, kMaxSegments + 1));
  EXPECT_LE(kFrameSlot + kHeaderSize + room, static_cast<std::uint64_t>(std::numeric_limits<int>::max()));
}

TEST(WireArgs, AContainerClaimIsRefusedBeforeAnythingIsAllocatedForIt) {
  using namespace troupe::detail;
  // (std::string, std::vector<std::string>): an empty string, then 2^36 strings
  // claimed, with one block of 2^36 bytes declared. Sizing the vector for them
  // would take 2 TiB; each string needs inline bytes of its own, and 8 remain.
  ByteBuffer payload;
  const std::uint64_t zero = 0, claimed = std::uint64_t{1} << 36;
  payload.append(&zero, sizeof zero);
  payload.append(&claimed, sizeof claimed);
  const std::uint64_t segments[1] = {std::uint64_t{1} << 36};
  std::tuple<std::string, std::vector<std::string>> args;
  WireInputArchive ar(payload.data(), payload.size(), segments, 1);
  EXPECT_THROW(ar(args), troupe::DecodeError);
  // A string must match the block that follows it exactly.
  ByteBuffer one;
  const std::uint64_t chars = (std::uint64_t{1} << 20) - 1;
  one.append(&chars, sizeof chars);
  const std::uint64_t block[1] = {std::uint64_t{1} << 20};
  std::string s;
  WireInputArchive ar2(one.data(), one.size(), block, 1);
  EXPECT_THROW(ar2(s), troupe::DecodeError);
  // What the archive writes still reads back, inline and in a block.
  for (std::size_t len : {std::size_t{5}, std::size_t{1} << 20}) {
    const std::tuple<std::string, std::vector<std::string>> sent{std::string(len, 'x'), {"a", "", "bc"}};
    ByteBuffer out;
    std::vector<OutSegment> segs;
    {
      WireOutputArchive w(out, &segs);
      w(sent);
    }
    std::vector<std::uint64_t> sizes;
    for (auto& g : segs) sizes.push_back(g.size);
    std::tuple<std::string, std::vector<std::string>> got;
    WireInputArchive r(out.data(), out.size(), sizes.data(), sizes.size());
    r(got);
    ASSERT_EQ(r.destinations().size(), segs.size());
    for (std::size_t i = 0; i < segs.size(); ++i) std::memcpy(r.destinations()[i].data, segs[i].data, segs[i].size);
    EXPECT_TRUE(r.complete());
    EXPECT_EQ(got, sent);
  }
}

// Bytes written without a segment list (spawn arguments, error replies,
// control messages) hold their large blocks inline, and read back so; with a
// segment list, a large block missing from it is still refused.
TEST(WireArchives, LargeBlocksWrittenWithoutASegmentListReadBackInline) {
  const std::string text(20000, 't');
  const std::vector<double> numbers(4096, 0.25);
  ByteBuffer b;
  {
    WireOutputArchive out(b, nullptr);
    out(text, numbers);
  }
  std::string text_back;
  std::vector<double> numbers_back;
  WireInputArchive in(b.data(), b.size(), WireInputArchive::InlineBlocks{});
  ASSERT_NO_THROW(in(text_back, numbers_back));
  EXPECT_EQ(text_back, text);
  EXPECT_EQ(numbers_back, numbers);
  EXPECT_TRUE(in.complete());
  WireInputArchive declared_none(b.data(), b.size(), nullptr, 0);  // an envelope's: it declares no block
  EXPECT_THROW(declared_none(text_back), DecodeError);
}

namespace {
struct Big {  // 8 KiB in memory and on the wire (inline: under the block threshold)
  static inline int made = 0;
  Big() { ++made; }
  std::array<double, 1024> values{};
  template <class Archive>
  void serialize(Archive& ar) {
    ar(values);
  }
};
}  // namespace

// A count the message cannot back costs only what was read before it fell
// short: 4096 elements of 8 KiB claimed by 4 KiB of bytes are refused after
// one, not after 32 MiB were made.
TEST(WireArchives, AClaimOfLargeElementsIsRefusedBeforeTheyAreMade) {
  ByteBuffer b;
  const std::uint64_t n = 4096;
  b.append(&n, sizeof n);
  const std::vector<std::byte> zeros(4096);
  b.append(zeros.data(), zeros.size());
  std::vector<Big> out;
  Big::made = 0;
  WireInputArchive in(b.data(), b.size(), nullptr, 0);
  EXPECT_THROW(in(out), DecodeError);
  EXPECT_LE(Big::made, 2);
}

// An Array's count is checked, in bytes, against the block that must follow
// before memory is taken for it.
TEST(WireArchives, AnArraysCountIsCheckedAgainstItsBlockInBytes) {
  ByteBuffer b;
  const std::uint64_t n = std::uint64_t{1} << 17;  // 1 MiB of doubles claimed
  b.append(&n, sizeof n);
  const std::uint64_t declared = n;  // a block of n bytes: an eighth of the claim
  WireInputArchive in(b.data(), b.size(), &declared, 1);
  troupe::Array<double> a;
  EXPECT_THROW(in(a), DecodeError);
  EXPECT_EQ(a.size(), 0u);
}
