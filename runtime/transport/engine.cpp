#include "engine.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "core/sanitizers.hpp"
#include "troupe/detail/actor_cell.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TROUPE_CPU_RELAX() _mm_pause()
#else
#define TROUPE_CPU_RELAX() std::this_thread::yield()
#endif

namespace troupe::detail {
namespace {

int checked(int rc, const char* what) {
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

/// steady_clock ticks from the coarse monotonic clock (same epoch, a few ms of
/// resolution, a fraction of the cost): enough for "last heard" times, which
/// failure detection compares with timeouts of hundreds of milliseconds.
std::int64_t coarse_now() noexcept {
#ifdef CLOCK_MONOTONIC_COARSE
  timespec ts{};
  if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::seconds(ts.tv_sec) +
                                                                            std::chrono::nanoseconds(ts.tv_nsec))
        .count();
#endif
  return std::chrono::steady_clock::now().time_since_epoch().count();
}

// Number of MPI messages a segment of this size travels in.
std::size_t chunks(std::size_t size) { return size == 0 ? 1 : (size + kChunk - 1) / kChunk; }

/// A bad envelope, reported to the handler when its turn to be delivered comes.
class FaultReport final : public Inbound {
 public:
  FaultReport(InboundHandler& h, NodeId from, EnvelopeFault f) : h_(h), from_(from), fault_(std::move(f)) {}
  void deliver() override { h_.on_bad_envelope(from_, fault_); }

 private:
  InboundHandler& h_;
  NodeId from_;
  EnvelopeFault fault_;
};

}  // namespace

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
    auto& pool = frame_pool();
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
  if (size <= kPooledCapacity) {
    auto& pool = frame_pool();
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

// One draft per thread, reused; a second one at a time (a serialize() that
// sends) comes from the heap.
struct DraftCache {
  OutEnvelope* spare = nullptr;
  ~DraftCache() { delete spare; }
};
thread_local DraftCache tls_draft;

}  // namespace

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
  e->bytes.extend(kFrameSlot);
  e->dest = dest;
  e->work = true;
  e->kind_tell = false;
  e->count = 1;
  return Draft(e);
}

void Engine::init_storage(std::size_t capacity) {
  open_.reset(new Open[capacity]);
  heard_.reset(new std::atomic<std::int64_t>[capacity]);
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  for (std::size_t i = 0; i < capacity; ++i) {
    peers_.push_back(std::make_unique<Peer>());
    sources_.push_back(std::make_unique<Source>());
    heard_[i].store(now);
  }
}

Engine::Engine(MPI_Comm comm, InboundHandler& handler) : handler_(handler) {
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_Comm_dup(comm, &dup);
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  int rank = 0, size = 0;
  MPI_Comm_rank(dup, &rank);
  MPI_Comm_size(dup, &size);
  self_ = static_cast<NodeId>(rank);
  comms_.push_back(dup);
  rank_node_.emplace_back();
  init_storage(static_cast<std::size_t>(size) + kSpareNodes);
  for (int i = 0; i < size; ++i) {
    peers_[static_cast<std::size_t>(i)]->alive.store(true);
    peers_[static_cast<std::size_t>(i)]->rank = i;
    rank_node_[0].push_back(static_cast<NodeId>(i));
  }
  count_.store(static_cast<std::size_t>(size));
}

Engine::Engine(MPI_Comm comm, InboundHandler& handler, NodeId self, std::size_t total,
               const std::vector<NodeId>& node_of_rank)
    : self_(self), handler_(handler) {
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_Comm_dup(comm, &dup);
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  comms_.push_back(dup);
  rank_node_.push_back(node_of_rank);
  joined_start_ = true;
  init_storage(total + kSpareNodes);
  for (std::size_t r = 0; r < node_of_rank.size(); ++r) {
    auto& p = *peers_[node_of_rank[r]];
    p.alive.store(true);
    p.comm = 0;
    p.rank = static_cast<int>(r);
  }
  count_.store(total);
}

void Engine::add_nodes(MPI_Comm comm, const std::vector<NodeId>& node_of_rank, std::size_t total) {
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_Comm_dup(comm, &dup);  // collective over comm, like the caller's
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  std::lock_guard lk(mu_);
  if (total > peers_.size()) throw std::runtime_error("troupe: too many nodes joined (no room left)");
  const int index = static_cast<int>(comms_.size());
  comms_.push_back(dup);
  rank_node_.push_back(node_of_rank);
  const std::size_t before = count_.load();
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  for (std::size_t r = 0; r < node_of_rank.size(); ++r) {
    const NodeId n = node_of_rank[r];
    if (n < before) continue;  // older pairs keep their communicator
    auto& p = *peers_[n];
    p.comm = index;
    p.rank = static_cast<int>(r);
    heard_[n].store(now);
    p.alive.store(true);
  }
  count_.store(total, std::memory_order_release);
}

