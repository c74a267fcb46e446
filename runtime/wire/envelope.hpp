// The envelope: troupe's unit on the wire. Many envelopes travel in one MPI
// message (a frame); their large blocks follow as separate MPI messages
// (segments), in order.
//
// Layout (native byte order; every rank of a job shares it):
//   stable prefix, identical in every protocol version
//     0  u16 magic 0x5254      2  u8 version      3  u8 kind
//     4  u32 length (whole envelope)              8  u32 source node
//     12 u32 segment count                        16 u64 correlation id
//   version 2 (version 1, before the 2026-11-30 staging, had the same header;
//   its blocks never travelled in pieces)
//     24 u64 target (actor id)   32 u64 id (method or class)   40 u64 clock (HLC)
//     48 u32 payload length      52 u32 flags
// In every version the last 8 x (segment count) bytes of an envelope are its
// segment sizes; a size's top bit (kSegmentPieced) says that its block travels
// in pieces of 1 MiB (transport/stage_pool.hpp), one MPI message each, rather
// than whole. With the prefix, that lets a receiver skip an envelope of
// another version, segments included, and tell its sender why.
//     56 payload, then segment count x u64 segment sizes
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "troupe/error.hpp"
#include "troupe/fwd.hpp"
#include "troupe/wire/buffer.hpp"

