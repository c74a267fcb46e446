// The engine's buffers: pooled frame buffers, pooled frame envelopes, and each
// thread's reusable draft.
#include <mutex>
#include <vector>

#include "core/sanitizers.hpp"
#include "engine_internal.hpp"

namespace troupe::detail {

namespace {

constexpr std::size_t kPooledFrames = 32;
#ifdef TROUPE_ASAN
constexpr std::size_t kPooledCapacity = 0;  // ASan sees every frame freed: a stale pointer into one is caught
#else
constexpr std::size_t kPooledCapacity = 2 * kFrameLimit;
#endif

struct FramePool {
  FramePool() { free.reserve(kPooledFrames); }  // recycling never allocates
  std::mutex mu;
  std::vector<ByteBuffer*> free;
};
// Never destroyed: buffers may come back while the process exits.
FramePool& frame_pool() {
  static auto* pool = new FramePool();
  return *pool;
}

}  // namespace

void FrameRecycle::operator()(ByteBuffer* b) const noexcept {
  if (b == nullptr) return;
  if (b->capacity() <= kPooledCapacity) {
    auto& pool = frame_pool();  // made already: take_frame_buffer makes it before any buffer
    std::lock_guard lk(pool.mu);
    if (pool.free.size() < kPooledFrames) {
      b->clear();
      pool.free.push_back(b);
      return;
    }
  }
  delete b;
}

FrameBuffer take_frame_buffer(std::size_t size) {
  ByteBuffer* b = nullptr;
  // The pool is made first: a buffer whose room cannot be had goes back to it
  // at once, from a deleter that must not throw (under ASan, which pools no
  // frame, that may be the first time the pool is wanted).
  auto& pool = frame_pool();
  if (size <= kPooledCapacity) {
    std::lock_guard lk(pool.mu);
    if (!pool.free.empty()) {
      b = pool.free.back();
      pool.free.pop_back();
    }
  }
  FrameBuffer out(b != nullptr ? b : new ByteBuffer());
  out->reserve(size);
  return out;
}

namespace {

// Composed frames, kept with their buffers' room.
struct EnvelopePool {
  EnvelopePool() { free.reserve(kPooledFrames); }
  std::mutex mu;
  std::vector<OutEnvelope*> free;
};
EnvelopePool& envelope_pool() {
  static auto* pool = new EnvelopePool();  // never destroyed, like the frame pool
  return *pool;
}

// One draft per thread, reused; a second one at a time (a serialize() that
// sends) comes from the heap.
struct DraftCache {
  OutEnvelope* spare = nullptr;
  ~DraftCache() { delete spare; }
};
thread_local DraftCache tls_draft;

}  // namespace

OutEnvelope* take_frame_envelope(NodeId dest) {
  OutEnvelope* e = nullptr;
  {
    auto& pool = envelope_pool();
    std::lock_guard lk(pool.mu);
    if (!pool.free.empty()) {
      e = pool.free.back();
      pool.free.pop_back();
    }
  }
  if (e == nullptr) {
    e = new OutEnvelope(OutEnvelope::Empty{});
    e->pooled = true;
    e->bytes.reserve(4096);
  }
  e->dest = dest;
  e->count = 0;
  return e;
}

void EnvelopeRecycle::operator()(OutEnvelope* e) const noexcept {
  if (e == nullptr) return;
  if (e->pooled && e->bytes.capacity() <= kPooledCapacity) {
    e->segments.clear();
    e->keep.clear();  // may run the destructors of the messages' arguments: outside the pool's lock
    e->bytes.clear();
    auto& pool = envelope_pool();
    std::lock_guard lk(pool.mu);
    if (pool.free.size() < kPooledFrames) {
      pool.free.push_back(e);
      return;
    }
  }
  delete e;
}

void DraftRelease::operator()(OutEnvelope* e) const noexcept {
  if (e == nullptr) return;
  if (tls_draft.spare == nullptr && e->bytes.capacity() <= kPooledCapacity) {
    e->segments.clear();
    e->keep.clear();
    e->bytes.clear();
    tls_draft.spare = e;
    return;
  }
  delete e;
}

Draft take_draft(NodeId dest) {
  OutEnvelope* e = std::exchange(tls_draft.spare, nullptr);
  if (e == nullptr) e = new OutEnvelope(OutEnvelope::Empty{});
  Draft d(e);  // owned first: if its buffer finds no memory, it goes back as the spare
  d->bytes.extend(kFrameSlot);
  d->dest = dest;
  d->work = true;
  d->kind_tell = false;
  d->count = 1;
  return d;
}

}  // namespace troupe::detail
