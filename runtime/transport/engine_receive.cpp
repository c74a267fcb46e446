// The engine's receiving side: the receives frames land in (and the large
// frames their stubs announce), reading them, receiving the blocks they declare
// into their destinations, and delivering envelopes in
// each sender's order.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>

#include "engine_internal.hpp"
#include "troupe/error.hpp"
#include "troupe/detail/future_state.hpp"
#include "troupe/detail/stage_probe.hpp"

namespace troupe::detail {
namespace {

/// A bad envelope, reported to the handler when its turn to be delivered comes.
class FaultReport final : public Inbound {
 public:
  FaultReport(InboundHandler& h, NodeId from, EnvelopeFault f) : h_(h), from_(from), fault_(std::move(f)) {}
  void deliver() override { h_.on_bad_envelope(from_, fault_); }
  void reject(std::exception_ptr) override { deliver(); }  // it has no blocks

 private:
  InboundHandler& h_;
  NodeId from_;
  EnvelopeFault fault_;
};

/// What a caller learns of a segment that came with another size than declared.
std::exception_ptr segment_fault_error(const Inbound::SegmentFault& f) {
  const std::string what =
      f.failed   ? "troupe: a block of the message could not be received (MPI reported an error)"
      : f.longer ? "troupe: a block of the message arrived longer than the " + std::to_string(f.declared) +
                       " bytes its envelope declared (the sender broke the protocol)"
                 : "troupe: a block of the message arrived " + std::to_string(f.declared - f.got) +
                       " bytes short of the " + std::to_string(f.declared) +
                       " its envelope declared (the sender broke the protocol)";
  return std::make_exception_ptr(DecodeError(what));
}

}  // namespace

bool Engine::post_frame_recv(FrameRing& r, std::size_t c) {
  const unsigned i = (r.head + r.posted) % kPostedReceives;  // the next slot in ring order
  auto& buf = r.buf[i];
  if (!buf) buf = take_frame_buffer(kFrameLimit);  // may throw: nothing is posted, the next round tries again
  buf->resize(kFrameLimit);
  if (checked(MPI_Irecv(buf->data(), static_cast<int>(kFrameLimit), MPI_BYTE, MPI_ANY_SOURCE, kTagFrame, comms_[c],
                        &r.req[i]),
              "MPI_Irecv (frames)") != MPI_SUCCESS) {
    r.req[i] = MPI_REQUEST_NULL;
    return false;
  }
  ++r.posted;
  return true;
}

void Engine::stop_receiving_locked() {
  if (!receiving_) return;
  receiving_ = false;
  // Each is cancelled, or completed by a frame that came meanwhile (dropped:
  // we are shutting down). Not waited for without bound: a frame that MPI
  // matched but moves by rendezvous (larger than the transport's eager limit:
  // a sender that breaks the protocol, or a transport whose limit is below
  // kPostedFrame) can no longer be cancelled, and if its sender died or
  // stopped midway it never completes. Such a receive is let go of, its
  // buffer kept for MPI (the engine's graveyard), and the shutdown goes on.
  for (auto& r : posted_)
    for (auto& req : r.req)
      if (req != MPI_REQUEST_NULL) MPI_Cancel(&req);
  const auto until = std::chrono::steady_clock::now() + kCancelPatience;
  for (auto& r : posted_)
    for (unsigned i = 0; i < kPostedReceives; ++i) {
      auto& req = r.req[i];
      while (req != MPI_REQUEST_NULL) {
        int done = 0;
        if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) break;  // (req is null now)
        if (std::chrono::steady_clock::now() < until) {
          std::this_thread::yield();
          continue;
        }
        MPI_Request_free(&req);
        try {
          abandoned_.reserve(abandoned_.size() + 1);
          std::shared_ptr<ByteBuffer> kept(std::move(r.buf[i]));  // (r.buf[i] keeps it if this throws)
          abandoned_.push_back(std::move(kept));
        } catch (const std::bad_alloc&) {
          (void)r.buf[i].release();  // leaked rather than freed under MPI
        }
      }
    }
  posted_.clear();
  for (auto& req : expel_reqs_) {  // 8 bytes: eager on every transport, so never matched half
    if (req == MPI_REQUEST_NULL) continue;
    MPI_Cancel(&req);
    MPI_Wait(&req, MPI_STATUS_IGNORE);
  }
  // (expel_bufs_ stay: a later call posts nothing once receiving_ is false.)
}