namespace troupe::detail {

inline constexpr std::uint16_t kMagic = 0x5254;
inline constexpr std::uint8_t kProtocolVersion = 2;
/// The oldest version whose header is laid out as this one's (see above): an
/// envelope of such a version cannot be read, but its flags can (a control
/// message's work flag: counted as its sender counted it, or finish() would
/// wait for it for ever).
inline constexpr std::uint8_t kSameHeaderSince = 1;
inline constexpr std::size_t kPrefixSize = 24;
inline constexpr std::size_t kHeaderSize = 56;
inline constexpr std::uint32_t kMaxSegments = 1u << 16;
/// The largest envelope: header, inline bytes and block sizes together (large
/// data goes in blocks). A frame of one, with the engine's 4-byte slot before
/// it, still fits MPI's int count.
inline constexpr std::uint64_t kMaxEnvelope = (1ull << 31) - 1 - 64;
/// Whether an envelope of `payload` inline bytes and `count` blocks fits.
constexpr bool envelope_fits(std::uint64_t payload, std::uint64_t count) noexcept {
  return count <= kMaxSegments && payload <= kMaxEnvelope && kHeaderSize + payload + 8 * count <= kMaxEnvelope;
}
/// The largest block one message may carry; senders refuse larger ones, and a
/// receiver treats a larger claim as corrupt (it never allocates for it).
inline constexpr std::uint64_t kMaxSegmentBytes = 1ull << 36;
/// Set in a segment's size word: the block travels in pieces (see above).
inline constexpr std::uint64_t kSegmentPieced = 1ull << 63;
/// The largest block that may travel in pieces: senders stage no larger one
/// (transport/stage_pool.hpp), and a receiver treats a larger claim as
/// corrupt. Without it, 2^16 blocks of 2^36 bytes claimed pieced would be
/// 2^32 receives to make room for.
inline constexpr std::uint64_t kMaxPiecedBlock = std::uint64_t{8} << 20;
/// A segment's size word, taken apart: its size, and whether it is pieced.
inline std::uint64_t segment_size_of(std::uint64_t word) noexcept { return word & ~kSegmentPieced; }
inline bool segment_pieced_of(std::uint64_t word) noexcept { return (word & kSegmentPieced) != 0; }

enum class Kind : std::uint8_t {
  // actors
  call = 1,         ///< target actor, id = method; corr != 0 for an ask
  reply_ok = 2,     ///< corr of the ask; payload = result
  reply_error = 3,  ///< corr of the ask; payload = ErrorReply
  spawn = 4,        ///< id = class; corr; payload = init arguments
  stop = 5,         ///< target actor
  monitor = 6,      ///< target actor; corr = the watcher's token
  demonitor = 7,    ///< target actor; corr = the watcher's token
  exit_notice = 8,  ///< target = actor that exited; corr = token; id = reason
  mailbox = 9,      ///< target actor; corr
  // cluster control (not counted as application traffic)
  control = 64,  ///< id = control message type; payload = its body
};

/// Envelope flags.
inline constexpr std::uint32_t kFlagNamed = 1;  ///< target is a per-node name, first in the payload
inline constexpr std::uint32_t kFlagWork = 2;   ///< a control message counted as work (finish waits for it)
/// Its sender waits for a reply to `corr`. A receiver answers an envelope it
/// cannot read (a kind this build does not know, say) with an error only if
/// it is set, or if its kind is one of this build's asks: a correlation id of
/// another kind (a watch token, for one) is no ask, and an error sent to it
/// would end whichever ask of that number its sender had. So a kind added
/// later that wants a reply sets it, and an older receiver answers it. (Builds
/// of version 2 from before the flag answer any unknown kind with a nonzero
/// correlation id; flags of a newer version's envelope are not read.)
inline constexpr std::uint32_t kFlagAsk = 4;

/// This build's kinds whose correlation id, if not 0, is an ask its sender waits on.
inline bool asks_for_reply(Kind k) noexcept { return k == Kind::call || k == Kind::spawn || k == Kind::mailbox; }

/// Kinds that carry application work, counted by the termination detector.
inline bool counts_as_work(Kind k) noexcept { return static_cast<std::uint8_t>(k) < 64; }

/// A decoded header; payload and segment sizes point into the frame.
struct Envelope {
  Kind kind{};
  NodeId source = 0;
  std::uint64_t corr = 0;
  std::uint64_t target = 0;
  std::uint64_t id = 0;
  std::uint64_t clock = 0;
  std::uint32_t flags = 0;
  const std::byte* payload = nullptr;
  std::size_t payload_size = 0;
  std::vector<std::uint64_t> segment_sizes;
  std::vector<std::uint8_t> segment_pieced;  ///< per segment: it travels in pieces
  std::uint64_t segment_bytes = 0;
};

/// Why an envelope could not be read, and whether the rest of the frame can be.
struct EnvelopeFault {
  std::string what;
  bool frame_lost = false;  ///< the length cannot be trusted: the rest of the frame is dropped
  bool have_prefix = false; ///< source/corr/kind/segment_count below are meaningful
  Kind kind{};
  NodeId source = 0;
  std::uint64_t corr = 0;
  std::uint32_t flags = 0;  ///< read when it holds a whole header of this version's layout (kSameHeaderSince)
  std::size_t skip = 0;  ///< bytes to skip when !frame_lost
  std::uint32_t segment_count = 0;
  std::vector<std::uint64_t> segment_sizes;  ///< when !frame_lost: the segments to drain
  std::vector<std::uint8_t> segment_pieced;  ///< and whether each travels in pieces
};

/// Writes one envelope: begin(), then the payload into buf(), then finish().
class EnvelopeWriter {
 public:
  explicit EnvelopeWriter(ByteBuffer& out) : out_(out) {}
  void begin(Kind kind, NodeId source, std::uint64_t corr, std::uint64_t target, std::uint64_t id,
             std::uint64_t clock, std::uint32_t flags = 0);
  ByteBuffer& buf() noexcept { return out_; }
  /// Continues an envelope whose header begin() wrote at offset start.
  void begin_at(std::size_t start) noexcept { start_ = start; }
  /// segment_sizes: the sizes of the segments that follow, in order, each
  /// with kSegmentPieced set if it travels in pieces.
  void finish(const std::uint64_t* segment_sizes, std::uint32_t count);

 private:
  ByteBuffer& out_;
  std::size_t start_ = 0;
};

/// Reads the envelope at p (avail bytes left in the frame). Returns its length,
/// or 0 and fills fault. Segments larger than max_segment are refused. Throws
/// std::bad_alloc only (env's and fault's vectors and strings grow), and then
/// can be called again on the same bytes.
std::size_t parse_envelope(const std::byte* p, std::size_t avail, Envelope& env, EnvelopeFault& fault,
                           std::uint64_t max_segment = kMaxSegmentBytes);

}  // namespace troupe::detail
