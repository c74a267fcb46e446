// troupe::Array<T>: a contiguous array of trivially copyable T for bulk data in
// messages. Unlike std::vector it is not zero-filled when made, and its memory
// comes from (and returns to) a pool of large blocks, so a receiving node
// writes incoming data straight into memory that is already mapped: no fill,
// no page faults, no copy. Move-only (an actor owns it alone); clone() copies.
//
//   troupe::Array<double> field(n);            // uninitialised
//   fill(field);
//   next.tell<&Stage::consume>(std::move(field));
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>
#include <memory>
#include <type_traits>
#include <utility>

#include <cereal/cereal.hpp>

#include "troupe/detail/fresh_memory.hpp"
#include "troupe/error.hpp"

namespace troupe {

namespace detail {
class WireOutputArchive;
class WireInputArchive;
/// A block of at least `bytes` (its real size in `capacity`), from the pool.
void* array_acquire(std::size_t bytes, std::size_t& capacity);
/// Gives a block back; the pool keeps it for reuse within its budget
/// (TROUPE_ARRAY_POOL_MB, default 512 MiB), making room by freeing the blocks
/// of the sizes used longest ago.
void array_release(void* p, std::size_t capacity) noexcept;
/// For tests: free blocks the pool keeps for Arrays of `bytes`, and its budget.
std::size_t array_pool_kept_blocks(std::size_t bytes);
void array_pool_set_budget(std::size_t bytes);
}  // namespace detail

template <class T>
class Array {
  static_assert(std::is_trivially_copyable_v<T>, "troupe::Array holds trivially copyable elements");

 public:
  Array() = default;
  /// n elements, uninitialised.
  explicit Array(std::size_t n) : size_(n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))  // a negative count, say
      throw std::length_error("troupe::Array: " + std::to_string(n) + " elements do not fit in memory");
    if (n != 0) mem_ = static_cast<T*>(detail::array_acquire(n * sizeof(T), capacity_));
  }
  Array(std::size_t n, const T& value) : Array(n) { std::fill_n(mem_, n, value); }
  Array(std::initializer_list<T> values) : Array(values.size()) { std::copy(values.begin(), values.end(), mem_); }
  Array(Array&& o) noexcept
      : mem_(std::exchange(o.mem_, nullptr)), size_(std::exchange(o.size_, 0)), capacity_(std::exchange(o.capacity_, 0)) {}
  Array& operator=(Array&& o) noexcept {
    if (this != &o) {
      reset();
      mem_ = std::exchange(o.mem_, nullptr);
      size_ = std::exchange(o.size_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
    }
    return *this;
  }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
  ~Array() { reset(); }

  Array clone() const {
    Array out(size_);
    if (size_ != 0) std::memcpy(out.mem_, mem_, size_ * sizeof(T));
    return out;
  }

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  T* data() noexcept { return mem_; }
  const T* data() const noexcept { return mem_; }
  T& operator[](std::size_t i) noexcept { return mem_[i]; }
  const T& operator[](std::size_t i) const noexcept { return mem_[i]; }
  T* begin() noexcept { return mem_; }
  T* end() noexcept { return mem_ + size_; }
  const T* begin() const noexcept { return mem_; }
  const T* end() const noexcept { return mem_ + size_; }

  template <class Archive>
  void save(Archive& ar) const {
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(size_)));
    if constexpr (std::is_same_v<Archive, detail::WireOutputArchive>) {
      // A block of 1 MiB or more is on huge pages (array_pool.cpp): MPI reads
      // it fast as it is, and the engine does not stage it (stage_pool.hpp).
      const bool huge = capacity_ >= detail::kFreshMemoryFrom && detail::huge_pages_wanted();
      ar.saveBlock(mem_, size_ * sizeof(T), huge);
    } else {
      ar(cereal::binary_data(mem_, size_ * sizeof(T)));
    }
  }
  template <class Archive>
  void load(Archive& ar) {
    cereal::size_type n = 0;
    ar(cereal::make_size_tag(n));
    if constexpr (std::is_same_v<Archive, detail::WireInputArchive>) {
      // The block must be in the message, at its size in bytes, before memory
      // is taken (and pre-faulted) for it: the tag counts elements.
      if (n > std::numeric_limits<std::uint64_t>::max() / sizeof(T))
        throw DecodeError("troupe: oversized Array (" + std::to_string(n) + " elements claimed)");
      ar.checkBlock(static_cast<std::uint64_t>(n) * sizeof(T));
    }
    *this = Array(static_cast<std::size_t>(n));
    ar(cereal::binary_data(mem_, size_ * sizeof(T)));
  }

 private:
  void reset() noexcept {
    if (mem_ != nullptr) detail::array_release(mem_, capacity_);
    mem_ = nullptr;
    size_ = capacity_ = 0;
  }
  T* mem_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

namespace detail {
template <class T> struct zero_copy_safe;
template <class T> struct zero_copy_safe<Array<T>> : std::true_type {};
}  // namespace detail

}  // namespace troupe