Engine::~Engine() {
  stop_progress_thread();
  // Requests still pending belong to lost peers or to a job torn down without
  // finish(); their buffers stay alive (leaked) rather than be freed under MPI.
  std::lock_guard lk(mu_);
  for (auto& m : send_meta_) abandoned_.push_back(std::make_shared<SendMeta>(std::move(m)));
  for (auto& s : sources_)
    for (auto& f : s->frames) abandoned_.push_back(std::shared_ptr<ByteBuffer>(std::move(f.buf)));
  for (auto& m : seg_meta_) abandoned_.push_back(m.owner);
  // Kept reachable for the rest of the process (not freed, not reported).
  static auto* graveyard = new std::vector<std::shared_ptr<void>>();
  static std::mutex graveyard_mu;
  std::lock_guard glk(graveyard_mu);
  for (auto& p : abandoned_) graveyard->push_back(std::move(p));
  while (auto* e = static_cast<OutEnvelope*>(outq_.pop())) delete e;
  for (std::size_t n = 0; n < peers_.size(); ++n) delete open_[n].frame.exchange(nullptr);
  for (auto& p : peers_)
    for (auto* e : p->outbox) delete e;
}

void Engine::enqueue(OutEnvelope* e) {
  outq_size_.fetch_add(1, std::memory_order_seq_cst);
  outq_bytes_.fetch_add(e->bytes.size(), std::memory_order_relaxed);
  outq_.push(e);
}

void Engine::close_open(NodeId dest) {
  if (OutEnvelope* f = open_[dest].frame.exchange(nullptr, std::memory_order_acq_rel)) {
    open_count_.fetch_sub(1, std::memory_order_acq_rel);
    if (f->count == 0) {
      EnvelopeRecycle{}(f);  // opened, then the append ran out of memory: nothing to send
    } else {
      enqueue(f);
    }
  }
}

void Engine::send(OutEnvelope* env, bool urgent) {
  // A lone envelope: its frame entry's length goes into its slot.
  const auto len = static_cast<std::uint32_t>(env->bytes.size() - kFrameSlot);
  std::memcpy(env->bytes.data(), &len, sizeof len);
  if (env->dest < peers_.size()) {
    // After whatever its destination's open frame holds (same lock: per
    // destination, the queue keeps send order).
    std::lock_guard lk(open_[env->dest].mu);
    close_open(env->dest);
    enqueue(env);
  } else {
    enqueue(env);  // nobody there: the engine drops it
  }
  if (current_cell() != nullptr) {
    note_remote_send();  // the actor's turn ends with a flush
    return;
  }
  if (urgent || outq_bytes_.load(std::memory_order_relaxed) >= 16 * 1024) {
    flush_sends();
  } else if (sleeping_.load(std::memory_order_acquire)) {
    wake();  // a lone tell leaves within the progress thread's next round
  }
}

void Engine::send(Draft draft, bool urgent) {
  const NodeId dest = draft->dest;
  if (draft->bytes.size() > kSmallEnvelope || dest >= nodes()) {
    // Large: it leaves from its own buffer (the draft's storage goes with it).
    auto* e = new OutEnvelope(OutEnvelope::Empty{});
    e->dest = dest;
    e->work = draft->work;
    e->kind_tell = draft->kind_tell;
    e->bytes = std::move(draft->bytes);
    e->segments = std::move(draft->segments);
    e->keep = std::move(draft->keep);
    return send(e, urgent);
  }
  const auto len = static_cast<std::uint32_t>(draft->bytes.size() - kFrameSlot);
  std::memcpy(draft->bytes.data(), &len, sizeof len);
  bool closed = false;
  {
    std::lock_guard lk(open_[dest].mu);
    OutEnvelope* f = open_frame(dest);
    // Room first: past this point nothing throws, so the frame stays whole.
    f->segments.reserve(f->segments.size() + draft->segments.size());
    f->keep.reserve(f->keep.size() + draft->keep.size());
    f->bytes.append(draft->bytes.data(), draft->bytes.size());
    f->segments.insert(f->segments.end(), draft->segments.begin(), draft->segments.end());
    for (auto& k : draft->keep) f->keep.push_back(std::move(k));
    f->count++;
    if (urgent || !draft->segments.empty() || f->bytes.size() >= kCloseAt) {
      close_open(dest);
      closed = true;
    }
  }
  draft.reset();  // back to this thread's cache
  after_send(closed);
}

OutEnvelope* Engine::open_frame(NodeId dest) {
  auto& open = open_[dest];
  OutEnvelope* f = open.frame.load(std::memory_order_relaxed);
  if (f == nullptr) {
    f = take_frame_envelope(dest);
    open.frame.store(f, std::memory_order_release);
    open_count_.fetch_add(1, std::memory_order_acq_rel);
  }
  return f;
}

