// The engine's sending side: open frames that coalesce small envelopes, the
// queue senders hand envelopes to, per-peer outboxes, and the MPI sends of
// frames and their blocks.
#include <algorithm>
#include <cstring>

#include "engine_internal.hpp"
#include "troupe/detail/actor_cell.hpp"
#include "troupe/detail/stage_probe.hpp"

namespace troupe::detail {
namespace {

/// Deleter of an envelope's shared owner made before the envelope leaves its
/// outbox (no allocation may happen after): recycles it only once armed.
struct ArmedRecycle {
  bool armed = false;
  void operator()(OutEnvelope* e) const noexcept {
    if (armed) EnvelopeRecycle{}(e);
  }
};

}  // namespace

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
  } else if (sleeping_.load(std::memory_order_seq_cst)) {  // against the sleeper's seq_cst mark, like a flush
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
  if (urgent && draft->segments.empty() && send_now(draft)) return;
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

bool Engine::send_now(Draft& draft) {
  const NodeId dest = draft->dest;
  if (draft->bytes.size() > kPostedFrame) return false;  // it needs a stub: the usual way
  std::unique_lock lk(mu_, std::try_to_lock);
  if (!lk.owns_lock() || shut_) return false;
  MPI_Request req = MPI_REQUEST_NULL;
  {
    // Nothing for dest may be waiting anywhere before it: not in its open
    // frame, the queue (which any sender fills under dest's open-frame lock,
    // held here), or its outbox (filled under mu_, held here).
    std::lock_guard olk(open_[dest].mu);
    auto& p = *peers_[dest];
    if (open_[dest].frame.load(std::memory_order_relaxed) != nullptr ||
        outq_size_.load(std::memory_order_seq_cst) != 0 || !p.outbox.empty() || !p.alive.load() ||
        !unjoined_.empty())
      return false;
    try {
      room_for_sends(1);  // first: past it nothing throws
    } catch (const std::bad_alloc&) {
      return false;  // the draft is untouched: the usual way, which queues it or says it could not
    }
    stats_.frames_sent++;
    stats_.envelopes_sent++;
    stats_.bytes_sent += draft->bytes.size();
    TROUPE_STAGE(isend_begin);
    req = isend(dest, draft->bytes.data(), draft->bytes.size(), kTagFrame);
    TROUPE_STAGE(isend_end);
  }
  // A small send is usually done as soon as it is posted (MPI copied it out):
  // then the draft goes back to its cache when the caller lets go of it, with
  // no record to reap. (A send MPI refused has a null request: done.)
  int done = 0;
  if (checked(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test (a send)") != MPI_SUCCESS)
    send_failed(dest, "a send failed");
  if (req != MPI_REQUEST_NULL) {  // not done (or failed and not freed: MPI may still read the draft)
    send_reqs_.push_back(req);  // room_for_sends made room: no throw
    send_meta_.push_back(SendMeta{dest, nullptr, {}, nullptr, std::move(draft)});
  }
  // As a flush would: finished sends are reaped, and a progress thread in a
  // long nap learns of a transfer.
  test_sends();
  const bool started = note_in_flight();
  lk.unlock();
  if (started && sleeping_.load(std::memory_order_seq_cst)) wake();
  // Another sender may have queued while we held the engine and found it busy.
  // (Our envelope has left: out of memory here is the progress thread's to meet.)
  if (outq_size_.load(std::memory_order_seq_cst) != 0) {
    try {
      flush_sends();
    } catch (...) {
    }
  }
  TROUPE_STAGE(send_now_done);
  return true;
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
  } else if (sleeping_.load(std::memory_order_seq_cst)) {  // against the sleeper's seq_cst mark, like a flush
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
  for (int round = 0; round < kProgressRounds; ++round) {  // (as progress())
    std::unique_lock lk(mu_, std::try_to_lock);
    if (!lk.owns_lock()) {
      // Whoever holds the engine may leave without looking at the queue again
      // (send_now, stats): a progress thread in a nap must not sleep through it.
      if (sleeping_.load(std::memory_order_seq_cst)) wake();
      break;
    }
    if (shut_) break;
    forget_short_of_memory();
    drain_outq();
    flush_outboxes();
    test_sends();
    if (!staging_.empty()) pump_blocks();
    const bool started = note_in_flight();
    const bool short_of_memory = short_of_memory_.load(std::memory_order_relaxed);
    lk.unlock();
    // A transfer started here, from a sender's thread: the progress thread may
    // be in a long nap, and MPI moves the bytes only inside MPI calls.
    if (started && sleeping_.load(std::memory_order_seq_cst)) wake();
    // Short of memory, what is left waits for the progress thread's next try
    // (trying again here at once would only spin).
    if (short_of_memory || outq_size_.load(std::memory_order_seq_cst) == 0) break;
  }
}

bool Engine::drain_outq() {
  if (open_count_.load(std::memory_order_acquire) != 0) drain_open();
  // Envelopes kept for nodes that have joined since go first: the queue may
  // hold later ones to the same nodes.
  if (!unjoined_.empty() && !release_unjoined()) return false;
  bool did = false;
  while (true) {
    // One taken out last time that found no room in its outbox goes first.
    OutEnvelope* e = std::exchange(held_, nullptr);
    if (e == nullptr && (e = static_cast<OutEnvelope*>(outq_.pop())) == nullptr) break;
    const Placed where = place(e);
    if (where == Placed::no_room) {
      // No memory: held, still counted as queued (quiet() and send_now's order
      // check see it), and first next time. What is in the outboxes goes on.
      held_ = e;
      break;
    }
    uncount_queued(e);
    if (where == Placed::dropped) EnvelopeRecycle{}(e);
    did = true;
  }
  return did;  // a retry that failed again is no progress
}

Engine::Placed Engine::place(OutEnvelope* e) {
  if (e->dest >= peers_.size()) return Placed::dropped;  // no such node, ever
  if (e->dest >= nodes()) {
    // A node being added: the cluster layer counts it alive a moment before
    // add_nodes() here. Kept, in order, not dropped (the sender counted it
    // as work, and may wait for its reply).
    try {
      unjoined_.push_back(e);
    } catch (const std::bad_alloc&) {
      short_of_memory_.store(true, std::memory_order_relaxed);
      return Placed::no_room;
    }
    return Placed::kept;
  }
  // A lost node: the caller was (or will be) failed by the cluster layer.
  if (!peers_[e->dest]->alive.load()) return Placed::dropped;
  auto& p = *peers_[e->dest];
  try {
    p.outbox.push_back(e);
  } catch (const std::bad_alloc&) {
    short_of_memory_.store(true, std::memory_order_relaxed);
    return Placed::no_room;
  }
  if (!p.dirty) {
    p.dirty = true;
    dirty_.push_back(e->dest);  // room for every node (init_storage): no throw
  }
  return Placed::kept;
}

bool Engine::release_unjoined() {
  // In order; once one finds no room, every later one waits too.
  std::size_t kept = 0;
  bool room = true;
  for (OutEnvelope* e : unjoined_) {
    if (room && e->dest < nodes()) {
      const Placed where = place(e);  // not kept here again: its node joined
      if (where == Placed::dropped) EnvelopeRecycle{}(e);
      if (where != Placed::no_room) continue;
      room = false;
    }
    unjoined_[kept++] = e;
  }
  unjoined_.resize(kept);  // smaller: no throw
  return room;
}

void Engine::uncount_queued(const OutEnvelope* e) noexcept {
  outq_size_.fetch_sub(1, std::memory_order_relaxed);
  outq_bytes_.fetch_sub(e->bytes.size(), std::memory_order_relaxed);
}

void Engine::room_for_sends(std::size_t n) {
  auto grow = [n](auto& v, std::size_t size) {
    if (v.capacity() >= size + n) return;
    try {
      v.reserve(std::max(2 * v.capacity(), size + n));
    } catch (const std::bad_alloc&) {
      v.reserve(size + n);  // short of memory: just what is needed
    }
  };
  grow(send_reqs_, send_reqs_.size());
  grow(send_meta_, send_meta_.size());
  grow(test_idx_, send_reqs_.size());  // test_sends sizes these to the requests: no allocation after a send
  grow(send_status_, send_reqs_.size());
}

FrameBuffer Engine::take_stub(std::size_t size) {
  FrameBuffer stub = take_frame_buffer(kStubBytes);
  stub->resize(kStubBytes);
  const std::uint32_t head[2] = {kStubMark, 0};
  const std::uint64_t len = size;
  std::memcpy(stub->data(), head, sizeof head);
  std::memcpy(stub->data() + sizeof head, &len, sizeof len);
  return stub;
}

void Engine::post_send(NodeId peer, const void* data, std::size_t size, int tag, SendMeta meta, FrameBuffer stub) {
  const bool stub_first = tag == kTagFrame && size > kPostedFrame;
  room_for_sends(stub_first ? 2 : 1);  // the requests posted below always find a place
  if (stub_first) {
    if (!stub) stub = take_stub(size);
    const void* stub_data = stub->data();
    post_one(peer, stub_data, kStubBytes, kTagFrame, SendMeta{peer, std::move(stub)});
    tag = kTagLargeFrame;
  }
  post_one(peer, data, size, tag, std::move(meta));
}

MPI_Request Engine::isend(NodeId peer, const void* data, std::size_t size, int tag) {
  MPI_Request req = MPI_REQUEST_NULL;
  auto& p = *peers_[peer];
  if (p.refused) return req;
  if (checked(MPI_Isend(data, static_cast<int>(size), MPI_BYTE, p.rank, tag, peer_comm(peer), &req), "MPI_Isend") !=
      MPI_SUCCESS) {
    req = MPI_REQUEST_NULL;
    send_failed(peer, "MPI refused a send");
  }
  return req;
}

void Engine::send_failed(NodeId peer, const char* how) {
  // What came after it would arrive with a gap before it: read out of order,
  // or (a frame's stub, a block's chunk) into the wrong receive. Nothing more
  // is sent to that node, and the cluster declares it lost.
  auto& p = *peers_[peer];
  if (p.refused) return;
  std::fprintf(stderr, "troupe: node %u: %s to node %u; nothing more is sent to it\n", self_, how, peer);
  p.refused = true;
  broken_news_[peer].store(true, std::memory_order_relaxed);
}

void Engine::post_one(NodeId peer, const void* data, std::size_t size, int tag, SendMeta meta) {
  const MPI_Request req = isend(peer, data, size, tag);
  send_reqs_.push_back(req);
  send_meta_.push_back(std::move(meta));
}

void Engine::post_frame(NodeId peer, FrameBuffer frame, std::vector<std::shared_ptr<OutEnvelope>> keep,
                        std::size_t count, FrameBuffer stub) {
  // The frame, then each envelope's segments, in envelope order.
  frame_blocks_.clear();  // its room was made for this batch
  for (auto& e : keep)
    if (!e->segments.empty()) frame_blocks_.push_back(e);
  stats_.frames_sent++;
  stats_.envelopes_sent += count;
  if (frame) {
    stats_.bytes_sent += frame->size();
    const void* data = frame->data();
    const std::size_t size = frame->size();
    post_send(peer, data, size, kTagFrame, SendMeta{peer, std::move(frame), std::move(keep)}, std::move(stub));
  } else {
    auto& e = keep.front();
    stats_.bytes_sent += e->bytes.size();
    const void* data = e->bytes.data();
    const std::size_t size = e->bytes.size();
    post_send(peer, data, size, kTagFrame, SendMeta{peer, nullptr, std::move(keep)}, std::move(stub));
  }
  for (auto& e : frame_blocks_) queue_blocks(peer, e);
  frame_blocks_.clear();
}

void Engine::make_batch_room(NodeId peer, std::size_t count, std::size_t frame_size, FrameBuffer& stub) {
  auto& p = *peers_[peer];
  std::size_t requests = frame_size > kPostedFrame ? 2 : 1, blocks = 0, with_blocks = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const OutEnvelope* e = p.outbox[i];
    if (!e->segments.empty()) ++with_blocks;
    for (const auto& seg : e->segments) {
      requests += chunks(seg.size, false);  // whole from its memory now, or queued (counted both ways)
      ++blocks;
    }
  }
  room_for_sends(requests);
  p.blocks.make_room(blocks);
  if (frame_blocks_.capacity() < with_blocks) frame_blocks_.reserve(with_blocks);
  if (frame_size > kPostedFrame && !stub) stub = take_stub(frame_size);
}

bool Engine::flush_outboxes() {
  if (dirty_.empty()) return false;
  auto& dirty = flushing_;
  dirty.clear();
  dirty.swap(dirty_);  // both keep their room
  bool posted = false;
  for (const NodeId peer : dirty) {
    auto& p = *peers_[peer];
    try {
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
        FrameBuffer stub;
        make_batch_room(peer, count, bytes, stub);
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
          post_send(peer, data, size, kTagFrame, SendMeta{peer, nullptr, {}, std::move(e)}, std::move(stub));
          posted = true;
          continue;
        }
        // Owners of the envelopes whose blocks MPI reads after the frame (or
        // of the one sent from its own buffer): made while they are still
        // queued, armed to recycle them only once they have left the outbox.
        std::vector<std::shared_ptr<OutEnvelope>> keep;
        keep.reserve(count == 1 ? 1 : with_segments);
        for (std::size_t i = 0; i < count; ++i)
          if (count == 1 || !p.outbox[i]->segments.empty()) keep.emplace_back(p.outbox[i], ArmedRecycle{});
        FrameBuffer frame = count == 1 ? FrameBuffer{} : take_frame_buffer(bytes);
        // Nothing below throws: the batch leaves whole.
        std::size_t envelopes = 0;
        for (std::size_t i = 0; i < count; ++i) {
          OutEnvelope* e = p.outbox.front();
          p.outbox.pop_front();
          envelopes += e->count;
          if (!frame) continue;  // alone: straight from its buffer
          frame->append(e->bytes.data(), e->bytes.size());  // within the reserved room
          // Copied into the frame, nothing points into it any more; one with
          // blocks stays (they leave from its arguments).
          if (e->segments.empty()) EnvelopeRecycle{}(e);
        }
        for (auto& k : keep) std::get_deleter<ArmedRecycle>(k)->armed = true;
        post_frame(peer, std::move(frame), std::move(keep), envelopes, std::move(stub));
        posted = true;
      }
      p.dirty = false;
    } catch (...) {
      // No memory for its next batch, which stays queued whole: the peer stays
      // marked for the next round, and the others go on.
      dirty_.push_back(peer);  // room for every node: no throw
      short_of_memory_.store(true, std::memory_order_relaxed);
    }
  }
  return posted;  // a peer whose batch found no memory again is no progress
}

