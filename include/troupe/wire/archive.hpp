// Cereal archives for troupe's wire format: native-endian binary like Cereal's
// BinaryArchive, plus two things it lacks:
//  - large contiguous blocks (std::vector<double> data, long strings) become
//    zero-copy *segments*: the sender hands MPI the object's own memory and the
//    receiver has MPI write straight into the decoded object's memory;
//  - every read is bounds-checked and container sizes are checked against the
//    bytes that remain, so truncated or hostile input throws DecodeError instead
//    of reading past the end or allocating without limit.
#pragma once

#include <cereal/cereal.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <limits>
#include <array>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "troupe/detail/fresh_memory.hpp"
#include "troupe/detail/method_traits.hpp"
#include "troupe/detail/vector_recycler.hpp"
#include "troupe/fwd.hpp"

#include "troupe/error.hpp"
#include "troupe/wire/buffer.hpp"

namespace troupe::detail {

/// Blocks at least this large travel as segments (a protocol constant).
inline constexpr std::size_t kSegmentThreshold = 16 * 1024;

struct OutSegment {
  const void* data;
  std::size_t size;
  bool huge_pages = false;  ///< troupe placed it on huge pages (an Array's block): never staged
  bool staged = false;      ///< the sender copies it through the engine's staging slots, in pieces
};
struct InSegment {
  void* data;
  std::size_t size;
  bool pieced = false;  ///< it arrives in pieces (the engine sets this from the envelope)
};

class WireOutputArchive : public cereal::OutputArchive<WireOutputArchive, cereal::AllowEmptyClassElision> {
 public:
  /// Segments are collected in *segments; the memory they point to must stay
  /// alive until the message is sent.
  WireOutputArchive(ByteBuffer& out, std::vector<OutSegment>* segments)
      : cereal::OutputArchive<WireOutputArchive, cereal::AllowEmptyClassElision>(this),
        out_(out),
        segments_(segments) {}

  void saveBinary(const void* data, std::size_t size) { out_.append(data, size); }
  /// The message goes to a rank on this host that reads our pages: the huge
  /// pages holding each heap block (saveHeapBlock) of 1 MiB or more, except
  /// blocks up to `staged_up_to` bytes, which the engine copies into its
  /// staging slots instead, are gathered first (prepare_sent_memory).
  void gather_blocks_on_huge_pages(bool on, std::size_t staged_up_to = 0) noexcept {
    gather_ = on;
    staged_up_to_ = staged_up_to;
  }
  /// A block of memory of unknown kind (cereal::binary_data: any pointer, a
  /// shared mapping say), or, with huge_pages, troupe's own memory on huge
  /// pages (an Array's). Never gathered onto huge pages.
  void saveBlock(const void* data, std::size_t size, bool huge_pages = false) {
    if (segments_ != nullptr && size >= kSegmentThreshold) {
      segments_->push_back({data, size, huge_pages});
    } else {
      out_.append(data, size);
    }
  }
  /// The contents of a std::vector or std::string with std::allocator:
  /// private memory from malloc, `allocated` bytes of it in all (the
  /// capacity). The same bytes as saveBlock; gathered if asked for.
  void saveHeapBlock(const void* data, std::size_t size, std::size_t allocated) {
    if (gather_ && segments_ != nullptr && size >= kSegmentThreshold && size > staged_up_to_)
      prepare_sent_memory(data, size, allocated);
    saveBlock(data, size);
  }

 private:
  ByteBuffer& out_;
  std::vector<OutSegment>* segments_;
  bool gather_ = false;
  std::size_t staged_up_to_ = 0;
};

class WireInputArchive : public cereal::InputArchive<WireInputArchive, cereal::AllowEmptyClassElision> {
 public:
  /// segment_sizes: the sizes the envelope declares, in order (none: a large
  /// block is refused).
  WireInputArchive(const std::byte* data, std::size_t size, const std::uint64_t* segment_sizes,
                   std::size_t segment_count)
      : cereal::InputArchive<WireInputArchive, cereal::AllowEmptyClassElision>(this),
        data_(data),
        size_(size),
        seg_sizes_(segment_sizes),
        seg_count_(segment_count) {}
  struct InlineBlocks {};
  /// Bytes written without a segment list (WireOutputArchive with null
  /// segments: spawn arguments, error replies, control messages): every
  /// block, large ones too, is inline.
  WireInputArchive(const std::byte* data, std::size_t size, InlineBlocks)
      : cereal::InputArchive<WireInputArchive, cereal::AllowEmptyClassElision>(this),
        data_(data),
        size_(size),
        seg_sizes_(nullptr),
        seg_count_(0),
        inline_blocks_(true) {}