void Engine::after_send(bool closed) {
  if (current_cell() != nullptr) {
    note_remote_send();  // the actor's turn ends with a flush
    return;
  }
  if (closed) {
    flush_sends();
  } else if (sleeping_.load(std::memory_order_acquire)) {
    wake();  // a lone tell leaves within the progress thread's next round
  }
}

void Engine::drain_open() {
  const std::size_t n = nodes();
  for (NodeId d = 0; d < n && open_count_.load(std::memory_order_acquire) != 0; ++d) {
    if (open_[d].frame.load(std::memory_order_acquire) == nullptr) continue;
    std::lock_guard lk(open_[d].mu);
    close_open(d);
  }
}

void Engine::flush() { flush_sends(); }

void Engine::flush_sends() {
  while (true) {
    std::unique_lock lk(mu_, std::try_to_lock);
    if (!lk.owns_lock()) break;
    drain_outq();
    flush_outboxes();
    test_sends();
    const bool started = note_in_flight();
    lk.unlock();
    // A transfer started here, from a sender's thread: the progress thread may
    // be in a long nap, and MPI moves the bytes only inside MPI calls.
    if (started && sleeping_.load(std::memory_order_seq_cst)) wake();
    if (outq_size_.load(std::memory_order_seq_cst) == 0) break;
  }
}

bool Engine::progress() {
  bool did = false;
  while (true) {
    std::unique_lock lk(mu_, std::try_to_lock);
    if (!lk.owns_lock()) break;
    did |= progress_locked();
    lk.unlock();
    // A sender may have queued while we held the engine and found it busy.
    if (outq_size_.load(std::memory_order_seq_cst) == 0) break;
  }
  deliver_ready();
  return did;
}

bool Engine::progress_locked() {
  bool did = drain_outq();
  did |= flush_outboxes();
  did |= test_sends();
  did |= probe_frames();
  did |= test_frame_recvs();
  did |= test_segment_recvs();
  note_in_flight();
  return did;
}

bool Engine::note_in_flight() {
  const bool now = !send_reqs_.empty() || !seg_reqs_.empty() || frames_pending_ != 0;
  // Written only under mu_: a plain load tells whether anything changed, and
  // every poll round and flush is spared a locked exchange when nothing did.
  if (in_flight_.load(std::memory_order_relaxed) == now) return false;
  in_flight_.store(now, std::memory_order_seq_cst);
  return now;
}

bool Engine::drain_outq() {
  if (open_count_.load(std::memory_order_acquire) != 0) drain_open();
  bool did = false;
  while (auto* e = static_cast<OutEnvelope*>(outq_.pop())) {
    outq_size_.fetch_sub(1, std::memory_order_relaxed);
    outq_bytes_.fetch_sub(e->bytes.size(), std::memory_order_relaxed);
    did = true;
    if (e->dest >= nodes() || !peers_[e->dest]->alive.load()) {
      EnvelopeRecycle{}(e);  // a lost node: the caller was (or will be) failed by the cluster layer
      continue;
    }
    auto& p = *peers_[e->dest];
    p.outbox.push_back(e);
    if (!p.dirty) {
      p.dirty = true;
      dirty_.push_back(e->dest);
    }
  }
  return did;
}

void Engine::post_send(NodeId peer, const void* data, std::size_t size, int tag, SendMeta meta) {
  MPI_Request req = MPI_REQUEST_NULL;
  checked(MPI_Isend(data, static_cast<int>(size), MPI_BYTE, peers_[peer]->rank, tag, peer_comm(peer), &req), "MPI_Isend");
  send_reqs_.push_back(req);
  send_meta_.push_back(std::move(meta));
}

void Engine::post_frame(NodeId peer, FrameBuffer frame, std::vector<std::shared_ptr<OutEnvelope>> keep,
                        std::size_t count) {
  // The frame, then each envelope's segments, in envelope order.
  std::vector<std::shared_ptr<OutEnvelope>> with_segments;
  for (auto& e : keep)
    if (!e->segments.empty()) with_segments.push_back(e);
  stats_.frames_sent++;
  stats_.envelopes_sent += count;
  if (frame) {
    stats_.bytes_sent += frame->size();
    const void* data = frame->data();
    const std::size_t size = frame->size();
    post_send(peer, data, size, kTagFrame, SendMeta{peer, std::move(frame), std::move(keep)});
  } else {
    auto& e = keep.front();
    stats_.bytes_sent += e->bytes.size();
    const void* data = e->bytes.data();
    const std::size_t size = e->bytes.size();
    post_send(peer, data, size, kTagFrame, SendMeta{peer, nullptr, std::move(keep)});
  }
  for (auto& e : with_segments) {
    for (auto& seg : e->segments) {
      const auto* p = static_cast<const std::byte*>(seg.data);
      std::size_t left = seg.size;
      for (std::size_t c = 0, n = chunks(seg.size); c < n; ++c) {
        const std::size_t len = std::min(left, kChunk);
        stats_.bytes_sent += len;
        post_send(peer, p, len, kTagSegment, SendMeta{peer, nullptr, {e}});
        p += len;
        left -= len;
      }
    }
  }
}