[[gnu::always_inline]] inline Engine::Landed Engine::take_landed(FrameRing& r, std::size_t c, unsigned i,
                                                                  bool landed_now) {
  ByteBuffer& buf = *r.buf[i];
  const NodeId from = r.from[i];
  if (from == kInvalidNode || peers_[from]->comm != static_cast<int>(c)) return Landed::dropped;  // nobody's
  if (!peers_[from]->alive.load()) {  // a lost node's: dropped, and it will be told
    if (landed_now) lost_heard_[from].store(true, std::memory_order_relaxed);
    return Landed::dropped;
  }
  auto& src = *sources_[from];
  if (src.broken) return Landed::dropped;  // its frames can no longer be read in order (nor is it heard)
  if (landed_now) {
    heard_[from].store(coarse_now(), std::memory_order_relaxed);
    arrivals_.fetch_add(1, std::memory_order_relaxed);
  }
  std::uint32_t head = 0;
  if (buf.size() == kStubBytes) std::memcpy(&head, buf.data(), sizeof head);
  if (head == kStubMark) return receive_large_frame(from, c, buf) ? Landed::queued : Landed::held;
  if (src.frames.empty()) {
    // Nothing of its source before it: read it now, in place, and return
    // so that what it holds is delivered before the next poll (round-trip
    // latency).
    if (!process_frame(from, buf, r.read[i])) return Landed::held;  // the rest waits in its slot
    TROUPE_STAGE(frame_done);
    stats_.frames_received++;
    stats_.bytes_received += buf.size();
    return Landed::read;
  }
  // Read in its turn, from a buffer of its size (the slot keeps its 64
  // KiB), or from the slot's own if there is no memory for one (the slot
  // gets a new one when it is posted again).
  FrameBuffer keep;
  try {
    keep = take_frame_buffer(buf.size());
    keep->append(buf.data(), buf.size());
  } catch (const std::bad_alloc&) {
    keep.reset();
  }
  try {
    src.frames.emplace_back();  // room first: the frame is moved in only once it is there
  } catch (const std::bad_alloc&) {
    return Landed::held;
  }
  src.frames.back().buf = keep ? std::move(keep) : std::move(r.buf[i]);
  ++frames_pending_;
  stats_.frames_received++;
  stats_.bytes_received += src.frames.back().buf->size();
  return Landed::queued;
}

bool Engine::take_frames() {
  if (!receiving_) return false;
  if (posted_.size() < comms_.size()) {  // the first round, or a communicator joined
    try {
      posted_.resize(comms_.size());
    } catch (const std::bad_alloc&) {
      short_of_memory_.store(true, std::memory_order_relaxed);
      return false;
    }
  }
  bool did = false;
  // A round ends at the first frame read in place (below). It starts after the
  // communicator it ended at last time, so a busy one (a stream from the
  // nodes the job started with) cannot hold back another (nodes that joined).
  const std::size_t n_comms = comms_.size();
  const std::size_t first = first_comm_ < n_comms ? first_comm_ : 0;
  for (std::size_t k = 0; k < n_comms; ++k) {
    const std::size_t c = (first + k) % n_comms;
    auto& r = posted_[c];
    // A frame held for want of memory first: it landed before anything the
    // posted slots hold (it is in the slot before head).
    if (r.held) {
      const unsigned i = (r.head + kPostedReceives - 1) % kPostedReceives;
      const std::size_t was_read = r.read[i];
      const Landed got = take_landed(r, c, i, /*landed_now=*/false);
      if (got != Landed::held) {
        r.held = false;
        did = true;
        if (got == Landed::read) {
          first_comm_ = c + 1 < n_comms ? c + 1 : 0;
          return true;
        }
      } else {
        // Still no memory: this ring waits (MPI keeps what comes meanwhile).
        if (r.read[i] != was_read) {  // it moved: patience again
          r.held_since = 0;
          did = true;
        }
        ++stats_.receive_waits;
        if (still_patient(r.held_since)) continue;
        // A frame whose next envelope never finds memory: its source is
        // broken (the slot's frame dropped with the source's others), the
        // ring goes on.
        give_up_waiting(r.from[i]);
        r.held = false;
      }
    }
    // Slots taken last round first, in ring order. If MPI refuses one, or its
    // buffer cannot be had, it and the slots after it stay free (the order
    // must hold) until the next round; the posted ones are still read.
    try {
      while (r.posted < kPostedReceives && post_frame_recv(r, c)) {
      }
    } catch (const std::bad_alloc&) {
      short_of_memory_.store(true, std::memory_order_relaxed);
    }
    while (r.posted != 0) {  // at most kPostedReceives frames per round: none is posted again before the next
      const unsigned i = r.head;
      int flag = 0;
      MPI_Status st;
      if (checked(MPI_Test(&r.req[i], &flag, &st), "MPI_Test (frames)") != MPI_SUCCESS) {
        // A frame larger than kFrameLimit, from a peer that breaks the
        // protocol: the receive completed in error (MPICH raises that on
        // MPI_COMM_WORLD, whose handler is the application's): the slot is
        // posted again next round. A receive still pending after an error is
        // left to MPI, buffer and all: it may still take a frame.
        if (r.req[i] != MPI_REQUEST_NULL) break;
        r.head = (i + 1) % kPostedReceives;
        --r.posted;
        did = true;
        continue;
      }
      if (!flag) break;
      TROUPE_STAGE(frame_landed);
      // The slot is free: posted again next round, once this frame is read.
      r.head = (i + 1) % kPostedReceives;
      --r.posted;
      did = true;
      int count = 0;
      MPI_Get_count(&st, MPI_BYTE, &count);
      r.buf[i]->resize(static_cast<std::size_t>(std::max(count, 0)));  // within its capacity
      const auto& ranks = rank_node_[c];
      const NodeId from = st.MPI_SOURCE >= 0 && static_cast<std::size_t>(st.MPI_SOURCE) < ranks.size()
                              ? ranks[static_cast<std::size_t>(st.MPI_SOURCE)]
                              : kInvalidNode;
      r.from[i] = from;
      r.read[i] = 0;
      const Landed got = take_landed(r, c, i, /*landed_now=*/true);
      if (got == Landed::held) {
        r.held = true;  // the posted slots after it wait until it is read
        r.held_since = 0;
        ++stats_.receive_waits;
        still_patient(r.held_since);  // starts the clock, notes the shortage
        break;
      }
      if (got == Landed::read) {
        first_comm_ = c + 1 < n_comms ? c + 1 : 0;
        return true;
      }
    }
  }
  return did;
}