  void loadBinary(void* data, std::size_t size) {
    if (size == 0) return;
    if (size > size_ - pos_) throw DecodeError("troupe: truncated message (" + std::to_string(size) +
                                               " bytes wanted, " + std::to_string(size_ - pos_) + " left)");
    std::memcpy(data, data_ + pos_, size);
    pos_ += size;
  }
  /// Segments already received: blocks are copied out of these buffers instead
  /// of being recorded as destinations.
  void use_received_segments(const ByteBuffer* segments) noexcept { received_ = segments; }

  void loadBlock(void* data, std::size_t size) {
    if (size < kSegmentThreshold || inline_blocks_) return loadBinary(data, size);
    if (next_seg_ >= seg_count_) throw DecodeError("troupe: message refers to a segment it does not declare");
    if (seg_sizes_[next_seg_] != size)
      throw DecodeError("troupe: segment size mismatch (" + std::to_string(seg_sizes_[next_seg_]) +
                        " declared, " + std::to_string(size) + " expected)");
    if (received_ != nullptr) {
      std::memcpy(data, received_[next_seg_].data(), size);
    } else {
      destinations_.push_back({data, size});
    }
    ++next_seg_;
  }
  /// A size tag (any container, a user type's too) claims n elements: at
  /// least n bytes, inline or in the one block that may follow it (the idiom
  /// of a size tag and binary_data). Larger claims are refused before
  /// anything is allocated for them.
  void checkCount(std::uint64_t n) const {
    const std::uint64_t next_block = next_seg_ < seg_count_ ? seg_sizes_[next_seg_] : 0;
    const std::uint64_t room = std::max<std::uint64_t>(size_ - pos_, next_block);
    if (n > room)
      throw DecodeError("troupe: oversized container (" + std::to_string(n) + " elements claimed, " +
                        std::to_string(room) + " bytes could hold them)");
  }
  /// n elements read one by one (a std::vector of strings or of structs, which
  /// cereal sizes before reading any): each takes at least one inline byte or
  /// a block of its own. Refused before n elements are allocated.
  void checkElements(std::uint64_t n) const {
    const std::uint64_t room = (size_ - pos_) + (seg_count_ - next_seg_);
    if (n > room)
      throw DecodeError("troupe: oversized container (" + std::to_string(n) + " elements claimed, " +
                        std::to_string(room) + " bytes or blocks left to hold them)");
  }
  /// The size tag of a string or a vector of numbers, checked by its load.
  std::uint64_t loadBlockCount() {
    std::uint64_t n = 0;
    loadBinary(&n, sizeof n);
    return n;
  }
  /// A block of exactly `bytes` must come next (a container of numbers):
  /// refuse before anything is allocated for it unless the message holds it,
  /// as the next declared segment or as inline bytes.
  void checkBlock(std::uint64_t bytes) const {
    const bool fits = bytes >= kSegmentThreshold && !inline_blocks_
                          ? next_seg_ < seg_count_ && seg_sizes_[next_seg_] == bytes
                          : bytes <= size_ - pos_;
    if (!fits)
      throw DecodeError("troupe: oversized container: the message does not hold the " + std::to_string(bytes) +
                        "-byte block it claims");
  }
  /// True once every inline byte and every declared segment was consumed.
  bool complete() const noexcept { return pos_ == size_ && next_seg_ == seg_count_; }
  std::size_t remaining() const noexcept { return size_ - pos_; }
  std::size_t position() const noexcept { return pos_; }
  /// Where the declared segments must be received, in order.
  std::vector<InSegment>& destinations() noexcept { return destinations_; }

 private:
  const std::byte* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
  const std::uint64_t* seg_sizes_;
  std::size_t seg_count_;
  bool inline_blocks_ = false;  // written without a segment list: blocks of any size are inline
  std::size_t next_seg_ = 0;
  std::vector<InSegment> destinations_;
  const ByteBuffer* received_ = nullptr;
};

/// Types whose Cereal load writes large blocks straight into their final
/// storage, so segments may be received in place after decoding (zero copy).
/// Anything else is decoded after its segments arrived in buffers (one copy).
template <class T> struct zero_copy_safe : std::bool_constant<std::is_arithmetic_v<T> || std::is_enum_v<T>> {};
template <class T, class A> struct zero_copy_safe<std::vector<T, A>> : zero_copy_safe<T> {};
template <> struct zero_copy_safe<std::string> : std::true_type {};
template <class T, std::size_t N> struct zero_copy_safe<std::array<T, N>> : zero_copy_safe<T> {};
template <class A, class B> struct zero_copy_safe<std::pair<A, B>> : std::conjunction<zero_copy_safe<A>, zero_copy_safe<B>> {};
template <class... T> struct zero_copy_safe<std::tuple<T...>> : std::conjunction<zero_copy_safe<T>...> {};
template <class T> struct zero_copy_safe<ActorRef<T>> : std::true_type {};

}  // namespace troupe::detail