bool Engine::flush_outboxes() {
  if (dirty_.empty()) return false;
  auto& dirty = flushing_;
  dirty.clear();
  dirty.swap(dirty_);  // both keep their room
  std::size_t next = 0;
  try {
    for (; next < dirty.size(); ++next) {
      const NodeId peer = dirty[next];
      auto& p = *peers_[peer];
      while (!p.outbox.empty()) {
        // Choose the batch and allocate before taking anything out: if memory
        // runs out, the envelopes are still queued.
        std::size_t count = 0, bytes = 0, with_segments = 0;
        for (OutEnvelope* e : p.outbox) {
          if (count != 0 && bytes + e->bytes.size() > kFrameLimit) break;
          bytes += e->bytes.size();
          ++count;
          if (!e->segments.empty()) ++with_segments;
          if (bytes >= kFrameLimit) break;
        }
        if (count == 1 && p.outbox.front()->segments.empty()) {
          // Alone and without blocks (an ask, a reply, a closed frame): the
          // request owns it directly.
          OutFrame e(p.outbox.front());
          p.outbox.pop_front();
          stats_.frames_sent++;
          stats_.envelopes_sent += e->count;
          stats_.bytes_sent += e->bytes.size();
          const void* data = e->bytes.data();
          const std::size_t size = e->bytes.size();
          post_send(peer, data, size, kTagFrame, SendMeta{peer, nullptr, {}, std::move(e)});
          continue;
        }
        std::vector<std::shared_ptr<OutEnvelope>> keep;
        if (count == 1) {
          keep.reserve(1);
          OutFrame e(p.outbox.front());
          p.outbox.pop_front();
          const std::size_t envelopes = e->count;
          keep.emplace_back(std::move(e));
          post_frame(peer, nullptr, std::move(keep), envelopes);  // alone: straight from its buffer
          continue;
        }
        auto frame = take_frame_buffer(bytes);
        keep.reserve(with_segments);
        std::size_t envelopes = 0;
        for (std::size_t i = 0; i < count; ++i) {
          OutFrame e(p.outbox.front());
          p.outbox.pop_front();
          envelopes += e->count;
          frame->append(e->bytes.data(), e->bytes.size());  // within the reserved room: no throw
          if (!e->segments.empty()) keep.emplace_back(std::move(e));  // its segments still leave from its arguments
          // otherwise copied into the frame: nothing points into it any more
        }
        post_frame(peer, std::move(frame), std::move(keep), envelopes);
      }
      p.dirty = false;
    }
  } catch (...) {
    // Peers not flushed yet stay marked for the next round.
    for (; next < dirty.size(); ++next)
      if (!peers_[dirty[next]]->outbox.empty()) dirty_.push_back(dirty[next]);
      else peers_[dirty[next]]->dirty = false;
    throw;
  }
  return true;
}

bool Engine::test_sends() {
  if (send_reqs_.empty()) return false;
  int count = static_cast<int>(send_reqs_.size());
  int outcount = 0;
  test_idx_.resize(send_reqs_.size());
  checked(MPI_Testsome(count, send_reqs_.data(), &outcount, test_idx_.data(), MPI_STATUSES_IGNORE), "MPI_Testsome");
  if (outcount <= 0) return false;
  compact(send_reqs_, send_meta_, [&](std::size_t r) { return send_reqs_[r] != MPI_REQUEST_NULL; });
  return true;
}

bool Engine::probe_frames() {
  bool did = false;
  for (std::size_t c = 0; c < comms_.size(); ++c)
    for (int i = 0; i < 64; ++i) {
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    if (checked(MPI_Improbe(MPI_ANY_SOURCE, kTagFrame, comms_[c], &flag, &msg, &st), "MPI_Improbe") != MPI_SUCCESS ||
        !flag)
      break;
    did = true;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    const auto& ranks = rank_node_[c];
    const NodeId from = static_cast<std::size_t>(st.MPI_SOURCE) < ranks.size() ? ranks[static_cast<std::size_t>(st.MPI_SOURCE)]
                                                                                : kInvalidNode;
    if (from != kInvalidNode)
      heard_[from].store(coarse_now(), std::memory_order_relaxed);
    auto buf = take_frame_buffer(static_cast<std::size_t>(count));
    buf->resize(static_cast<std::size_t>(count));
    MPI_Request req = MPI_REQUEST_NULL;
    checked(MPI_Imrecv(buf->data(), count, MPI_BYTE, &msg, &req), "MPI_Imrecv");
    stats_.frames_received++;
    stats_.bytes_received += static_cast<std::uint64_t>(count);
    arrivals_.fetch_add(1, std::memory_order_relaxed);
    if (from == kInvalidNode || !peers_[from]->alive.load() || peers_[from]->comm != static_cast<int>(c)) {
      abandoned_.push_back(std::shared_ptr<ByteBuffer>(std::move(buf)));
      MPI_Request_free(&req);
      continue;
    }
    auto& frames = sources_[from]->frames;
    if (frames.empty()) {
      // Small frames are usually in already: read it now, and return so that
      // what it holds is delivered before the next probe (round-trip latency).
      int done = 0;
      MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (done) {
        process_frame(from, *buf);
        return true;
      }
    }
    frames.push_back(FrameRecv{req, std::move(buf)});
    ++frames_pending_;
  }
  return did;
}