bool Engine::receive_large_frame(NodeId from, std::size_t c, const ByteBuffer& stub) {
  std::uint32_t zero = 1;
  std::uint64_t size = 0;
  std::memcpy(&zero, stub.data() + sizeof(std::uint32_t), sizeof zero);
  std::memcpy(&size, stub.data() + 2 * sizeof(std::uint32_t), sizeof size);
  if (zero != 0 || size <= kPostedFrame || size > kLargestFrame) {
    // Not one of ours: nothing was sent after it.
    std::fprintf(stderr, "troupe: node %u: malformed frame stub from node %u\n", self_, from);
    return true;
  }
  auto& src = *sources_[from];
  try {
    src.frames.emplace_back();  // room first
  } catch (const std::bad_alloc&) {
    return false;  // the stub waits in its slot
  }
  src.frames.back().announced = size;
  src.frames.back().comm = c;
  src.frames.back().unposted = true;
  ++frames_pending_;
  stats_.frames_received++;
  stats_.bytes_received += size;
  // MPI matches the source's large frames to their receives in the order
  // these are posted: none is posted before an earlier one is.
  if (src.unposted == 0 && post_large_frame(from, src.frames.back())) return true;
  if (src.broken) return true;
  ++src.unposted;
  // Its patience starts once it is the first of its source's frames.
  if (src.frames.size() > 1) src.frames.back().short_since = 0;
  return true;
}

bool Engine::post_large_frame(NodeId from, FrameRecv& f) {
  FrameBuffer large;
  try {
    large = take_frame_buffer(static_cast<std::size_t>(f.announced));
    large->resize(static_cast<std::size_t>(f.announced));
  } catch (const std::bad_alloc&) {
    // Posted in a later round (test_frame_recvs, once it is the source's
    // first): the frame waits in MPI, the source's later frames behind it.
    // Not for ever: a frame that finds no memory for memory_patience() may
    // never fit (below).
    if (still_patient(f.short_since)) {
      ++stats_.receive_waits;
      return false;
    }
    large.reset();
  }
  MPI_Request req = MPI_REQUEST_NULL;
  if (large && checked(MPI_Irecv(large->data(), static_cast<int>(f.announced), MPI_BYTE, peers_[from]->rank,
                                 kTagLargeFrame, comms_[f.comm], &req),
                       "MPI_Irecv (a large frame)") == MPI_SUCCESS) {
    f.req = req;
    f.buf = std::move(large);
    f.unposted = false;
    f.short_since = 0;
    f.posted_at = coarse_now();
    return true;
  }
  // The frame it announces can never be received in its place: what this node
  // sends after it could only be read out of order or into the wrong
  // receives. Nothing more from it is read (the failure detector's heartbeats
  // included, so the cluster comes to treat it as lost).
  std::fprintf(stderr,
               "troupe: node %u: cannot receive a frame of %llu bytes from node %u (no memory, or MPI refused); "
               "nothing more from that node is read\n",
               self_, static_cast<unsigned long long>(f.announced), from);
  break_source(from);  // (f with it)
  return false;
}

