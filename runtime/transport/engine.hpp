// Engine: the MPI progress engine of one rank, the only code in troupe that
// calls MPI point-to-point. Nonblocking operations only: a dead peer can leave a
// request pending forever, but it never blocks the engine.
//
// Threads: any thread may send() (small envelopes are copied into their
// destination's open frame under a spin lock; frames and large envelopes go
// through a lock-free queue) and any thread may call
// progress(); one holds the engine at a time (try-lock), the others return at
// once. A progress thread polls with back-off; threads blocked in Future::get()
// and actors finishing a turn progress too, which keeps round trips short.
//
// Order: per ordered pair of nodes, frames are handed to MPI in send order on
// one tag and communicator (MPI does not overtake) and land in receives posted
// from any source, taken in the order they were posted; a large frame is
// announced there by a stub and travels on a tag of its own, received in the
// stub's place; segments follow on a third tag in the same order. The receiver reads each source's
// frames in that order and delivers in arrival order per source even when an
// earlier envelope still waits for its segments.
#pragma once

#include <mpi.h>

#include <array>
#include <atomic>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "troupe/detail/mpsc_queue.hpp"
#include "troupe/fwd.hpp"
#include "troupe/wire/archive.hpp"
#include "troupe/wire/buffer.hpp"
#include "core/memory_patience.hpp"
#include "transport/stage_pool.hpp"
#include "wire/envelope.hpp"

