// Lost sets: the grow-only set of node ids a node believes lost.
//
// A million nodes each holding its own copy would not fit, so sets are
// immutable, reference-counted snapshots shared between nodes and in-flight
// messages: a node that learns a superset of what it knew simply adopts the
// sender's snapshot, and a heartbeat or tree message points at the sender's
// snapshot instead of copying it. Every id ever declared lost gets a bit
// (in the order of first declaration), so merging two sets is a word-wise OR
// and "does this message tell me anything new" is a word-wise AND-NOT.
// Snapshot 0 is the empty set and is never freed.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace fault_sim {

using SetId = std::uint32_t;

class LostSets {
 public:
  LostSets(std::uint32_t nodes, std::uint32_t capacity_ids)
      : words_per_set_((capacity_ids + 63) / 64 + 1), bit_of_(nodes, -1) {
    alloc();  // the empty set, id 0
    refs_[0] = 1u << 30;
  }

  std::uint32_t size(SetId s) const { return count_[s]; }

  bool contains(SetId s, std::uint32_t id) const {
    const std::int32_t b = bit_of_[id];
    return b >= 0 && ((word(s, static_cast<std::uint32_t>(b) >> 6) >> (b & 63)) & 1u);
  }

  void acquire(SetId s) { ++refs_[s]; }
  void release(SetId s) {
    if (--refs_[s] == 0) {
      sorted_[s].clear();
      sorted_valid_[s] = 0;
      free_.push_back(s);
    }
  }

  /// A new snapshot: s plus id (the caller's reference to s is kept).
  SetId with(SetId s, std::uint32_t id) {
    const std::uint32_t b = bit_for(id);
    const SetId r = alloc();
    std::copy_n(&words_[offset(s)], words_per_set_, &words_[offset(r)]);
    words_[offset(r) + (b >> 6)] |= 1ULL << (b & 63);
    count_[r] = count_[s] + 1;
    return r;
  }

  /// A new snapshot: a | b.
  SetId unite(SetId a, SetId b) {
    const SetId r = alloc();
    std::uint32_t c = 0;
    for (std::uint32_t w = 0; w < words_per_set_; ++w) {
      const std::uint64_t x = word(a, w) | word(b, w);
      words_[offset(r) + w] = x;
      c += static_cast<std::uint32_t>(__builtin_popcountll(x));
    }
    count_[r] = c;
    return r;
  }

  bool subset(SetId a, SetId b) const {
    if (a == b) return true;
    if (count_[a] > count_[b]) return false;
    for (std::uint32_t w = 0; w < words_per_set_; ++w)
      if (word(a, w) & ~word(b, w)) return false;
    return true;
  }

  bool equal(SetId a, SetId b) const { return a == b || (count_[a] == count_[b] && subset(a, b)); }

  /// The ids in `from` but not in `base` (appended to out).
  void difference(SetId from, SetId base, std::vector<std::uint32_t>& out) const {
    for (std::uint32_t w = 0; w < words_per_set_; ++w) {
      std::uint64_t x = word(from, w) & ~word(base, w);
      while (x) {
        const int b = __builtin_ctzll(x);
        out.push_back(ids_[w * 64 + static_cast<std::uint32_t>(b)]);
        x &= x - 1;
      }
    }
  }

  /// The ids of s in increasing order (built once per snapshot, on demand).
  const std::vector<std::uint32_t>& sorted(SetId s) {
    if (!sorted_valid_[s]) {
      auto& v = sorted_[s];
      v.clear();
      for (std::uint32_t w = 0; w < words_per_set_; ++w) {
        std::uint64_t x = word(s, w);
        while (x) {
          v.push_back(ids_[w * 64 + static_cast<std::uint32_t>(__builtin_ctzll(x))]);
          x &= x - 1;
        }
      }
      std::sort(v.begin(), v.end());
      sorted_valid_[s] = 1;
    }
    return sorted_[s];
  }

  std::size_t live_snapshots() const { return refs_.size() - free_.size(); }

 private:
  std::size_t offset(SetId s) const { return static_cast<std::size_t>(s) * words_per_set_; }
  std::uint64_t word(SetId s, std::uint32_t w) const { return words_[offset(s) + w]; }

  std::uint32_t bit_for(std::uint32_t id) {
    if (bit_of_[id] < 0) {
      if (ids_.size() >= static_cast<std::size_t>(words_per_set_) * 64)
        throw std::runtime_error("lost-set capacity exceeded (too many distinct declarations)");
      bit_of_[id] = static_cast<std::int32_t>(ids_.size());
      ids_.push_back(id);
    }
    return static_cast<std::uint32_t>(bit_of_[id]);
  }

  SetId alloc() {
    SetId s;
    if (!free_.empty()) {
      s = free_.back();
      free_.pop_back();
    } else {
      s = static_cast<SetId>(refs_.size());
      refs_.push_back(0);
      count_.push_back(0);
      sorted_.emplace_back();
      sorted_valid_.push_back(0);
      words_.resize(words_.size() + words_per_set_);
    }
    refs_[s] = 1;
    std::fill_n(&words_[offset(s)], words_per_set_, 0);
    count_[s] = 0;
    return s;
  }

  std::uint32_t words_per_set_;
  std::vector<std::int32_t> bit_of_;  // node id -> bit, -1 if never declared
  std::vector<std::uint32_t> ids_;    // bit -> node id
  std::vector<std::uint64_t> words_;
  std::vector<std::uint32_t> refs_, count_;
  std::vector<std::vector<std::uint32_t>> sorted_;
  std::vector<std::uint8_t> sorted_valid_;
  std::vector<SetId> free_;
};

}  // namespace fault_sim
