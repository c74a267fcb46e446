// Helpers shared by the engine's source files (internal to runtime/transport).
#pragma once

#include <cstddef>
#include <cstdio>
#include <utility>
#include <vector>

#include "engine.hpp"

namespace troupe::detail {

inline int checked(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    std::fprintf(stderr, "troupe: %s failed: %.*s\n", what, len, msg);
  }
  return rc;
}

/// Keeps the requests (and their parallel records) for which keep(i) holds, in order.
template <class Meta, class Keep>
void compact(std::vector<MPI_Request>& reqs, std::vector<Meta>& meta, Keep keep) {
  std::size_t w = 0;
  for (std::size_t r = 0; r < reqs.size(); ++r) {
    if (!keep(r)) continue;
    if (w != r) {
      reqs[w] = reqs[r];
      meta[w] = std::move(meta[r]);
    }
    ++w;
  }
  reqs.resize(w);
  meta.resize(w);
}

/// The largest MPI message of a segment: a piece if it travels in pieces
/// (kSegmentPieced), else a chunk.
inline std::size_t chunk_size(bool pieced) { return pieced ? kPiece : kChunk; }
/// Number of MPI messages a segment of this size travels in.
inline std::size_t chunks(std::size_t size, bool pieced) {
  const std::size_t step = chunk_size(pieced);
  return size == 0 ? 1 : (size + step - 1) / step;
}

/// A pooled envelope to compose a frame for dest in (engine_buffers.cpp).
OutEnvelope* take_frame_envelope(NodeId dest);

}  // namespace troupe::detail
