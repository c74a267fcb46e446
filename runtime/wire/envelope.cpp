#include "envelope.hpp"

#include <cstring>

namespace troupe::detail {
namespace {

template <class T>
void put(std::byte* p, T v) noexcept {
  std::memcpy(p, &v, sizeof(T));
}
template <class T>
T get(const std::byte* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

void EnvelopeWriter::begin(Kind kind, NodeId source, std::uint64_t corr, std::uint64_t target, std::uint64_t id,
                           std::uint64_t clock, std::uint32_t flags) {
  start_ = out_.size();
  std::byte* h = out_.extend(kHeaderSize);
  put<std::uint16_t>(h + 0, kMagic);
  put<std::uint8_t>(h + 2, kProtocolVersion);
  put<std::uint8_t>(h + 3, static_cast<std::uint8_t>(kind));
  put<std::uint32_t>(h + 4, 0);  // length, patched by finish()
  put<std::uint32_t>(h + 8, source);
  put<std::uint32_t>(h + 12, 0);  // segment count, patched by finish()
  put<std::uint64_t>(h + 16, corr);
  put<std::uint64_t>(h + 24, target);
  put<std::uint64_t>(h + 32, id);
  put<std::uint64_t>(h + 40, clock);
  put<std::uint32_t>(h + 48, 0);  // payload length, patched by finish()
  put<std::uint32_t>(h + 52, flags);
}

void EnvelopeWriter::finish(const std::uint64_t* segment_sizes, std::uint32_t count) {
  const std::size_t payload = out_.size() - start_ - kHeaderSize;
  if (count > kMaxSegments) throw Error("troupe: message has too many large blocks");
  if (!envelope_fits(payload, count))
    throw Error("troupe: message too large to encode (" + std::to_string(payload) + " bytes inline)");
  for (std::uint32_t i = 0; i < count; ++i) {
    if (segment_size_of(segment_sizes[i]) > kMaxSegmentBytes)
      throw Error("troupe: a block of " + std::to_string(segment_size_of(segment_sizes[i])) + " bytes exceeds the " +
                  std::to_string(kMaxSegmentBytes) + "-byte limit of one message; split it");
    if (segment_pieced_of(segment_sizes[i]) && segment_size_of(segment_sizes[i]) > kMaxPiecedBlock)
      throw Error("troupe: a block of " + std::to_string(segment_size_of(segment_sizes[i])) +
                  " bytes cannot travel in pieces (the limit is " + std::to_string(kMaxPiecedBlock) + ")");
  }
  out_.append(segment_sizes, count * sizeof(std::uint64_t));
  std::byte* h = out_.data() + start_;
  put<std::uint32_t>(h + 4, static_cast<std::uint32_t>(out_.size() - start_));
  put<std::uint32_t>(h + 12, count);
  put<std::uint32_t>(h + 48, static_cast<std::uint32_t>(payload));
}

std::size_t parse_envelope(const std::byte* p, std::size_t avail, Envelope& env, EnvelopeFault& fault,
                           std::uint64_t max_segment) {
  // Reset field by field: a fresh EnvelopeFault per envelope (a string and a
  // vector assigned) was a visible part of reading a frame of small envelopes.
  fault.what.clear();
  fault.frame_lost = false;
  fault.have_prefix = false;
  fault.kind = Kind{};
  fault.source = 0;
  fault.corr = 0;
  fault.flags = 0;
  fault.skip = 0;
  fault.segment_count = 0;
  fault.segment_sizes.clear();
  fault.segment_pieced.clear();
  if (avail < kPrefixSize) {
    fault.what = "troupe: truncated envelope (" + std::to_string(avail) + " bytes)";
    fault.frame_lost = true;
    return 0;
  }
  const auto magic = get<std::uint16_t>(p);
  if (magic != kMagic) {
    fault.what = magic == 0x5452 ? "troupe: envelope from a machine of another byte order"
                                 : "troupe: bad envelope magic (not troupe data)";
    fault.frame_lost = true;
    return 0;
  }
  const auto version = get<std::uint8_t>(p + 2);
  const auto length = get<std::uint32_t>(p + 4);
  fault.have_prefix = true;
  fault.kind = static_cast<Kind>(get<std::uint8_t>(p + 3));
  fault.source = get<std::uint32_t>(p + 8);
  fault.corr = get<std::uint64_t>(p + 16);
  fault.segment_count = get<std::uint32_t>(p + 12);
  if (length < kPrefixSize || length > avail) {
    fault.what = "troupe: truncated envelope (declares " + std::to_string(length) + " bytes, " +
                 std::to_string(avail) + " present)";
    fault.frame_lost = true;
    return 0;
  }
  if (version != kProtocolVersion) {
    fault.what = "troupe: protocol version mismatch (got " + std::to_string(version) + ", this build speaks " +
                 std::to_string(kProtocolVersion) + ")";
    if (std::uint64_t{fault.segment_count} * 8 > length - kPrefixSize || fault.segment_count > kMaxSegments) {
      fault.frame_lost = true;
      return 0;
    }
    fault.skip = length;  // the prefix says how to skip it, segments included
    if (version >= kSameHeaderSince && version < kProtocolVersion && length >= kHeaderSize)
      fault.flags = get<std::uint32_t>(p + 52);
    for (std::uint32_t i = 0; i < fault.segment_count; ++i) {
      const auto word = get<std::uint64_t>(p + length - 8 * (fault.segment_count - i));
      fault.segment_sizes.push_back(segment_size_of(word));
      fault.segment_pieced.push_back(segment_pieced_of(word));
      if (fault.segment_sizes.back() > max_segment ||
          (fault.segment_pieced.back() && fault.segment_sizes.back() > kMaxPiecedBlock)) {
        fault.what += "; and it claims an oversized block";
        fault.frame_lost = true;
        return 0;
      }
    }
    return 0;
  }
  if (length < kHeaderSize) {
    fault.what = "troupe: envelope shorter than its header";
    fault.frame_lost = true;
    return 0;
  }
  fault.flags = get<std::uint32_t>(p + 52);  // a control message counted as work is still counted
  const auto payload = get<std::uint32_t>(p + 48);
  const auto nseg = fault.segment_count;
  if (nseg > kMaxSegments || std::uint64_t{kHeaderSize} + payload + std::uint64_t{nseg} * 8 != length) {
    fault.what = "troupe: inconsistent envelope lengths";
    fault.frame_lost = true;
    return 0;
  }
  env.kind = fault.kind;
  env.source = fault.source;
  env.corr = fault.corr;
  env.target = get<std::uint64_t>(p + 24);
  env.id = get<std::uint64_t>(p + 32);
  env.clock = get<std::uint64_t>(p + 40);
  env.flags = get<std::uint32_t>(p + 52);
  env.payload = p + kHeaderSize;
  env.payload_size = payload;
  env.segment_sizes.resize(nseg);
  env.segment_pieced.resize(nseg);
  env.segment_bytes = 0;
  for (std::uint32_t i = 0; i < nseg; ++i) {
    const auto word = get<std::uint64_t>(p + kHeaderSize + payload + 8 * i);
    env.segment_sizes[i] = segment_size_of(word);
    env.segment_pieced[i] = segment_pieced_of(word);
    if (env.segment_sizes[i] > max_segment) {
      fault.what = "troupe: envelope claims a block of " + std::to_string(env.segment_sizes[i]) +
                   " bytes, over the limit of one message";
      fault.frame_lost = true;  // its blocks cannot be drained without allocating them
      return 0;
    }
    if (env.segment_pieced[i] && env.segment_sizes[i] > kMaxPiecedBlock) {
      fault.what = "troupe: envelope claims a block of " + std::to_string(env.segment_sizes[i]) +
                   " bytes in pieces, over the limit of " + std::to_string(kMaxPiecedBlock);
      fault.frame_lost = true;  // nor can its pieces be told apart from what follows
      return 0;
    }
    env.segment_bytes += env.segment_sizes[i];
  }
  return length;
}

}  // namespace troupe::detail