bool Engine::test_sends() {
  if (send_reqs_.empty()) return false;
  int count = static_cast<int>(send_reqs_.size());
  int outcount = 0;
  test_idx_.resize(send_reqs_.size());
  send_status_.resize(send_reqs_.size());
  const int rc = MPI_Testsome(count, send_reqs_.data(), &outcount, test_idx_.data(), send_status_.data());
  if (rc == MPI_ERR_IN_STATUS) {
    // Sends that completed in error (their requests are freed, as the others'):
    // their bytes may never have gone, and those behind them would follow a gap.
    for (int k = 0; k < outcount; ++k) {
      const int err = send_status_[static_cast<std::size_t>(k)].MPI_ERROR;
      if (err == MPI_SUCCESS) continue;
      checked(err, "a send");
      send_failed(send_meta_[static_cast<std::size_t>(test_idx_[static_cast<std::size_t>(k)])].peer, "a send failed");
    }
  } else {
    checked(rc, "MPI_Testsome");
  }
  // MPI_UNDEFINED: every request is null (sends MPI refused): done with all.
  if (outcount == 0 || (outcount < 0 && outcount != MPI_UNDEFINED)) return false;
  compact(send_reqs_, send_meta_, [&](std::size_t r) { return send_reqs_[r] != MPI_REQUEST_NULL; });
  return true;
}

}  // namespace troupe::detail