bool Engine::test_frame_recvs() {
  if (frames_pending_ == 0) return false;
  bool did = false;
  // A bounded slice of decoding per call, so whoever drives the engine (the
  // progress thread runs failure detection too) comes back regularly; sources
  // take turns being first.
  // The clock is read from the 8th frame on: most calls read one or two.
  std::chrono::steady_clock::time_point budget_end{};
  unsigned read = 0;
  const std::size_t n = nodes();
  const std::size_t start = next_source_++ % n;
  for (std::size_t k = 0; k < n; ++k) {
    const NodeId from = static_cast<NodeId>((start + k) % n);
    auto& frames = sources_[from]->frames;
    while (!frames.empty()) {
      if (++read == 8) budget_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
      if (read > 8 && std::chrono::steady_clock::now() >= budget_end) return did;
      int done = 0;
      MPI_Test(&frames.front().req, &done, MPI_STATUS_IGNORE);
      if (!done) break;
      auto buf = std::move(frames.front().buf);
      frames.pop_front();
      --frames_pending_;
      did = true;
      process_frame(from, *buf);
    }
  }
  return did;
}

void Engine::process_frame(NodeId from, ByteBuffer& frame) {
  // Envelopes ready at once wait in arrived_ for the end of the frame, then go
  // to the ready list before anything queued behind them, on every way out.
  try {
    read_frame(from, frame);
  } catch (...) {
    handler_.on_frame_done();
    release_arrived();
    collect_ready(from);
    throw;
  }
  handler_.on_frame_done();
  release_arrived();
  collect_ready(from);
}

void Engine::release_arrived() {
  if (arrived_.empty()) return;
  std::lock_guard lk(ready_mu_);
  const std::size_t n = arrived_.size();
  for (auto& in : arrived_) ready_.push_back(std::move(in));
  ready_count_.fetch_add(n, std::memory_order_release);
  arrived_.clear();
}

void Engine::read_frame(NodeId from, ByteBuffer& frame) {
  std::size_t off = 0;
  Envelope env;  // reused: their vectors keep their room
  EnvelopeFault fault;
  while (off < frame.size()) {
    std::uint32_t len = 0;
    if (frame.size() - off < kFrameSlot) break;  // our own framing is intact unless MPI broke it
    std::memcpy(&len, frame.data() + off, sizeof len);
    off += kFrameSlot;
    if (len > frame.size() - off) {
      std::fprintf(stderr, "troupe: node %u: malformed frame from node %u\n", self_, from);
      break;
    }
    const std::size_t entry = off;
    off += len;
    std::size_t n = parse_envelope(frame.data() + entry, len, env, fault);
    if (n != 0 && n != len) {
      n = 0;
      fault.what = "troupe: envelope length disagrees with its frame entry";
      fault.frame_lost = true;
    }
    if (n == 0) {
      // Reported at delivery (in order, outside the engine lock: the handler
      // may answer, and answering sends).
      auto report = std::make_shared<Delivery>();
      report->inbound = std::make_unique<FaultReport>(handler_, from, fault);
      sources_[from]->queue.push_back(std::move(report));
      partial_.fetch_add(1, std::memory_order_relaxed);
      if (fault.frame_lost) continue;  // unreadable: skip just this entry
      // Another version: skip it, and its segments.
      auto d = std::make_shared<Delivery>();
      std::vector<InSegment> dests;
      if (!drain_into_scratch(from, *d, fault.segment_sizes, dests)) break;
      post_segment_recvs(from, d, std::move(dests));
      sources_[from]->queue.push_back(std::move(d));
      partial_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    env.source = from;  // MPI's word, not the sender's
    stats_.envelopes_received++;
    std::unique_ptr<Inbound> inbound;
    try {
      inbound = handler_.on_envelope(from, env);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "troupe: node %u: dropping an envelope from node %u: %s\n", self_, from, e.what());
    }
    if (!inbound && env.segment_sizes.empty()) continue;  // nothing to deliver, nothing to drain (joined a batch, say)
    if (env.segment_sizes.empty() && (!inbound || inbound->segments.empty()) && sources_[from]->queue.empty()) {
      // Nothing to wait for and nothing before it: ready now (the common case).
      arrived_.push_back(std::move(inbound));
      partial_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    auto d = std::make_shared<Delivery>();
    d->inbound = std::move(inbound);
    std::vector<InSegment> dests;
    if (d->inbound && d->inbound->segments.size() == env.segment_sizes.size()) {
      dests = d->inbound->segments;
    } else {
      // Nobody wants the blocks (or the handler got them wrong): drain them.
      if (d->inbound && !d->inbound->segments.empty()) {
        std::fprintf(stderr, "troupe: node %u: segment plan mismatch for an envelope from node %u\n", self_, from);
        d->inbound.reset();
      }
      if (!drain_into_scratch(from, *d, env.segment_sizes, dests)) break;
    }
    post_segment_recvs(from, d, std::move(dests));
    sources_[from]->queue.push_back(std::move(d));
    partial_.fetch_add(1, std::memory_order_relaxed);
  }
}

bool Engine::drain_into_scratch(NodeId from, Delivery& d, const std::vector<std::uint64_t>& sizes,
                                std::vector<InSegment>& dests) {
  try {
    for (auto size : sizes) {
      d.scratch.emplace_back();
      d.scratch.back().resize(size);
      dests.push_back({d.scratch.back().data(), size});
    }
    return true;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "troupe: node %u: no memory to drain an envelope's blocks from node %u; dropping the frame\n",
                 self_, from);
    return false;
  }
}