namespace cereal {

template <class T>
inline std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_SAVE_FUNCTION_NAME(troupe::detail::WireOutputArchive& ar,
                                                                            const T& t) {
  ar.saveBinary(std::addressof(t), sizeof(t));
}
template <class T>
inline std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_LOAD_FUNCTION_NAME(troupe::detail::WireInputArchive& ar,
                                                                            T& t) {
  if constexpr (std::is_same_v<T, bool>) {
    std::uint8_t b = 0;  // a byte other than 0 or 1 is not a bool
    ar.loadBinary(&b, 1);
    if (b > 1) throw troupe::DecodeError("troupe: invalid bool in message");
    t = b != 0;
  } else {
    ar.loadBinary(std::addressof(t), sizeof(t));
  }
}
template <class Archive, class T>
inline CEREAL_ARCHIVE_RESTRICT(troupe::detail::WireInputArchive, troupe::detail::WireOutputArchive)
    CEREAL_SERIALIZE_FUNCTION_NAME(Archive& ar, NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
inline void CEREAL_SAVE_FUNCTION_NAME(troupe::detail::WireOutputArchive& ar, const SizeTag<T>& t) {
  const std::uint64_t n = static_cast<std::uint64_t>(t.size);
  ar.saveBinary(&n, sizeof(n));
}
template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(troupe::detail::WireInputArchive& ar, SizeTag<T>& t) {
  std::uint64_t n = 0;
  ar.loadBinary(&n, sizeof(n));
  ar.checkCount(n);
  t.size = static_cast<std::remove_reference_t<T>>(n);
}
template <class T>
inline void CEREAL_SAVE_FUNCTION_NAME(troupe::detail::WireOutputArchive& ar, const BinaryData<T>& bd) {
  ar.saveBlock(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(troupe::detail::WireInputArchive& ar, BinaryData<T>& bd) {
  ar.loadBlock(bd.data, static_cast<std::size_t>(bd.size));
}

/// std::vector of numbers and std::basic_string: the bytes of cereal's own
/// save (a size, then one block); with std::allocator the block is known to
/// be private heap memory, which may be gathered onto huge pages
/// (WireOutputArchive::saveHeapBlock).
template <class T, class A>
inline std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>> CEREAL_SAVE_FUNCTION_NAME(
    troupe::detail::WireOutputArchive& ar, const std::vector<T, A>& vec) {
  ar(make_size_tag(static_cast<size_type>(vec.size())));
  if constexpr (std::is_same_v<A, std::allocator<T>>) {
    ar.saveHeapBlock(vec.data(), vec.size() * sizeof(T), vec.capacity() * sizeof(T));
  } else {
    ar.saveBlock(vec.data(), vec.size() * sizeof(T));
  }
}
template <class CharT, class Traits, class A>
inline void CEREAL_SAVE_FUNCTION_NAME(troupe::detail::WireOutputArchive& ar,
                                      const std::basic_string<CharT, Traits, A>& str) {
  ar(make_size_tag(static_cast<size_type>(str.size())));
  if constexpr (std::is_same_v<A, std::allocator<CharT>>) {
    ar.saveHeapBlock(str.data(), str.size() * sizeof(CharT), (str.capacity() + 1) * sizeof(CharT));
  } else {
    ar.saveBlock(str.data(), str.size() * sizeof(CharT));
  }
}

/// std::vector of numbers: the bytes of cereal's own load (a size, then one
/// block), but a large vector that needs new memory is made from a kept one
/// (troupe/detail/vector_recycler.hpp) or gets its memory mapped in one step
/// before it is zero-filled and received into (no fault per page).
template <class T, class A>
inline std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>> CEREAL_LOAD_FUNCTION_NAME(
    troupe::detail::WireInputArchive& ar, std::vector<T, A>& vec) {
  const std::uint64_t n = ar.loadBlockCount();  // checked against the block that must follow
  if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))
    throw troupe::DecodeError("troupe: oversized container (" + std::to_string(n) + " elements claimed)");
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(T);
  ar.checkBlock(bytes);  // exactly: nothing is allocated for a claim the message cannot back
  if (bytes >= troupe::detail::kFreshMemoryFrom && vec.capacity() < n) {
    bool kept = false;  // a kept vector's memory: mapped, and no fill up to the size it had
    if constexpr (std::is_same_v<A, std::allocator<T>>)
      kept = troupe::detail::VectorRecycler<T>::take(vec, static_cast<std::size_t>(n));
    if (!kept) {
      vec.clear();
      vec.reserve(static_cast<std::size_t>(n));
      troupe::detail::prepare_fresh_memory(vec.data(), bytes);
    }
  }
  vec.resize(static_cast<std::size_t>(n));
  ar(binary_data(vec.data(), bytes));
}

/// A std::vector of anything else (strings, structs, vectors): cereal's
/// bytes, but the count is checked against what the message can still hold
/// before the vector is sized for it (2^36 strings claimed by a few bytes
/// would otherwise take terabytes).
template <class T, class A>
inline std::enable_if_t<!std::is_arithmetic_v<T>> CEREAL_LOAD_FUNCTION_NAME(troupe::detail::WireInputArchive& ar,
                                                                             std::vector<T, A>& vec) {
  size_type n = 0;
  ar(make_size_tag(n));
  ar.checkElements(n);
  // Grown as elements are read, not sized for the claim up front: each takes
  // at least a byte of the message, but may be far larger in memory (a struct
  // of 8 KiB, a string's 32 bytes), so a claim the message cannot back costs
  // only what was read before it fell short.
  vec.clear();
  vec.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(n, 1024)));
  for (size_type i = 0; i < n; ++i) {
    vec.emplace_back();
    ar(vec.back());
  }
}