namespace troupe::detail {

/// Frames are sequences of [u32 length][envelope]: the engine's own framing,
/// so an envelope that cannot be read is skipped without losing its neighbours.
inline constexpr std::size_t kFrameSlot = 4;

/// One encoded envelope on its way out, or a frame of several (composed by
/// Engine::send from drafts). Its bytes are [u32 length][envelope] entries; a
/// lone envelope starts with the kFrameSlot bytes the engine fills in.
struct OutEnvelope : MpscNode {
  OutEnvelope() { bytes.extend(kFrameSlot); }
  struct Empty {};
  explicit OutEnvelope(Empty) {}
  NodeId dest = 0;
  bool work = true;                    // application traffic (termination detection counts it)
  bool kind_tell = false;              // nobody waits for it: may coalesce with what follows
  bool pooled = false;                 // a composed frame: its storage goes back to a pool
  std::uint32_t count = 1;             // envelopes in bytes
  ByteBuffer bytes;                    // the envelope(s)
  std::vector<OutSegment> segments;    // large blocks, sent after it without copies, in envelope order
  std::vector<std::shared_ptr<void>> keep;  // owns what the segments point into
};

/// Composed frames (and their buffers) are reused, not freed: see FrameRecycle.
struct EnvelopeRecycle {
  void operator()(OutEnvelope* e) const noexcept;
};
using OutFrame = std::unique_ptr<OutEnvelope, EnvelopeRecycle>;

/// An envelope being written: thread-local storage reused from message to
/// message, so writing one allocates nothing. Engine::send copies small ones
/// into the destination's open frame.
struct DraftRelease {
  void operator()(OutEnvelope* e) const noexcept;
};
using Draft = std::unique_ptr<OutEnvelope, DraftRelease>;
/// An empty draft (the frame slot only) addressed to dest.
Draft take_draft(NodeId dest);

/// A lock for the few instructions of appending to an open frame. Spins a
/// little, then yields (a preempted holder on an oversubscribed core).
class SpinLock {
 public:
  void lock() noexcept {
    for (unsigned spins = 0; flag_.exchange(true, std::memory_order_acquire); ++spins) {
      while (flag_.load(std::memory_order_relaxed)) {
        if (++spins > 64) std::this_thread::yield();
      }
    }
  }
  bool try_lock() noexcept { return !flag_.load(std::memory_order_relaxed) && !flag_.exchange(true, std::memory_order_acquire); }
  void unlock() noexcept { flag_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> flag_{false};
};

/// Frame buffers go back to a small process-wide pool, not to the allocator:
/// freeing a 64 KiB block per frame makes glibc consolidate its free lists
/// every time (measured: ~8 % of a small-message stream on each side).
struct FrameRecycle {
  void operator()(ByteBuffer* b) const noexcept;
};
using FrameBuffer = std::unique_ptr<ByteBuffer, FrameRecycle>;
/// An empty buffer with room for at least `size` bytes.
FrameBuffer take_frame_buffer(std::size_t size);

/// What the handler makes of one received envelope.
class Inbound {
 public:
  virtual ~Inbound() = default;
  /// Where the envelope's segments go, one per declared segment, in order.
  std::vector<InSegment> segments;
  /// Runs once the segments arrived, in arrival order per source, outside the
  /// engine lock (never concurrently with another delivery).
  virtual void deliver() = 0;
  /// Its source was lost before it could be delivered (outside the engine lock):
  /// whoever waits for it must learn so.
  virtual void abandon() noexcept {}
  /// A segment arrived shorter or longer than declared (a sender that breaks
  /// the protocol): runs instead of deliver(), with the DecodeError for
  /// whoever waits for it. What its blocks hold must not be used; a delivery
  /// that counts as work must still be counted, and an asker must still be
  /// answered (no default: one that did nothing would leave it waiting).
  virtual void reject(std::exception_ptr why) = 0;
  /// Set by the engine (under its lock) when a segment came with another size
  /// than declared: the first such chunk.
  struct SegmentFault {
    bool any = false;
    bool longer = false;       // more than declared arrived (and was cut off by MPI)
    bool failed = false;       // MPI reported another error for its receive
    std::size_t declared = 0;  // the chunk's declared bytes
    std::size_t got = 0;       // bytes that arrived (if shorter)
  } segment_fault;
};

class InboundHandler {
 public:
  virtual ~InboundHandler() = default;
  /// Called under the engine lock, in arrival order. Returns what to deliver,
  /// or null (the engine then drains the envelope's segments itself). If it
  /// throws std::bad_alloc it must have kept nothing: the engine calls it
  /// again with the same envelope in a later round (frames wait meanwhile).
  /// Any other exception drops the envelope.
  virtual std::unique_ptr<Inbound> on_envelope(NodeId from, Envelope& env) = 0;
  /// An envelope could not be read (bad bytes, another protocol version).
  virtual void on_bad_envelope(NodeId from, const EnvelopeFault& fault) = 0;
  /// Called under the engine lock when an envelope of `from` cannot be read,
  /// before the envelopes after it: nothing after it may join what on_envelope
  /// made of those before it (its report is delivered between them).
  virtual void on_unreadable(NodeId /*from*/) noexcept {}
  /// The frame whose envelopes on_envelope() just saw is done (engine lock
  /// held); none of its envelopes has been delivered yet.
  virtual void on_frame_done() noexcept {}
};

struct EngineStats {
  std::uint64_t frames_sent = 0, envelopes_sent = 0, frames_received = 0, envelopes_received = 0;
  std::uint64_t bytes_sent = 0, bytes_received = 0;
  std::uint64_t pieces_staged = 0;  // pieces of blocks copied into staging slots and sent from there
  std::uint64_t idle_naps = 0;    // times the progress thread slept for want of work
  std::uint64_t idle_nap_us = 0;  // the time those naps asked for, in microseconds
  std::uint64_t hot_polls = 0;    // idle rounds the progress thread polled without giving up the core
  std::uint64_t helper_rests = 0;          // times the progress thread rested because a helper drove
  std::uint64_t helper_rest_us = 0;        // the time those rests asked for, in microseconds
  std::uint64_t helper_rest_longest_us = 0;  // the longest of them
  std::uint64_t helper_rests_cut = 0;      // rests (of any kind) that ended early: woken, or spuriously
  std::uint64_t receive_waits = 0;  // times a received frame waited for memory to be read (or received)
};

class Engine {
 public:
  /// comm is duplicated; node n is rank n of it.
  Engine(MPI_Comm comm, InboundHandler& handler);
  /// For a node that joined later: comm (duplicated) holds every live node;
  /// node_of_rank maps its ranks to node ids; node ids below `total` that it
  /// does not hold are lost. capacity: the most nodes the job may hold (0:
  /// total and kSpareNodes more).
  Engine(MPI_Comm comm, InboundHandler& handler, NodeId self, std::size_t total,
         const std::vector<NodeId>& node_of_rank, std::size_t capacity = 0);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  NodeId self() const noexcept { return self_; }
  std::size_t nodes() const noexcept { return count_.load(std::memory_order_acquire); }
  /// The communicator the engine started with (a duplicate).
  MPI_Comm comm() const noexcept { return comms_.front(); }
  /// The communicator of the index-th group of nodes (0: the start; then one
  /// per add_nodes); MPI_COMM_NULL past the last. For tests and diagnostics.
  MPI_Comm comm_at(std::size_t index) {
    std::lock_guard lk(mu_);
    return index < comms_.size() ? comms_[index] : MPI_COMM_NULL;
  }
  /// Adding nodes, step one: a duplicate of the communicator they joined
  /// through, for the engine's traffic with them. Collective over comm, and
  /// nothing changes in the engine yet.
  static MPI_Comm duplicate_for_nodes(MPI_Comm comm);
  /// Step two: new nodes joined through `dup` (from duplicate_for_nodes; the
  /// engine owns it now): node_of_rank maps its ranks to node ids; ids from
  /// nodes() to total-1 are the new ones. Traffic between older nodes stays on
  /// their communicator, so per pair order is kept. Local: what was sent to
  /// the new ids before this (the cluster layer counts them alive a moment
  /// earlier) was kept, and leaves now, in order. Throws (std::bad_alloc, or
  /// if total exceeds the capacity) with nothing changed; after reserve_join
  /// for as many, it cannot fail.
  void add_nodes(MPI_Comm dup, std::vector<NodeId> node_of_rank, std::size_t total);
  /// Room for the next add_nodes of up to `total` nodes, made before the
  /// cluster layer counts the new nodes alive: then the engine's step cannot
  /// fail, and what is sent to them meanwhile never waits for a join that does
  /// not come. Throws as add_nodes does, nothing changed; may be called again.
  void reserve_join(std::size_t total);
  /// Ends the engine's use of MPI, before the runtime lets go of MPI (its own
  /// MPI_Finalize, or an application's that adopted it): waits for any thread
  /// inside an MPI call of the engine, cancels the posted receives, and from
  /// then on no thread calls MPI through the engine. Progress, sends, flushes
  /// and probes do nothing after it; what was queued to send stays queued.
  /// Envelopes read and complete are delivered; those still waiting for
  /// their blocks (or behind such) are abandoned (Inbound::abandon).
  void shut();
  /// Frees the communicators add_nodes() (and a joiner's start) duplicated,
  /// which MPI_Finalize would otherwise wait on (their processes stay
  /// connected), once shut() has stopped traffic and no send or block receive
  /// is pending. The first communicator of a node that did not join later is
  /// never freed: a peer that has not finished yet may still have frames in
  /// flight to it, and MPI would hand them to whichever communicator next gets
  /// its context id (an application that adopted MPI, or the next Runtime).
  void release_joined_comms();
  /// True in a process that add_nodes() started.
  bool joined() const noexcept { return joined_start_; }
  /// Room for nodes that join later.
  static constexpr std::size_t kSpareNodes = 256;
  /// Each node's rank in MPI_COMM_WORLD (the launcher knows ranks by it).
  std::vector<int> world_ranks() const;

