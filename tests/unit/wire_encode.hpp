// Test helper: a value written the way a sender writes it, large blocks as
// segments (pointers into the value, which must outlive the result).
#pragma once

#include <cstdint>
#include <vector>

#include "troupe/wire/archive.hpp"

namespace wire_test {

struct Encoded {
  troupe::detail::ByteBuffer bytes;                  // the inline part
  std::vector<troupe::detail::OutSegment> segments;  // the blocks, in order
  std::vector<std::uint64_t> sizes;                  // their sizes, as the envelope declares them
};

template <class T>
Encoded encode_with_segments(const T& value) {
  Encoded e;
  {
    troupe::detail::WireOutputArchive ar(e.bytes, &e.segments);
    ar(value);
  }
  for (const auto& s : e.segments) e.sizes.push_back(s.size);
  return e;
}

}  // namespace wire_test