bool Engine::still_patient(std::int64_t& since) {
  short_of_memory_.store(true, std::memory_order_relaxed);
  const std::int64_t now = coarse_now();
  if (since == 0) since = now;
  return now - since < memory_patience().count();
}

void Engine::give_up_waiting(NodeId from) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(memory_patience()).count();
  std::fprintf(stderr,
               "troupe: node %u: a frame from node %u found no memory to be read for %lld ms; "
               "nothing more from that node is read\n",
               self_, from, static_cast<long long>(ms));
  break_source(from);
}

void Engine::break_source(NodeId from) {
  auto& src = *sources_[from];
  src.broken = true;
  src.undrained.reset();  // (still in the queue: abandoned when the node is lost)
  drop_queued_frames(src);
  broken_news_[from].store(true, std::memory_order_relaxed);
}

std::vector<NodeId> Engine::newly_broken() { return take_flags(broken_news_.get()); }

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
      auto& front = frames.front();
      if (front.unposted) {  // a large frame that found no memory for its receive
        if (!post_large_frame(from, front)) break;  // still none (or the source broke)
        --sources_[from]->unposted;
      }
      const bool was_pending = front.req != MPI_REQUEST_NULL;
      MPI_Status st;
      if (checked(MPI_Test(&front.req, &done, &st), "MPI_Test (a large frame)") != MPI_SUCCESS) {
        // Its status says nothing, and what follows it cannot be read in order.
        std::fprintf(stderr, "troupe: node %u: a large frame from node %u failed; nothing more from it is read\n",
                     self_, from);
        break_source(from);
        did = true;
        break;
      }
      if (!done) break;
      if (was_pending) {
        heard_[from].store(coarse_now(), std::memory_order_relaxed);  // news of its sender, as a frame landing
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        if (static_cast<std::uint64_t>(count) != front.announced) {
          std::fprintf(stderr, "troupe: node %u: a large frame from node %u has %d bytes, its stub announced %llu\n",
                       self_, from, count, static_cast<unsigned long long>(front.announced));
          front.buf->resize(static_cast<std::size_t>(std::max(count, 0)));
        }
      }
      // Read from a buffer of our own: reading may break the source, which
      // drops its queued frames.
      auto buf = std::move(front.buf);
      const std::size_t was_read = front.read;
      std::size_t at = was_read;
      const bool whole = process_frame(from, *buf, at);
      if (sources_[from]->broken) {  // its frames are gone (and counted)
        did = true;
        break;
      }
      if (whole || at != was_read) did = true;
      if (!whole) {  // no memory: the rest waits at the front
        auto& f = frames.front();
        f.buf = std::move(buf);
        if (at != was_read) f.short_since = 0;  // it moved: patience again
        f.read = at;
        ++stats_.receive_waits;
        if (!still_patient(f.short_since)) give_up_waiting(from);
        break;
      }
      frames.pop_front();
      --frames_pending_;
    }
  }
  return did;
}

bool Engine::process_frame(NodeId from, ByteBuffer& frame, std::size_t& at) {
  TROUPE_STAGE(frame_read);
  // Envelopes ready at once wait in arrived_ for the end of the frame (or of
  // what memory let us read of it), then go to the ready list before anything
  // queued behind them, on every way out.
  bool whole = true;
  try {
    whole = read_frame(from, frame, at);
  } catch (...) {
    handler_.on_frame_done();
    release_arrived();
    collect_ready(from);
    throw;
  }
  handler_.on_frame_done();
  release_arrived();
  collect_ready(from);
  return whole;
}

bool Engine::ready_room(std::size_t n) {
  if (ready_.capacity() - ready_.size() >= n) return true;
  try {
    ready_.reserve(std::max(ready_.size() + n, 2 * ready_.capacity()));
    return true;
  } catch (const std::bad_alloc&) {
    retry_ready_ = true;
    short_of_memory_.store(true, std::memory_order_relaxed);
    return false;
  }
}