  /// Queues an envelope (takes ownership). Thread-safe, never blocks.
  /// Inside an actor, it leaves when the actor's turn ends. Elsewhere, urgent
  /// envelopes (asks, replies, control) are handed to MPI at once if the
  /// engine is free; others coalesce with what follows them, leaving once
  /// 16 KiB are queued or when whoever drives the engine next comes by.
  void send(OutEnvelope* env, bool urgent = true);
  /// The same for a draft. A small one (the common case) is copied into its
  /// destination's open frame, which leaves whole: when something urgent joins
  /// it, when it holds kCloseAt bytes or a large block, or when whoever drives the
  /// engine next comes by. No allocation, one copy, no queue node per message.
  void send(Draft draft, bool urgent);
  /// Drafts up to this size are copied into open frames; larger ones leave alone.
  static constexpr std::size_t kSmallEnvelope = 8 * 1024;
  /// A small tell written straight into dest's open frame, under its lock:
  /// `write(ByteBuffer&)` appends one envelope and must do nothing else (no
  /// sending, no user code). No draft, no copy: for tells of plain numbers.
  template <class Write>
  void send_in_place(NodeId dest, Write&& write) {
    if (dest >= peers_.size()) return;  // nobody there, ever (a node being added: its frame waits, open)
    bool closed = false;
    {
      std::lock_guard lk(open_[dest].mu);
      OutEnvelope* f = open_frame(dest);
      const std::size_t start = f->bytes.size();
      try {
        f->bytes.extend(kFrameSlot);
        write(f->bytes);
      } catch (...) {
        f->bytes.resize(start);  // the frame stays as it was
        throw;
      }
      const auto len = static_cast<std::uint32_t>(f->bytes.size() - start - kFrameSlot);
      assert(len + kFrameSlot <= kSmallEnvelope && "in-place envelopes are small (the frame size bound rests on it)");
      std::memcpy(f->bytes.data() + start, &len, sizeof len);
      f->count++;
      if (f->bytes.size() >= kCloseAt) {
        close_open(dest);
        closed = true;
      }
    }
    after_send(closed);
  }
  /// An open frame leaves once it holds this much: as large as it can be while
  /// one more small envelope still keeps it within kFrameLimit (56 KiB frames
  /// carried 1.2-1.6x the tells per second of 16 KiB ones, both transports).
  static constexpr std::size_t kCloseAt = 56 * 1024;
  /// Hands queued envelopes to MPI now if the engine is free (no receiving).
  void flush_sends();
  /// Does whatever MPI work is ready. False if another thread holds the engine
  /// or nothing happened. Thread-safe.
  bool progress();
  /// Hands queued envelopes to MPI now if the engine is free.
  void flush();

  /// Cancels the receives posted for frames: no frame is read after it. Before
  /// the engine's communicators are freed or MPI is finalised (the destructor
  /// does it too, if MPI is still up).
  void stop_receiving();
  /// Stops all traffic with a lost node: its queued envelopes are dropped, its
  /// requests abandoned (never waited on), what it sends later is ignored.
  /// Memory short: it waits for some rather than leave anything half done.
  void mark_lost(NodeId n);
  bool alive(NodeId n) const;
  /// When something last arrived from n (failure detection).
  std::chrono::steady_clock::time_point last_heard(NodeId n) const;
  /// Evidence checked before declaring n lost: whether something of n's is
  /// waiting to be read, a frame or a stub MPI holds (MPI_Iprobe; we were the
  /// slow one), a frame of its that landed and waits for memory to be read, or
  /// its first queued frame, in or still arriving. If so, n
  /// counts as heard now. A large frame that keeps arriving for longer than
  /// `patience` plus a microsecond per byte (1 MB/s) is no evidence: a sender
  /// that died in its middle leaves its receive pending for ever. Nor are
  /// blocks, or frames queued behind the first: those wait behind it.
  bool heard_pending(NodeId n, std::chrono::milliseconds patience);

  // A node declared lost stays lost. If it was only silent (stopped, or
  // starved of CPU) and sends again, its frames are dropped, and it is told,
  // on a tag of its own that nothing else uses, so that it stops: the news of
  // its loss never reaches it the usual way (nothing is sent to a lost node).
  /// Lost nodes whose frames were dropped since the last call.
  std::vector<NodeId> lost_but_heard();
  /// Nodes whose messages can no longer be read in order (break_source), or
  /// sent in order (MPI refused a send to them), since the last call: the
  /// cluster declares them lost.
  std::vector<NodeId> newly_broken();
  /// Tells lost node n that it was declared lost (kTagExpel). Its request is
  /// kept until it completes (or the engine goes).
  void send_expel(NodeId n);
  /// True once a node told this one that it was declared lost. Called by the
  /// progress thread's tick; keeps a receive posted on each communicator.
  bool expel_received();