void Engine::post_segment_recvs(NodeId from, const std::shared_ptr<Delivery>& d, std::vector<InSegment> dests) {
  for (auto& seg : dests) {
    auto* p = static_cast<std::byte*>(seg.data);
    std::size_t left = seg.size;
    for (std::size_t c = 0, n = chunks(seg.size); c < n; ++c) {
      const std::size_t len = std::min(left, kChunk);
      MPI_Request req = MPI_REQUEST_NULL;
      checked(MPI_Irecv(p, static_cast<int>(len), MPI_BYTE, peers_[from]->rank, kTagSegment, peer_comm(from), &req),
              "MPI_Irecv");
      seg_reqs_.push_back(req);
      seg_meta_.push_back(SegRecv{from, d});
      d->pending++;
      stats_.bytes_received += len;
      p += len;
      left -= len;
    }
  }
}

bool Engine::test_segment_recvs() {
  if (seg_reqs_.empty()) return false;
  int outcount = 0;
  test_idx_.resize(seg_reqs_.size());
  auto& idx = test_idx_;
  checked(MPI_Testsome(static_cast<int>(seg_reqs_.size()), seg_reqs_.data(), &outcount, idx.data(),
                       MPI_STATUSES_IGNORE),
          "MPI_Testsome");
  if (outcount <= 0) return false;
  arrivals_.fetch_add(static_cast<std::uint64_t>(outcount), std::memory_order_relaxed);
  std::vector<NodeId> touched;
  for (int k = 0; k < outcount; ++k) {
    auto& m = seg_meta_[static_cast<std::size_t>(idx[static_cast<std::size_t>(k)])];
    m.owner->pending--;
    touched.push_back(m.from);
  }
  compact(seg_reqs_, seg_meta_, [&](std::size_t r) { return seg_reqs_[r] != MPI_REQUEST_NULL; });
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  for (NodeId from : touched) collect_ready(from);
  return true;
}

void Engine::collect_ready(NodeId from) {
  auto& q = sources_[from]->queue;
  if (q.empty() || q.front()->pending != 0) return;
  std::lock_guard lk(ready_mu_);
  while (!q.empty() && q.front()->pending == 0) {
    ready_.push_back(std::move(q.front()->inbound));
    q.pop_front();  // frees its drained blocks, if any (MPI is done with them: pending == 0)
    ready_count_.fetch_add(1, std::memory_order_release);
  }
}

void Engine::deliver_ready() {
  while (true) {
    if (ready_count_.load(std::memory_order_acquire) == 0) return;
    std::unique_lock dlk(deliver_mu_, std::try_to_lock);
    if (!dlk.owns_lock()) return;  // the thread delivering will see ours
    auto& batch = delivering_;
    {
      std::lock_guard lk(ready_mu_);
      batch.swap(ready_);
      ready_count_.fetch_sub(batch.size(), std::memory_order_acq_rel);
    }
    for (auto& in : batch) {
      if (in) {
        try {
          in->deliver();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "troupe: node %u: delivery failed: %s\n", self_, e.what());
        } catch (...) {
          std::fprintf(stderr, "troupe: node %u: delivery failed\n", self_);
        }
      }
      partial_.fetch_sub(1, std::memory_order_release);
    }
    batch.clear();  // keeps its capacity for the next round
  }
}

