// The engine's blocks: the segments that follow an envelope's frame, handed to
// MPI in envelope order per peer. A block that is not staged leaves whole from
// its own memory (zero copy); a staged one (a std::vector's, say, sent to a
// node on the same host) is copied a piece at a time into a slot of the
// staging pool and sent from there (stage_pool.hpp explains why). A block
// waits behind the ones queued before it to the same peer, since the receiver
// takes a peer's segments in order.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "engine_internal.hpp"

namespace troupe::detail {
namespace {
/// Bytes copied into staging slots per progress round: the copies happen under
/// the engine lock, about 0.1 ms per MiB, and frames wait meanwhile.
constexpr std::size_t kCopiedPerRound = std::size_t{2} << 20;
}  // namespace

void Engine::queue_blocks(NodeId peer, const std::shared_ptr<OutEnvelope>& e) {
  auto& p = *peers_[peer];
  for (const auto& seg : e->segments) {
    const auto* data = static_cast<const std::byte*>(seg.data);
    if (!seg.staged && p.blocks.empty()) {
      post_block(peer, data, seg.size, false, e);  // nothing before it: straight to MPI
      continue;
    }
    p.blocks.push_back(PendingBlock{e, data, seg.size, seg.staged});
  }
  if (!p.blocks.empty() && !p.staging) {
    staging_.push_back(peer);
    p.staging = true;
  }
}

void Engine::post_block(NodeId peer, const std::byte* data, std::size_t size, bool pieced,
                        const std::shared_ptr<OutEnvelope>& owner) {
  room_for_sends(chunks(size, pieced));  // first: a block leaves whole or not at all
  const std::size_t step = chunk_size(pieced);
  std::size_t left = size;
  for (std::size_t c = 0, n = chunks(size, pieced); c < n; ++c) {
    const std::size_t len = std::min(left, step);
    stats_.bytes_sent += len;
    post_send(peer, data, len, kTagSegment, SendMeta{.peer = peer, .owner = owner});
    data += len;
    left -= len;
  }
}

bool Engine::pump_blocks() {
  bool did = false;
  std::size_t copied = 0;
  try {
    for (std::size_t i = 0; i < staging_.size();) {
      const NodeId peer = staging_[i];
      auto& p = *peers_[peer];
      while (!p.blocks.empty()) {
        auto& b = p.blocks.front();
        if (b.staged && !stage_pool_ &&
            (!stage_pool_failed_ || std::chrono::steady_clock::now() >= stage_pool_retry_)) {
          stage_pool_ = StagePool::make();
          if (!stage_pool_) {
            // A shortage may pass: tried again a while later (a failed try
            // costs one mmap), and said once per spell.
            if (!stage_pool_failed_)
              std::fprintf(stderr,
                           "troupe: node %u: no memory for staging buffers; blocks leave from their own memory "
                           "until there is\n",
                           self_);
            stage_pool_failed_ = true;
            stage_pool_retry_ = std::chrono::steady_clock::now() + StagePool::kRetryAfter;
          } else {
            stage_pool_failed_ = false;
          }
        }
        if (!b.staged || stage_pool_failed_) {
          post_block(peer, b.data, b.left, b.staged, b.owner);  // whole, or in pieces from its own memory
          p.blocks.pop_front();
          did = true;
          continue;
        }
        if (copied >= kCopiedPerRound) break;
        const std::size_t len = std::min(b.left, kPiece);
        StageSlot slot = stage_pool_->take(len);
        if (!slot) break;      // the slots are in flight: the next round goes on
        room_for_sends(1);     // before the copy: a piece leaves, or stays for the next round
        std::memcpy(slot.data(), b.data, len);
        copied += len;
        stats_.pieces_staged++;
        const std::byte* from = slot.data();
        stats_.bytes_sent += len;
        SendMeta meta{peer};
        meta.slot = std::move(slot);
        post_send(peer, from, len, kTagSegment, std::move(meta));
        b.data += len;
        b.left -= len;
        did = true;
        if (b.left == 0) p.blocks.pop_front();
      }
      if (p.blocks.empty()) {
        p.staging = false;
        staging_[i] = staging_.back();
        staging_.pop_back();
      } else {
        ++i;
      }
    }
  } catch (const std::bad_alloc&) {
    // No room for a block's requests, or a piece's (made before anything of
    // it is posted): it stays queued, whole, for the next round.
    short_of_memory_.store(true, std::memory_order_relaxed);
  }
  return did;
}

}  // namespace troupe::detail