/// std::basic_string: cereal's bytes, but the length is checked against the
/// block that must follow before the string is sized for it.
template <class CharT, class Traits, class A>
inline std::enable_if_t<std::is_arithmetic_v<CharT>> CEREAL_LOAD_FUNCTION_NAME(
    troupe::detail::WireInputArchive& ar, std::basic_string<CharT, Traits, A>& str) {
  const std::uint64_t n = ar.loadBlockCount();
  if (n > std::numeric_limits<std::size_t>::max() / sizeof(CharT))
    throw troupe::DecodeError("troupe: oversized string (" + std::to_string(n) + " characters claimed)");
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(CharT);
  ar.checkBlock(bytes);
  str.resize(static_cast<std::size_t>(n));
  ar(binary_data(str.data(), bytes));
}

}  // namespace cereal

CEREAL_REGISTER_ARCHIVE(troupe::detail::WireOutputArchive)
CEREAL_REGISTER_ARCHIVE(troupe::detail::WireInputArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(troupe::detail::WireInputArchive, troupe::detail::WireOutputArchive)

namespace troupe::detail {

/// Argument tuples of plain numbers (the common small message) are written and
/// read element by element, straight to the archive's byte functions: the same
/// bytes as going through cereal, without its nested dispatch (perf: that was
/// the single largest item of a small tell's sending cost).

template <class Tuple>
void save_args(WireOutputArchive& ar, const Tuple& args) {
  if constexpr (all_arithmetic<Tuple>::value) {
    std::apply([&](const auto&... a) { (cereal::CEREAL_SAVE_FUNCTION_NAME(ar, a), ...); }, args);
  } else {
    ar(args);
  }
}

/// Appends a tuple of plain numbers to out: the bytes save_args writes, without
/// an archive (a tell of plain numbers is written straight into its frame).
template <class Tuple>
void append_numbers(ByteBuffer& out, const Tuple& args) {
  static_assert(all_arithmetic<Tuple>::value);
  std::apply([&](const auto&... a) { (out.append(&a, sizeof a), ...); }, args);
}

/// Reads a tuple of plain numbers from exactly n bytes at p, the way load_args
/// would (the same checks and errors), without an archive.
template <class T>
void read_number(const std::byte* p, std::size_t n, std::size_t& pos, T& t) {
  if (sizeof(T) > n - pos)
    throw DecodeError("troupe: truncated message (" + std::to_string(sizeof(T)) + " bytes wanted, " +
                      std::to_string(n - pos) + " left)");
  if constexpr (std::is_same_v<T, bool>) {
    const auto b = static_cast<std::uint8_t>(p[pos]);
    if (b > 1) throw DecodeError("troupe: invalid bool in message");
    t = b != 0;
  } else {
    std::memcpy(&t, p + pos, sizeof(T));
  }
  pos += sizeof(T);
}
template <class Tuple>
void read_numbers(const std::byte* p, std::size_t n, Tuple& args) {
  static_assert(all_arithmetic<Tuple>::value);
  std::size_t pos = 0;
  std::apply([&](auto&... a) { (read_number(p, n, pos, a), ...); }, args);
  if (pos != n) throw DecodeError("troupe: message has bytes or segments its type does not read");
}

template <class Tuple>
void load_args(WireInputArchive& ar, Tuple& args) {
  if constexpr (all_arithmetic<Tuple>::value) {
    std::apply([&](auto&... a) { (cereal::CEREAL_LOAD_FUNCTION_NAME(ar, a), ...); }, args);
  } else {
    ar(args);
  }
}

}  // namespace troupe::detail