void Engine::release_arrived() {
  if (arrived_.empty()) return;
  TROUPE_STAGE(ready_listed);
  std::lock_guard lk(ready_mu_);
  const std::size_t n = arrived_.size();
  if (ready_.capacity() - ready_.size() < n && !ready_room(n)) return;  // they wait in arrived_ (retry_ready)
  for (auto& in : arrived_) ready_.push_back(std::move(in));
  ready_count_.fetch_add(n, std::memory_order_release);
  arrived_.clear();
}

void Engine::retry_ready() {
  retry_ready_ = false;
  release_arrived();
  if (retry_ready_) return;
  for (NodeId from = 0; from < sources_.size(); ++from)
    if (sources_[from]) collect_ready(from);
}

std::unique_ptr<Inbound> Engine::call_handler(NodeId from, Envelope& env) {
  std::unique_ptr<Inbound> inbound;
  try {
    inbound = handler_.on_envelope(from, env);
  } catch (const std::bad_alloc&) {
    throw;  // the handler kept nothing: the envelope is read again later
  } catch (const std::exception& e) {
    std::fprintf(stderr, "troupe: node %u: dropping an envelope from node %u: %s\n", self_, from, e.what());
  } catch (...) {
    std::fprintf(stderr, "troupe: node %u: dropping an envelope from node %u\n", self_, from);
  }
  stats_.envelopes_received++;
  return inbound;
}

bool Engine::read_frame(NodeId from, ByteBuffer& frame, std::size_t& at) {
  Envelope env;  // reused: their vectors keep their room
  EnvelopeFault fault;
  while (at < frame.size()) {
    std::uint32_t len = 0;
    if (frame.size() - at < kFrameSlot) break;  // our own framing is intact unless MPI broke it
    std::memcpy(&len, frame.data() + at, sizeof len);
    if (len > frame.size() - at - kFrameSlot) {
      // The entry runs past the end of the frame (a frame shorter than its
      // sender made it). If what is there starts an envelope, its sender
      // hears why (DecodeError); the rest of the frame is dropped.
      std::fprintf(stderr, "troupe: node %u: malformed frame from node %u\n", self_, from);
      try {
        const std::size_t present = frame.size() - at - kFrameSlot;
        if (parse_envelope(frame.data() + at + kFrameSlot, present, env, fault) == 0 && fault.have_prefix) {
          fault.frame_lost = true;
          (void)read_entry(from, present, 0, env, fault);
        }
      } catch (const std::bad_alloc&) {
        short_of_memory_.store(true, std::memory_order_relaxed);
        return false;  // read again, from this entry, in a later round
      }
      break;
    }
    try {
      const std::byte* entry = frame.data() + at + kFrameSlot;
      const std::size_t n = parse_envelope(entry, len, env, fault);
      const Source& src = *sources_[from];
      if (n != 0 && n == len && env.segment_sizes.empty() && src.queue.empty() && !src.undrained) {
        // The common case, in line (round-trip latency): nothing before it,
        // no blocks: ready at once (read_entry's last case, room first).
        if (arrived_.size() == arrived_.capacity()) arrived_.reserve(2 * arrived_.size() + 16);
        env.source = from;  // MPI's word, not the sender's
        auto in = call_handler(from, env);
        if (in && !in->segments.empty()) {  // the handler got the (no) blocks wrong: dropped
          std::fprintf(stderr, "troupe: node %u: segment plan mismatch for an envelope from node %u\n", self_, from);
          in.reset();
        }
        if (in) {
          arrived_.push_back(std::move(in));
          partial_.fetch_add(1, std::memory_order_relaxed);
        }
      } else if (!read_entry(from, len, n, env, fault)) {
        break;
      }
    } catch (const std::bad_alloc&) {
      // No memory for this envelope: nothing of it was kept. It is read again,
      // whole, in a later round (the progress thread naps meanwhile).
      short_of_memory_.store(true, std::memory_order_relaxed);
      return false;
    }
    at += kFrameSlot + len;
  }
  at = frame.size();
  return true;
}

