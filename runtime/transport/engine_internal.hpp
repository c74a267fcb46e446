// Helpers shared by the engine's source files (internal to runtime/transport).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <utility>
#include <vector>

#include <time.h>

#include "engine.hpp"

namespace troupe::detail {

/// steady_clock ticks from the coarse monotonic clock (same epoch, a few ms of
/// resolution, a fraction of the cost): enough for "last heard" times, which
/// failure detection compares with timeouts of hundreds of milliseconds.
inline std::int64_t coarse_now() noexcept {
#ifdef CLOCK_MONOTONIC_COARSE
  timespec ts{};
  if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::seconds(ts.tv_sec) +
                                                                            std::chrono::nanoseconds(ts.tv_nsec))
        .count();
#endif
  return std::chrono::steady_clock::now().time_since_epoch().count();
}

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