void Engine::mark_lost(NodeId n) {
  if (n >= nodes()) return;
  std::vector<std::shared_ptr<Delivery>> undelivered;
  {
  std::lock_guard lk(mu_);
  auto& p = *peers_[n];
  if (!p.alive.exchange(false)) return;
  for (auto* e : p.outbox) delete e;
  p.outbox.clear();
  {
    std::lock_guard olk(open_[n].mu);
    if (OutEnvelope* f = open_[n].frame.exchange(nullptr)) {
      open_count_.fetch_sub(1, std::memory_order_acq_rel);
      delete f;
    }
  }
  // Sends to it may never complete: free the requests, keep their buffers.
  compact(send_reqs_, send_meta_, [&](std::size_t r) {
    if (send_meta_[r].peer != n) return true;
    MPI_Request_free(&send_reqs_[r]);
    abandoned_.push_back(std::make_shared<SendMeta>(std::move(send_meta_[r])));
    return false;
  });
  // Receives from it: cancel what can be cancelled, abandon the rest.
  compact(seg_reqs_, seg_meta_, [&](std::size_t r) {
    if (seg_meta_[r].from != n) return true;
    MPI_Cancel(&seg_reqs_[r]);
    MPI_Request_free(&seg_reqs_[r]);
    abandoned_.push_back(seg_meta_[r].owner);
    return false;
  });
  auto& src = *sources_[n];
  for (auto& f : src.frames) {
    MPI_Request_free(&f.req);
    abandoned_.push_back(std::shared_ptr<ByteBuffer>(std::move(f.buf)));
    --frames_pending_;
  }
  src.frames.clear();
  partial_.fetch_sub(src.queue.size(), std::memory_order_relaxed);
  for (auto& d : src.queue) {
    abandoned_.push_back(d);
    undelivered.push_back(d);
  }
  src.queue.clear();
  }
  // What arrived from it but was never delivered (still waiting for blocks):
  // tell whoever waits, outside the engine lock. The buffers stay kept.
  for (auto& d : undelivered)
    if (d->inbound) d->inbound->abandon();
}

void Engine::release_joined_comms() {
  std::lock_guard lk(mu_);
  if (send_reqs_.empty() && seg_reqs_.empty())
    for (std::size_t c = joined_start_ ? 0 : 1; c < comms_.size(); ++c) MPI_Comm_free(&comms_[c]);
}

std::vector<int> Engine::world_ranks() const {
  const int n = static_cast<int>(rank_node_[0].size());
  std::vector<int> mine(static_cast<std::size_t>(n)), world(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) mine[static_cast<std::size_t>(i)] = i;
  MPI_Group g, w;
  MPI_Comm_group(comms_[0], &g);
  MPI_Comm_group(MPI_COMM_WORLD, &w);
  MPI_Group_translate_ranks(g, n, mine.data(), w, world.data());
  MPI_Group_free(&g);
  MPI_Group_free(&w);
  return world;
}

bool Engine::alive(NodeId n) const { return n < nodes() && peers_[n]->alive.load(); }

bool Engine::heard_pending(NodeId n) {
  if (n >= nodes()) return false;
  int flag = 0;
  bool queued = false;
  {
    std::lock_guard lk(mu_);  // brief: a probe, no receive
    MPI_Iprobe(peers_[n]->rank, MPI_ANY_TAG, peer_comm(n), &flag, MPI_STATUS_IGNORE);
    queued = !sources_[n]->frames.empty();
  }
  if (flag || queued) heard_[n].store(std::chrono::steady_clock::now().time_since_epoch().count());
  return flag || queued;
}

std::chrono::steady_clock::time_point Engine::last_heard(NodeId n) const {
  if (n >= nodes()) return {};
  return std::chrono::steady_clock::time_point(
      std::chrono::steady_clock::duration(heard_[n].load(std::memory_order_relaxed)));
}

bool Engine::quiet() const {
  if (outq_size_.load(std::memory_order_acquire) != 0) return false;
  if (open_count_.load(std::memory_order_acquire) != 0) return false;
  if (partial_.load(std::memory_order_acquire) != 0) return false;
  return true;
}

bool Engine::sends_pending() {
  if (outq_size_.load() != 0 || open_count_.load() != 0) return true;
  std::lock_guard lk(mu_);
  return !send_reqs_.empty() || !dirty_.empty();
}

EngineStats Engine::stats() const {
  EngineStats out;
  {
    std::lock_guard lk(const_cast<std::mutex&>(mu_));
    out = stats_;
  }
  std::lock_guard lk(const_cast<std::mutex&>(sleep_mu_));  // the two nap counts move together under it
  out.idle_naps = idle_naps_.load(std::memory_order_relaxed);
  out.idle_nap_us = idle_nap_us_.load(std::memory_order_relaxed);
  return out;
}

void Engine::wake() {
  std::lock_guard lk(sleep_mu_);
  sleep_cv_.notify_one();
}