bool Engine::read_entry(NodeId from, std::size_t len, std::size_t n, Envelope& env, EnvelopeFault& fault) {
  auto& src = *sources_[from];
  if (n != 0 && n != len) {
    n = 0;
    fault.what = "troupe: envelope length disagrees with its frame entry";
    fault.frame_lost = true;
  }
  // Room first, below: whatever the envelope needs is allocated (the
  // handler's record included) before anything is kept. Nothing after the
  // last allocation throws; its blocks' receives have their records' room.
  auto room_for_receives = [&](const std::vector<std::uint64_t>& sizes, const std::vector<std::uint8_t>& pieced) {
    std::size_t chunk_count = 0;
    for (std::size_t i = 0; i < sizes.size(); ++i) chunk_count += chunks(sizes[i], i < pieced.size() && pieced[i] != 0);
    seg_reqs_.reserve(seg_reqs_.size() + chunk_count);
    seg_meta_.reserve(seg_meta_.size() + chunk_count);
  };
  if (n == 0) {
    // Reported at delivery (in order, outside the engine lock: the handler
    // may answer, and answering sends). Another version's envelope is
    // skipped, its blocks drained.
    handler_.on_unreadable(from);
    auto report = std::make_shared<Delivery>();
    report->inbound = std::make_unique<FaultReport>(handler_, from, fault);
    std::shared_ptr<Delivery> d;
    std::vector<InSegment> dests;
    bool drained = false;
    if (!fault.frame_lost) {
      d = std::make_shared<Delivery>();
      dests.reserve(fault.segment_sizes.size());
      drained = drain_into_scratch(*d, fault.segment_sizes, fault.segment_pieced, dests);
      if (!drained) {
        std::uint64_t total = 0;
        for (auto size : fault.segment_sizes) total += size;
        if (total <= kWaitForMemoryUpTo) throw std::bad_alloc();  // nothing kept yet: read again later
      }
      if (drained) room_for_receives(fault.segment_sizes, fault.segment_pieced);
    }
    src.queue.emplace_back();
    if (d) {
      try {
        src.queue.emplace_back();
      } catch (...) {
        src.queue.pop_back();
        throw;
      }
    }
    // Kept from here on.
    src.queue[src.queue.size() - (d ? 2 : 1)] = std::move(report);
    partial_.fetch_add(1, std::memory_order_relaxed);
    if (!d) {
      // Unreadable, and its blocks cannot be drained. If its prefix says it
      // has some, they would land in the receives of the source's next
      // envelopes, which would then run on the wrong bytes: nothing more
      // from that source is read, and the cluster comes to count it lost
      // (its asks fail with ConnectionLost). Without blocks (or without a
      // readable prefix: not troupe data), just this entry is skipped.
      if (!fault.have_prefix || fault.segment_count == 0) return true;
      std::fprintf(stderr,
                   "troupe: node %u: an unreadable envelope from node %u declares %u blocks that cannot be told "
                   "apart from the next ones; nothing more from that node is read\n",
                   self_, from, static_cast<unsigned>(fault.segment_count));
      break_source(from);
      return false;
    }
    if (!drained) {
      stop_reading(from, std::move(d));
      return false;
    }
    const bool posted = post_segment_recvs(from, d, std::move(dests));
    src.queue.back() = std::move(d);
    partial_.fetch_add(1, std::memory_order_relaxed);
    return posted;  // not posted: the source is broken, nothing more of it is read
  }
  env.source = from;  // MPI's word, not the sender's
  const std::size_t nseg = env.segment_sizes.size();
  if (src.undrained) {
    // Read before, and queued; its blocks, which nobody takes, found no
    // memory to be drained into. Drained now, if there is memory.
    std::vector<InSegment> dests;
    dests.reserve(nseg);
    room_for_receives(env.segment_sizes, env.segment_pieced);
    if (!drain_into_scratch(*src.undrained, env.segment_sizes, env.segment_pieced, dests)) throw std::bad_alloc();
    auto d = std::move(src.undrained);
    const bool posted = post_segment_recvs(from, d, std::move(dests));
    --d->pending;  // the mark that held it back (its chunks count from here)
    return posted;
  }
  // Queued behind its source's earlier envelopes, or waiting for its blocks
  // (read_frame reads the others, ready at once, in line): it gets a delivery
  // record.
  auto d = std::make_shared<Delivery>();
  std::vector<InSegment> dests;
  dests.reserve(nseg);
  room_for_receives(env.segment_sizes, env.segment_pieced);
  src.queue.emplace_back();  // its place
  std::unique_ptr<Inbound> inbound;
  try {
    inbound = call_handler(from, env);
  } catch (const std::bad_alloc&) {
    src.queue.pop_back();
    throw;  // the handler kept nothing either: read again later
  }
  if (inbound && !inbound->segments.empty() && inbound->segments.size() != nseg) {
    // The handler got the blocks wrong: nobody takes them (drained below).
    std::fprintf(stderr, "troupe: node %u: segment plan mismatch for an envelope from node %u\n", self_, from);
    inbound.reset();
  }
  if (!inbound && nseg == 0) {  // nothing to deliver, nothing to drain (joined a batch, say)
    src.queue.pop_back();
    return true;
  }
  d->inbound = std::move(inbound);
  if (nseg != 0 && d->inbound && d->inbound->segments.size() == nseg) {
    dests.assign(d->inbound->segments.begin(), d->inbound->segments.end());  // room made above
    for (std::size_t i = 0; i < nseg; ++i) dests[i].pieced = env.segment_pieced[i] != 0;
  } else if (nseg != 0 && !drain_into_scratch(*d, env.segment_sizes, env.segment_pieced, dests)) {
    // Nobody takes the blocks (a refusal, say), and there is no memory to
    // drain them into.
    if (env.segment_bytes > kWaitForMemoryUpTo) {  // it may never fit
      stop_reading(from, std::move(d));  // its refusal, if any, still reaches the asker
      return false;
    }
    // Kept, and held back from delivery by a mark, until its blocks are
    // drained: the frame waits at this envelope (the source's later blocks
    // must not take their place), and reading it again drains them (above).
    d->pending = 1;
    src.undrained = d;
    src.queue.back() = std::move(d);
    partial_.fetch_add(1, std::memory_order_relaxed);
    throw std::bad_alloc();
  }
  const bool posted = post_segment_recvs(from, d, std::move(dests));
  src.queue.back() = std::move(d);
  partial_.fetch_add(1, std::memory_order_relaxed);
  return posted;  // not posted: the source is broken, nothing more of it is read
}