  /// Blocks to n travel through the staging pool (stage_pool.hpp); the sender
  /// marks such blocks in their envelope (kSegmentPieced). Thread-safe.
  void set_stage_blocks(NodeId n, bool on) {
    if (n < peers_.size()) peers_[n]->stage.store(on, std::memory_order_relaxed);
  }
  bool stages_blocks(NodeId n) const noexcept {
    return n < peers_.size() && peers_[n]->stage.load(std::memory_order_relaxed);
  }
  /// n runs on this host and reads our blocks page by page from our memory:
  /// blocks to it are gathered onto huge pages first (prepare_sent_memory).
  /// Thread-safe.
  void set_gather_blocks(NodeId n, bool on) {
    if (n < peers_.size()) peers_[n]->gather.store(on, std::memory_order_relaxed);
  }
  bool gathers_blocks(NodeId n) const noexcept {
    return n < peers_.size() && peers_[n]->gather.load(std::memory_order_relaxed);
  }
  /// Nothing waits to be sent or delivered locally (in-flight sends may remain).
  bool quiet() const;
  /// Some send has not completed yet (or not even started).
  bool sends_pending();
  EngineStats stats() const;

  /// Runs progress() on a thread of its own, backing off to sleeps when idle.
  /// tick() runs on it about every tick_period (heartbeats live there).
  /// on_activity() runs when it finds work while nobody else drives the engine
  /// (the cluster layer then moves polling onto the scheduler's workers).
  void start_progress_thread(std::function<void()> tick, std::chrono::microseconds tick_period,
                             std::function<void()> on_activity = nullptr);
  void stop_progress_thread();
  /// Wakes the progress thread out of its back-off sleep.
  void wake();
  /// A thread blocked on a future drives the engine itself meanwhile; the
  /// progress thread then rests instead of competing for the core.
  void helper_enter() noexcept { helpers_.fetch_add(1, std::memory_order_acq_rel); }
  void helper_leave() noexcept { helpers_.fetch_sub(1, std::memory_order_acq_rel); }
  /// helper_leave() for a helper that stops driving for a while (a poll task
  /// whose traffic went quiet, a waiter about to sleep): the last one wakes the
  /// progress thread, which may be resting up to kLongestRest meanwhile.
  /// (Either it sees the progress thread marked asleep and wakes it, or the
  /// progress thread, having marked itself asleep, sees no helper left and
  /// does not rest: seq_cst on both sides.)
  void helper_stop() {
    if (helpers_.fetch_sub(1, std::memory_order_seq_cst) == 1 && sleeping_.load(std::memory_order_seq_cst)) wake();
  }
  /// progress() for a helper: it also shows the progress thread that a helper
  /// is driving, so that one stays out of the way (two threads polling on a
  /// busy core starve whichever does the work: measured on large transfers).
  bool helper_progress() {
    helper_rounds_.store(helper_rounds_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return progress();
  }

 private:
  /// A block still to be handed to MPI, after the ones before it to the same peer.
  struct PendingBlock {
    std::shared_ptr<OutEnvelope> owner;  // the envelope whose arguments hold the block
    const std::byte* data;               // what is left of it
    std::size_t left;
    bool staged;  // travels in kPiece pieces, copied through the staging pool
  };
  /// Blocks waiting for MPI, in order: a vector read from `head`, so that
  /// room for a frame's blocks is made before the frame leaves (make_room).
  struct BlockQueue {
    std::vector<PendingBlock> items;
    std::size_t head = 0;
    bool empty() const noexcept { return head == items.size(); }
    PendingBlock& front() noexcept { return items[head]; }
    void pop_front() noexcept {
      items[head] = PendingBlock{};
      if (++head == items.size()) clear();
    }
    /// Never throws after make_room(n) for the n pushes that follow.
    void push_back(PendingBlock b) { items.push_back(std::move(b)); }
    void make_room(std::size_t n) {
      if (items.capacity() - items.size() >= n) return;
      if (head != 0) {  // the taken ones first
        items.erase(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(head));
        head = 0;
        if (items.capacity() - items.size() >= n) return;
      }
      items.reserve(std::max(2 * items.capacity(), items.size() + n));
    }
    void clear() noexcept {
      items.clear();
      head = 0;
    }
  };
  struct Peer {
    std::atomic<bool> alive{false};
    std::atomic<bool> stage{false};  // blocks to it are staged (set_stage_blocks)
    std::atomic<bool> gather{false};  // blocks to it go on huge pages first (set_gather_blocks)
    int comm = 0;  // index in comms_
    int rank = 0;  // rank in that communicator
    std::deque<OutEnvelope*> outbox;
    bool dirty = false;
    BlockQueue blocks;                // under mu_: segments not yet handed to MPI, in order
    bool staging = false;             // listed in staging_
    bool refused = false;             // under mu_: MPI refused a send to it; nothing more is sent
  };
  struct SendMeta {
    NodeId peer;
    FrameBuffer frame;                                      // coalesced frame, if any
    std::vector<std::shared_ptr<OutEnvelope>> envelopes;    // what the request still points into
    OutFrame single;  // or: the one frame (without blocks) the request sends from, alone
    Draft draft;      // or: an urgent draft handed to MPI straight from its own storage
    StageSlot slot;   // or: the staging slot a piece of a block is sent from
    std::shared_ptr<OutEnvelope> owner;  // or: the envelope whose block a chunk is sent from
  };
  struct Delivery {
    std::unique_ptr<Inbound> inbound;
    std::size_t pending = 0;  // segment chunks still to arrive
    std::vector<ByteBuffer> scratch;
  };
  struct FrameRecv {
    MPI_Request req = MPI_REQUEST_NULL;  // null: the frame is in already
    FrameBuffer buf;
    std::uint64_t announced = 0;  // a large frame: the size its stub announced
    std::size_t read = 0;         // bytes read so far (reading stopped where memory ran out)
    std::size_t comm = 0;         // a large frame: the communicator it comes on
    std::int64_t short_since = 0;  // steady_clock ticks: since when it waits for memory (0: it does not)
    std::int64_t posted_at = 0;    // steady_clock ticks: when its receive was posted (a large frame)
    bool unposted = false;         // a large frame whose receive is not posted yet (no memory)
  };
  struct Source {
    std::deque<std::shared_ptr<Delivery>> queue;  // arrival order
    std::deque<FrameRecv> frames;                 // frames still arriving, in order
    unsigned unposted = 0;  // large frames among them whose receive is not posted yet (no memory)
    // An envelope read and queued whose blocks nobody takes found no memory
    // to drain them into: its frame waits at it, and it is not delivered
    // (pending holds a mark) until they are drained.
    std::shared_ptr<Delivery> undrained;
    // A large frame, or an envelope's blocks, could not be received: what it
    // sends after them would be read out of order, so nothing more is read.
    bool broken = false;
  };
  struct SegRecv {
    NodeId from;
    std::shared_ptr<Delivery> owner;
    std::byte* data;  // where the chunk lands, and its length
    std::size_t len;
  };

  /// Per destination, the frame that drafts are appended to.
  struct Open {
    SpinLock mu;
    std::atomic<OutEnvelope*> frame{nullptr};  // written under mu
  };

  /// An urgent draft of up to kPostedFrame bytes with nothing queued before it
  /// for its destination goes to MPI from its own storage, if the engine is
  /// free: no frame, no queue.
  /// False (the draft untouched) when it must take the queue.
  bool send_now(Draft& draft);
  bool progress_locked();
  /// Under mu_: records whether MPI requests are outstanding; true if that just began.
  bool note_in_flight();
  void enqueue(OutEnvelope* e);
  /// Under open_[dest].mu: dest's open frame, opened if there is none.
  OutEnvelope* open_frame(NodeId dest);
  /// After a send: inside an actor, the turn's end flushes; elsewhere a closed
  /// frame leaves now, and an open one within the progress thread's next round.
  void after_send(bool closed);
  /// Under open_[dest].mu: its open frame, if any, joins the queue.
  void close_open(NodeId dest);
  void drain_open();  // every open frame joins the queue
  /// Where a queued envelope goes: its outbox, or unjoined_ (a node being
  /// added): kept; nowhere (a lost node, or no such node): dropped, for the
  /// caller to recycle; or no memory for either: nothing changed.
  enum class Placed { kept, dropped, no_room };
  Placed place(OutEnvelope* e);
  /// Moves envelopes kept for nodes that have joined since to their outboxes.
  /// False if one found no memory (it and all after it wait).
  bool release_unjoined();
  bool drain_outq();
  void uncount_queued(const OutEnvelope* e) noexcept;
  bool flush_outboxes();
  /// A frame larger than the receiver's posted receive (kPostedFrame) is
  /// preceded by a stub in the frames' order and itself sent with kTagLargeFrame.
  /// `stub`: one taken beforehand (take_stub), so that posting cannot throw.
  void post_send(NodeId peer, const void* data, std::size_t size, int tag, SendMeta meta, FrameBuffer stub = {});
  /// The stub announcing a frame of `size` bytes, filled in.
  static FrameBuffer take_stub(std::size_t size);
  void post_one(NodeId peer, const void* data, std::size_t size, int tag, SendMeta meta);
  /// MPI_Isend to peer (a null request if MPI refused, which it reports).
  MPI_Request isend(NodeId peer, const void* data, std::size_t size, int tag);
  /// A send to peer was refused or completed in error (under mu_): what came
  /// after it would arrive with a gap before it, so nothing more is sent to
  /// it and the cluster is told (newly_broken).
  void send_failed(NodeId peer, const char* how);
  /// Room for n more posted sends (grown geometrically), so that recording one cannot throw.
  void room_for_sends(std::size_t n);
  /// `count` envelopes leave in `frame` (or alone, from their own buffer, when
  /// frame is null); `keep` holds those whose bytes or segments MPI still reads.
  /// Nothing in it throws once make_batch_room() was made for the batch.
  void post_frame(NodeId peer, FrameBuffer frame, std::vector<std::shared_ptr<OutEnvelope>> keep, std::size_t count,
                  FrameBuffer stub);
  /// Room for everything sending the first `count` envelopes of peer's outbox
  /// in one frame of frame_size bytes takes (requests, queued blocks, the
  /// stub, the list of envelopes with blocks), made before any of them leaves
  /// the outbox: if memory runs out, they all stay queued and none is sent.
  void make_batch_room(NodeId peer, std::size_t count, std::size_t frame_size, FrameBuffer& stub);
  bool test_sends();
  /// Queues e's blocks for peer behind the ones already waiting (engine_blocks.cpp).
  void queue_blocks(NodeId peer, const std::shared_ptr<OutEnvelope>& e);
  /// Hands waiting blocks to MPI, in order per peer: unstaged ones whole,
  /// staged ones a piece at a time as slots of the pool come free.
  bool pump_blocks();
  /// Posts a block's chunks from its own memory.
  void post_block(NodeId peer, const std::byte* data, std::size_t size, bool pieced,
                  const std::shared_ptr<OutEnvelope>& owner);
  /// Posts the ring's free slots again (in ring order), then takes the frames
  /// that reached them, reading each at once when nothing of its source waits.
  bool take_frames();
  struct FrameRing;
  /// Posts the next slot of comm's ring (its buffer taken first if it has
  /// none); false if MPI refused.
  bool post_frame_recv(FrameRing& ring, std::size_t comm);
  /// A stub came from `from`: the large frame it announces is received in its
  /// turn. False if there is no room to note it (the stub waits).
  bool receive_large_frame(NodeId from, std::size_t comm, const ByteBuffer& stub);
  /// Posts the receive of the large frame f (no buffer yet) announced; false
  /// if there is no memory for it yet (tried again in a later round), or if
  /// it can never be received (the source is broken).
  bool post_large_frame(NodeId from, FrameRecv& f);
  /// Stops the posted receives (before communicators are freed or MPI ends).
  void stop_receiving_locked();
  void reserve_join_locked(std::size_t total);
  /// How long stop_receiving waits for its cancelled receives to end: one MPI
  /// matched to a frame that never finishes arriving is let go of after it.
  static constexpr std::chrono::milliseconds kCancelPatience{200};
  enum class Landed { dropped, queued, read, held };
  /// The frame that landed in slot i of comm's ring: dropped, queued behind
  /// its source's frames, read in place, or held in its slot (no memory to
  /// read or queue it: read first next round, the ring waiting behind it).
  /// landed_now: it has just landed (not tried before): its source is heard.
  Landed take_landed(FrameRing& ring, std::size_t comm, unsigned i, bool landed_now);
  bool test_frame_recvs();
  bool test_segment_recvs();
  /// Reads frame from `read` on; false if memory ran out (read is where to go
  /// on: the envelope that found none, read again whole).
  bool process_frame(NodeId from, ByteBuffer& frame, std::size_t& read);
  bool read_frame(NodeId from, ByteBuffer& frame, std::size_t& read);  // process_frame's loop
  /// One envelope of a frame (parsed: n is parse_envelope's answer), but for
  /// the common case, which read_frame handles in line. Room first: whatever
  /// it needs is allocated before anything is kept, so that a std::bad_alloc
  /// (the handler's too) leaves no trace. False: the rest of the frame is not
  /// to be read.
  bool read_entry(NodeId from, std::size_t len, std::size_t n, Envelope& env, EnvelopeFault& fault);
  /// The handler's record of env; null if it dropped the envelope (an
  /// exception, reported) or has nothing to deliver. Lets std::bad_alloc through.
  std::unique_ptr<Inbound> call_handler(NodeId from, Envelope& env);
  /// Room in ready_ for n more; false (and a retry noted) if there is none.
  bool ready_room(std::size_t n);
  /// What is ready but found no room in ready_ (release_arrived, collect_ready).
  void retry_ready();
  /// Scratch buffers that receive (and drop) blocks nobody takes; false, with
  /// nothing kept, if memory ran out (the caller then stops reading the source).
  bool drain_into_scratch(Delivery& d, const std::vector<std::uint64_t>& sizes,
                          const std::vector<std::uint8_t>& pieced, std::vector<InSegment>& dests);
  void release_arrived();                           // arrived_ -> ready_
  /// The blocks of an envelope from `from` cannot be received: d (its
  /// delivery, no receive posted) takes the place kept for it at the back of
  /// the source's queue, and the source is broken.
  void stop_reading(NodeId from, std::shared_ptr<Delivery> d);
  /// Frames of a source that will never be read: their receives cancelled,
  /// their buffers kept (MPI may still write them).
  void drop_queued_frames(Source& src) noexcept;
  /// mark_lost(): throws std::bad_alloc having changed nothing.
  void mark_lost_once(NodeId n);
  /// While memory is short for what waits since `since` (0: from now): true
  /// until memory_patience() has passed. Notes the shortage.
  bool still_patient(std::int64_t& since);
  /// A frame of `from` waited memory_patience() for memory: its source is broken.
  void give_up_waiting(NodeId from);
  /// False if MPI refused one (the source is then broken; no more are posted).
  bool post_segment_recvs(NodeId from, const std::shared_ptr<Delivery>& d, std::vector<InSegment> dests);
  /// Nothing more from `from` can be read in order: its queued frames are
  /// dropped, and the cluster is told (newly_broken) so that it declares the
  /// node lost everywhere (only its ring successor would notice the silence).
  void break_source(NodeId from);
  /// The nodes whose flag is set, each flag cleared as it is read.
  std::vector<NodeId> take_flags(std::atomic<bool>* flags) const;
  void collect_ready(NodeId from);
  void deliver_ready();
  void progress_loop(std::function<void()> tick, std::chrono::microseconds tick_period,
                     std::function<void()> on_activity);
  void init_storage(std::size_t capacity);
  MPI_Comm peer_comm(NodeId n) const { return comms_[static_cast<std::size_t>(peers_[n]->comm)]; }

  std::vector<MPI_Comm> comms_;                  // [0]: the one we started with
  /// The receives frames land in, per communicator: kPostedReceives of them,
  /// posted in ring order. MPI matches a communicator's frames to them in the
  /// order they were posted, so they are taken in that order (`head` first).
  /// A taken slot is posted again only at the start of the next round, once
  /// its frame has been read: while one is read the others stay posted, and
  /// the repost is off the path from a frame's landing to what it causes.
  static constexpr unsigned kPostedReceives = 4;
  struct FrameRing {
    FrameRing() { req.fill(MPI_REQUEST_NULL); }
    std::array<MPI_Request, kPostedReceives> req;  // MPI_REQUEST_NULL when not posted
    std::array<FrameBuffer, kPostedReceives> buf;
    unsigned head = 0;    // the slot the next frame lands in
    unsigned posted = 0;  // slots head, head + 1, ... (ring order) that are posted
    // Slot head - 1 holds a frame that landed and found no memory to be read
    // or queued: it is read first; until then no slot is taken (the ones
    // posted keep their frames) and the free ones are not posted again.
    bool held = false;
    std::int64_t held_since = 0;  // steady_clock ticks: since when the held slot waits for memory
    std::array<NodeId, kPostedReceives> from{};        // whose frame a slot holds
    std::array<std::size_t, kPostedReceives> read{};   // how much of it was read
  };
  std::vector<FrameRing> posted_;
  std::size_t first_comm_ = 0;  // where take_frames starts: after the one it last read a frame from
  bool receiving_ = true;            // false once the posted receives are stopped
  bool shut_ = false;                // shut(): no MPI call any more (under mu_)
  std::vector<std::vector<NodeId>> rank_node_;  // per communicator: rank -> node
  std::atomic<std::size_t> count_{0};
  bool joined_start_ = false;  // comms_[0] came from add_nodes (a joiner)
  NodeId self_ = 0;
  InboundHandler& handler_;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::unique_ptr<std::atomic<std::int64_t>[]> heard_;  // steady_clock ticks, per peer
  std::unique_ptr<std::atomic<bool>[]> lost_heard_;     // a lost node's frame was dropped
  std::unique_ptr<std::atomic<bool>[]> broken_news_;    // a source broke: the cluster is to hear of it
  // Under mu_: the posted expulsion receives (one per communicator) and the
  // notices sent, each with the 8 bytes it holds.
  std::vector<MPI_Request> expel_reqs_;
  std::vector<std::unique_ptr<std::uint64_t>> expel_bufs_;
  std::vector<std::pair<MPI_Request, std::shared_ptr<std::uint64_t>>> expel_sent_;
  std::vector<std::unique_ptr<Source>> sources_;
  std::vector<NodeId> dirty_;
  std::vector<NodeId> flushing_;  // flush_outboxes' copy of dirty_ (kept: no allocation per flush)
  std::vector<std::shared_ptr<OutEnvelope>> frame_blocks_;  // post_frame: the batch's envelopes with blocks
  OutEnvelope* held_ = nullptr;  // taken from the queue, not yet in its outbox (no memory): first next time
  // Envelopes to ids between nodes() and the room for nodes: nodes being added
  // (the cluster layer counts them alive before add_nodes here). Kept, in
  // order, until add_nodes moves them to their outboxes.
  std::vector<OutEnvelope*> unjoined_;
  // The last round (under mu_) met an allocation failure: on the send side,
  // what waits stays queued and senders leave it to the progress thread; on
  // the receive side, frames wait half read or held. The progress thread naps
  // between tries instead of spinning.
  std::atomic<bool> short_of_memory_{false};
  /// At the start of a round under mu_: read first, so that the usual round
  /// (nothing failed) writes nothing to a line the progress thread reads.
  void forget_short_of_memory() noexcept {
    if (short_of_memory_.load(std::memory_order_relaxed)) short_of_memory_.store(false, std::memory_order_relaxed);
  }
  std::vector<OutEnvelope*> batch_;  // scratch for flush_outboxes

  std::unique_ptr<Open[]> open_;
  std::atomic<std::size_t> open_count_{0};  // open frames holding something
  MpscQueue outq_;
  std::atomic<std::size_t> outq_size_{0};
  std::atomic<std::size_t> outq_bytes_{0};
  std::atomic<std::uint64_t> arrivals_{0};  // frames and segment chunks received, for the progress thread's hook
  std::mutex mu_;  // the engine

  std::vector<MPI_Request> send_reqs_;
  std::vector<SendMeta> send_meta_;
  std::vector<NodeId> staging_;              // peers with blocks waiting (Peer::blocks)
  std::shared_ptr<StagePool> stage_pool_;    // made at the first staged block
  // The pool could not be mapped: staged blocks go from their own memory (in
  // their pieces, as announced) until this time, then it is tried again.
  std::chrono::steady_clock::time_point stage_pool_retry_{};
  bool stage_pool_failed_ = false;
  std::size_t frames_pending_ = 0;
  std::size_t next_source_ = 0;
  std::vector<MPI_Request> seg_reqs_;
  std::vector<SegRecv> seg_meta_;
  std::vector<MPI_Status> seg_status_;  // test_segment_recvs' scratch
  std::vector<std::shared_ptr<void>> abandoned_;  // buffers MPI may still touch

  std::vector<std::unique_ptr<Inbound>> arrived_;  // under mu_: ready in the frame being read
  // Under mu_: envelopes ready to deliver found no room in ready_ (arrived_
  // kept, or left at the front of their source's queue): retried next round.
  bool retry_ready_ = false;
  std::mutex ready_mu_;
  std::vector<std::unique_ptr<Inbound>> ready_;     // in delivery order (null: nothing to run)
  std::vector<std::unique_ptr<Inbound>> delivering_;  // under deliver_mu_, reused
  std::atomic<std::size_t> ready_count_{0};
  std::vector<int> test_idx_;  // scratch for MPI_Testsome
  std::vector<MPI_Status> send_status_;  // test_sends' scratch (room made with the requests')
  std::mutex deliver_mu_;
  std::atomic<std::size_t> partial_{0};  // deliveries waiting for segments or order

  EngineStats stats_;  // under mu_

  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
  std::atomic<bool> sleeping_{false};
  std::atomic<bool> in_flight_{false};  // sends or receives are posted and not complete (set under mu_)
  std::atomic<bool> staging_now_{false};  // blocks wait for staging slots (set under mu_)
  std::atomic<std::uint64_t> idle_naps_{0}, idle_nap_us_{0};  // added to under sleep_mu_
  std::atomic<std::uint64_t> hot_polls_{0};  // written by the progress thread only
  std::atomic<std::uint64_t> helper_rests_{0}, helper_rest_us_{0}, helper_rest_longest_us_{0}, helper_rests_cut_{0};  // likewise
  std::atomic<int> helpers_{0};
  std::atomic<std::uint64_t> helper_rounds_{0};  // helpers' progress calls (only "did it change" matters)
};

/// The progress thread's naps when it has nothing to do: from the shortest,
/// doubling up to the longest; only the shortest while a transfer is in flight.
inline constexpr std::chrono::microseconds kShortestNap{20}, kLongestNap{1000};
/// How long the progress thread rests while a helper drives the engine: from
/// the shortest, doubling each time it finds the helper still driving, up to
/// the longest (the longest nap's bound); back to the shortest once it finds
/// none. Each wake-up takes a core from a polling thread, and with 200 us rests
/// 0.5 % of the shm round trips took 5-40 us instead of 0.9 (docs/benchmarks.md).
inline constexpr std::chrono::microseconds kShortestRest{200}, kLongestRest{kLongestNap};
/// Rounds one progress() or flush() call makes at most while senders keep
/// queueing (each round takes everything queued before it).
inline constexpr int kProgressRounds = 32;
/// While staged blocks wait for slots the progress thread yields instead of
/// napping, for at most this long after it last got anything done.
inline constexpr std::chrono::microseconds kStayNearWhileStaging{1000};

inline constexpr int kTagFrame = 0x7e01;
inline constexpr int kTagSegment = 0x7e02;
inline constexpr int kTagLargeFrame = 0x7e03;
inline constexpr int kTagExpel = 0x7e04;  // "you were declared lost": 8 bytes, the sender's node id
/// Frames land in receives posted ahead, from any source, a ring per
/// communicator (no probe, no unexpected-message copy: 0.38-0.43 against
/// 0.51-0.58 us for a raw ping-pong the probing way). A sender sends a frame
/// there directly only up to this size: small enough to travel eagerly on every
/// transport (Open MPI's shared-memory eager limit, 4 KiB, holds its header
/// too), so a posted receive completes as it matches, and one matched by a
/// peer that dies can never be left half done with every frame waiting behind
/// it. A larger frame sends a stub there, in the frames' order, then itself
/// with kTagLargeFrame; the receiver posts a receive of its size from that
/// peer. A posted receive itself holds kFrameLimit bytes, so a frame sent
/// directly up to that size (by an older sender, say) is still read.
inline constexpr std::size_t kPostedFrame = 3840;
/// A stub: [u32 kStubMark][u32 0][u64 size of the frame that follows].
inline constexpr std::size_t kStubBytes = 16;
inline constexpr std::uint32_t kStubMark = 0xffffffffu;
/// The largest frame a stub may announce (a lone envelope's own bytes; blocks travel as segments).
inline constexpr std::uint64_t kLargestFrame = std::numeric_limits<int>::max();
static_assert(kFrameSlot + kMaxEnvelope <= kLargestFrame, "the largest envelope, in a frame of its own, fits an int count");
/// Frames coalesce envelopes up to this size; larger envelopes travel alone.
inline constexpr std::size_t kFrameLimit = 64 * 1024;
/// A message up to this size (inline bytes and blocks) that finds no memory
/// to be read waits for it: the engine reads it again later (blocks nobody
/// takes, to be drained; RemoteNode's decoding, if memory is short). A larger
/// one may never fit: its blocks, undrained, break their source, and its
/// decode is a DecodeError for the caller.
inline constexpr std::uint64_t kWaitForMemoryUpTo = 1 << 20;
static_assert(Engine::kCloseAt + Engine::kSmallEnvelope <= kFrameLimit, "a coalesced frame stays within kFrameLimit");
/// MPI counts are int: segments travel in chunks of at most this (staged
/// ones, marked kSegmentPieced, in pieces of kPiece).
inline constexpr std::size_t kChunk = std::size_t{1} << 30;

}  // namespace troupe::detail