void Engine::start_progress_thread(std::function<void()> tick, std::chrono::microseconds tick_period,
                                   std::function<void()> on_activity) {
  stop_.store(false);
  thread_ = std::thread([this, tick = std::move(tick), tick_period, on_activity = std::move(on_activity)]() mutable {
    progress_loop(std::move(tick), tick_period, std::move(on_activity));
  });
}

void Engine::stop_progress_thread() {
  stop_.store(true);
  wake();
  if (thread_.joinable()) thread_.join();
}

void Engine::progress_loop(std::function<void()> tick, std::chrono::microseconds tick_period,
                           std::function<void()> on_activity) {
  using clock = std::chrono::steady_clock;
  auto next_tick = clock::now() + tick_period;
  unsigned idle = 0;
  std::uint64_t helper_rounds = helper_rounds_.load(std::memory_order_relaxed);
  auto tick_if_due = [&](clock::time_point now) {
    if (!tick || now < next_tick) return;
    try {
      tick();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "troupe: node %u: failure detection tick failed: %s\n", self_, e.what());
    }
    next_tick = now + tick_period;
  };
  while (!stop_.load(std::memory_order_acquire)) {
    const std::uint64_t rounds = helper_rounds_.load(std::memory_order_relaxed);
    if (helpers_.load(std::memory_order_acquire) > 0 && rounds != std::exchange(helper_rounds, rounds)) {
      // A helper drove the engine since we last looked: leave it to them, run
      // failure detection, look again shortly. (A helper that stopped driving,
      // say a poll task waiting for a worker, changes nothing: we drive.)
      tick_if_due(clock::now());
      std::unique_lock lk(sleep_mu_);
      sleeping_.store(true, std::memory_order_release);
      sleep_cv_.wait_for(lk, std::chrono::microseconds(200));
      sleeping_.store(false, std::memory_order_release);
      continue;
    }
    const auto arrived_before = arrivals_.load(std::memory_order_relaxed);
    bool did = false;
    try {
      did = progress();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "troupe: node %u: progress failed: %s\n", self_, e.what());
    }
    const auto now = clock::now();
    tick_if_due(now);
    if (did) {
      idle = 0;
      // Traffic is arriving (frames, or the blocks of a large message) and
      // nobody else polls: let the workers poll. They also run the turns that
      // the arrivals made ready, at once; left to the scheduler, with this
      // thread still hot on a rank's one core, the reply to a window of large
      // TCP messages waited ~330 us (median) for its worker (event trace).
      if (on_activity && helpers_.load(std::memory_order_acquire) == 0 &&
          arrivals_.load(std::memory_order_relaxed) != arrived_before)
        on_activity();
      continue;
    }
    if (helpers_.load(std::memory_order_acquire) > 0) {
      // Someone blocked on a future drives the engine: rest, but stay near.
      std::unique_lock lk(sleep_mu_);
      sleeping_.store(true, std::memory_order_release);
      sleep_cv_.wait_for(lk, std::chrono::microseconds(200));
      sleeping_.store(false, std::memory_order_release);
      continue;
    }
    ++idle;
    if (idle < 256) {  // busy: stay hot for a few tens of microseconds
      for (int i = 0; i < 16; ++i) TROUPE_CPU_RELAX();
      continue;
    }
    if (idle < 512) {
      std::this_thread::yield();
      continue;
    }
    // Idle: sleep, longer and longer (20 us .. 1 ms), never past the next tick.
    auto nap = std::chrono::microseconds(std::min(kShortestNap.count() << std::min(idle - 512, 6u), kLongestNap.count()));
    auto until_tick = std::chrono::duration_cast<std::chrono::microseconds>(next_tick - now);
    if (tick && until_tick < nap) nap = std::max(until_tick, std::chrono::microseconds(1));
    std::unique_lock lk(sleep_mu_);
    sleeping_.store(true, std::memory_order_seq_cst);
    // While a transfer is under way, only the shortest nap: MPI moves a large
    // message's bytes inside our calls only (Open MPI's TCP transport does), so
    // a long nap stalls the transfer; a spin would take the core from the ranks
    // it shares with (4 ranks on 2 cores: heartbeats went missing). Read after
    // marking ourselves asleep: a sender whose flush starts a transfer either
    // sees us asleep and wakes us, or we see its mark (seq_cst on both sides).
    if (in_flight_.load(std::memory_order_seq_cst)) nap = std::min(nap, kShortestNap);
    if (outq_size_.load() == 0 && open_count_.load() == 0 && !stop_.load()) {
      idle_naps_.fetch_add(1, std::memory_order_relaxed);
      idle_nap_us_.fetch_add(static_cast<std::uint64_t>(nap.count()), std::memory_order_relaxed);
      sleep_cv_.wait_for(lk, nap);
    }
    sleeping_.store(false, std::memory_order_release);
  }
}

}  // namespace troupe::detail