bool Engine::drain_into_scratch(Delivery& d, const std::vector<std::uint64_t>& sizes,
                                const std::vector<std::uint8_t>& pieced, std::vector<InSegment>& dests) {
  try {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      d.scratch.emplace_back();
      d.scratch.back().resize(sizes[i]);
      dests.push_back({d.scratch.back().data(), sizes[i], i < pieced.size() && pieced[i] != 0});
    }
    return true;
  } catch (const std::bad_alloc&) {
    d.scratch.clear();
    return false;
  }
}

void Engine::stop_reading(NodeId from, std::shared_ptr<Delivery> d) {
  // The blocks it declares can be received nowhere, and the blocks this node
  // sends after them would land in the wrong receives: nothing more from it
  // is read (as for a frame that cannot be received), so the cluster comes to
  // treat it as lost. What was read of it so far is still delivered, in order.
  std::fprintf(stderr,
               "troupe: node %u: no memory to receive (or drain) the blocks of an envelope from node %u; "
               "the rest of its frame is dropped and nothing more from that node is read\n",
               self_, from);
  auto& src = *sources_[from];
  src.queue.back() = std::move(d);  // its place; no receive posted: ready in its turn
  partial_.fetch_add(1, std::memory_order_relaxed);
  break_source(from);  // and the frames that came after this one
}

bool Engine::post_segment_recvs(NodeId from, const std::shared_ptr<Delivery>& d, std::vector<InSegment> dests) {
  // Room first: once a receive is posted, recording it must not fail, or the
  // block's memory could be freed (or given to the next vector) under MPI.
  std::size_t n = 0;
  for (const auto& seg : dests) n += chunks(seg.size, seg.pieced);
  seg_reqs_.reserve(seg_reqs_.size() + n);
  seg_meta_.reserve(seg_meta_.size() + n);
  for (auto& seg : dests) {
    auto* p = static_cast<std::byte*>(seg.data);
    std::size_t left = seg.size;
    const std::size_t step = chunk_size(seg.pieced);
    for (std::size_t c = 0, n = chunks(seg.size, seg.pieced); c < n; ++c) {
      const std::size_t len = std::min(left, step);
      MPI_Request req = MPI_REQUEST_NULL;
      d->pending++;
      if (checked(MPI_Irecv(p, static_cast<int>(len), MPI_BYTE, peers_[from]->rank, kTagSegment, peer_comm(from),
                            &req),
                  "MPI_Irecv") != MPI_SUCCESS) {
        // MPI refused it: this delivery never completes (its block would be
        // missing a piece; it is abandoned when the node is declared lost),
        // and the source's later blocks would land in the wrong receives, so
        // no more of them is posted and nothing more is read from it.
        break_source(from);
        return false;
      }
      seg_reqs_.push_back(req);
      seg_meta_.push_back(SegRecv{from, d, p, len});
      stats_.bytes_received += len;
      p += len;
      left -= len;
    }
  }
  return true;
}

bool Engine::test_segment_recvs() {
  if (seg_reqs_.empty()) return false;
  int outcount = 0;
  try {
    test_idx_.resize(seg_reqs_.size());
    seg_status_.resize(seg_reqs_.size());
  } catch (const std::bad_alloc&) {
    short_of_memory_.store(true, std::memory_order_relaxed);
    return false;
  }
  auto& idx = test_idx_;
  // MPI_ERR_IN_STATUS: a chunk came longer than its receive (MPI_ERR_TRUNCATE
  // in its status), which is a sender's fault, reported below with its delivery.
  const int rc = MPI_Testsome(static_cast<int>(seg_reqs_.size()), seg_reqs_.data(), &outcount, idx.data(),
                              seg_status_.data());
  if (rc != MPI_ERR_IN_STATUS) checked(rc, "MPI_Testsome");
  if (outcount <= 0) return false;
  arrivals_.fetch_add(static_cast<std::uint64_t>(outcount), std::memory_order_relaxed);
  const auto now = coarse_now();
  for (int k = 0; k < outcount; ++k) {
    auto& m = seg_meta_[static_cast<std::size_t>(idx[static_cast<std::size_t>(k)])];
    // Its sender lives: a block from it is in. Its heartbeats may wait behind
    // its blocks (MPI sends a pair's messages in order: over TCP a window of
    // 64 MiB vectors takes longer than the heartbeat timeout), and a node
    // sending that much must not be called lost for it.
    if (!sources_[m.from]->broken) heard_[m.from].store(now, std::memory_order_relaxed);  // (as take_landed)
    const MPI_Status& st = seg_status_[static_cast<std::size_t>(k)];
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    int error_class = MPI_SUCCESS;
    if (rc == MPI_ERR_IN_STATUS && st.MPI_ERROR != MPI_SUCCESS) {
      MPI_Error_class(st.MPI_ERROR, &error_class);
      if (error_class != MPI_ERR_TRUNCATE) checked(st.MPI_ERROR, "a block's receive");
    }
    const bool failed = error_class != MPI_SUCCESS && error_class != MPI_ERR_TRUNCATE;
    const bool longer = error_class == MPI_ERR_TRUNCATE;
    const bool shorter = !longer && !failed && count >= 0 && static_cast<std::size_t>(count) < m.len;
    if (failed) {
      if (m.owner->inbound && !m.owner->inbound->segment_fault.any)
        m.owner->inbound->segment_fault = {true, false, true, m.len, 0};
    } else if (longer || shorter) {
      // A sender that broke the protocol (not this code). What arrived is
      // never delivered: its delivery is rejected (a DecodeError for its
      // asker), and the rest of a short chunk reads as zeros meanwhile, never
      // as what the memory held before (a kept vector).
      if (shorter) std::memset(m.data + count, 0, m.len - static_cast<std::size_t>(count));
      if (m.owner->inbound && !m.owner->inbound->segment_fault.any)
        m.owner->inbound->segment_fault = {true, longer, false, m.len,
                                           shorter ? static_cast<std::size_t>(count) : m.len};
      if (longer) {
        std::fprintf(stderr, "troupe: node %u: a block from node %u was longer than the %zu bytes declared\n", self_,
                     m.from, m.len);
      } else {
        std::fprintf(stderr, "troupe: node %u: a block from node %u was %zu bytes short of the %zu declared\n", self_,
                     m.from, m.len - static_cast<std::size_t>(count), m.len);
      }
    }
    // What it completes goes to the ready list now (nothing is allocated
    // here: a delivery's last chunk must not be lost to a failed allocation).
    if (--m.owner->pending == 0) collect_ready(m.from);
  }
  compact(seg_reqs_, seg_meta_, [&](std::size_t r) { return seg_reqs_[r] != MPI_REQUEST_NULL; });
  return true;
}

void Engine::collect_ready(NodeId from) {
  auto& q = sources_[from]->queue;
  if (q.empty() || q.front()->pending != 0) return;
  if (!arrived_.empty()) {  // those found no room in the ready list: they go first
    retry_ready_ = true;
    return;
  }
  std::size_t n = 0;
  for (const auto& d : q) {
    if (d->pending != 0) break;
    ++n;
  }
  std::lock_guard lk(ready_mu_);
  if (!ready_room(n)) return;  // they wait at the front of their queue (retry_ready)
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
    TROUPE_STAGE(delivering);
    // A reply's continuation runs here: blocking on another reply would wait
    // for the delivery this thread is making (deliver_mu_ is held).
    const NoBlockingHere no_blocking("a thread delivering messages (a continuation of a remote reply)");
    for (auto& in : batch) {
      if (in) {
        try {
          if (in->segment_fault.any) {
            in->reject(segment_fault_error(in->segment_fault));
          } else {
            in->deliver();
          }
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

}  // namespace troupe::detail
