// The progress engine: its storage and membership, one round of MPI work, and
// the progress thread. Sending and receiving are in engine_send.cpp and
// engine_receive.cpp, the pooled buffers in engine_buffers.cpp.
#include "engine.hpp"

#include <algorithm>
#include <cstdio>
#include <thread>

#include "engine_internal.hpp"
#include "core/sanitizers.hpp"
#include "core/thread_name.hpp"
#include "troupe/detail/future_state.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TROUPE_CPU_RELAX() _mm_pause()
#else
#define TROUPE_CPU_RELAX() std::this_thread::yield()
#endif

namespace troupe::detail {

void Engine::init_storage(std::size_t capacity) {
  open_.reset(new Open[capacity]);
  heard_.reset(new std::atomic<std::int64_t>[capacity]);
  lost_heard_.reset(new std::atomic<bool>[capacity]);
  broken_news_.reset(new std::atomic<bool>[capacity]);
  // Lists of nodes never grow past this: appending to them cannot throw.
  dirty_.reserve(capacity);
  flushing_.reserve(capacity);
  staging_.reserve(capacity);
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  for (std::size_t i = 0; i < capacity; ++i) {
    peers_.push_back(std::make_unique<Peer>());
    sources_.push_back(std::make_unique<Source>());
    heard_[i].store(now);
    lost_heard_[i].store(false);
    broken_news_[i].store(false);
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
               const std::vector<NodeId>& node_of_rank, std::size_t capacity)
    : self_(self), handler_(handler) {
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_Comm_dup(comm, &dup);
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  comms_.push_back(dup);
  rank_node_.push_back(node_of_rank);
  joined_start_ = true;
  init_storage(std::max(capacity != 0 ? capacity : total + kSpareNodes, total));
  for (std::size_t r = 0; r < node_of_rank.size(); ++r) {
    auto& p = *peers_[node_of_rank[r]];
    p.alive.store(true);
    p.comm = 0;
    p.rank = static_cast<int>(r);
  }
  count_.store(total);
}

MPI_Comm Engine::duplicate_for_nodes(MPI_Comm comm) {
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_Comm_dup(comm, &dup);  // collective over comm, like the caller's
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  return dup;
}

void Engine::reserve_join(std::size_t total) {
  std::lock_guard lk(mu_);
  reserve_join_locked(total);
}

void Engine::reserve_join_locked(std::size_t total) {
  if (total > peers_.size()) throw std::runtime_error("troupe: too many nodes joined (no room left)");
  comms_.reserve(comms_.size() + 1);
  rank_node_.reserve(rank_node_.size() + 1);
}

void Engine::add_nodes(MPI_Comm dup, std::vector<NodeId> node_of_rank, std::size_t total) {
  std::lock_guard lk(mu_);
  // Room first (nothing allocated below): a communicator listed without its
  // ranks' nodes would index past rank_node_ when a frame lands on it.
  reserve_join_locked(total);
  const int index = static_cast<int>(comms_.size());
  comms_.push_back(dup);
  rank_node_.push_back(std::move(node_of_rank));
  const auto& ranks_nodes = rank_node_.back();
  const std::size_t before = count_.load();
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  for (std::size_t r = 0; r < ranks_nodes.size(); ++r) {
    const NodeId n = ranks_nodes[r];
    if (n < before) continue;  // older pairs keep their communicator
    auto& p = *peers_[n];
    p.comm = index;
    p.rank = static_cast<int>(r);
    heard_[n].store(now);
    p.alive.store(true);
  }
  count_.store(total, std::memory_order_release);
  // What was sent to them meanwhile leaves now (or, short of memory, at the
  // next round's drain_outq, still before anything queued later).
  if (!unjoined_.empty()) release_unjoined();
}

void Engine::stop_receiving() {
  std::lock_guard lk(mu_);
  stop_receiving_locked();
}

Engine::~Engine() {
  stop_progress_thread();
  {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) stop_receiving();
  }
  {
    // Requests still pending belong to lost peers or to a job torn down without
    // finish(); their buffers stay alive (leaked) rather than be freed under MPI.
    std::lock_guard lk(mu_);
    for (auto& m : send_meta_) abandoned_.push_back(std::make_shared<SendMeta>(std::move(m)));
    for (auto& s : expel_sent_) abandoned_.push_back(std::move(s.second));
    for (auto& b : expel_bufs_) abandoned_.push_back(std::shared_ptr<std::uint64_t>(std::move(b)));
    for (auto& s : sources_)
      for (auto& f : s->frames) abandoned_.push_back(std::shared_ptr<ByteBuffer>(std::move(f.buf)));
    for (auto& m : seg_meta_) abandoned_.push_back(m.owner);
    // Kept reachable for the rest of the process (not freed, not reported).
    static auto* graveyard = new std::vector<std::shared_ptr<void>>();
    static std::mutex graveyard_mu;
    std::lock_guard glk(graveyard_mu);
    for (auto& p : abandoned_) graveyard->push_back(std::move(p));
    delete held_;
    for (auto* e : unjoined_) delete e;
    while (auto* e = static_cast<OutEnvelope*>(outq_.pop())) delete e;
    for (std::size_t n = 0; n < peers_.size(); ++n) delete open_[n].frame.exchange(nullptr);
    for (auto& p : peers_)
      for (auto* e : p->outbox) delete e;
  }
  // Last (TSan): an engine made later where this one was, on a stack, must
  // not be taken for this one.
  tsan_forget_mutexes(mu_, ready_mu_, deliver_mu_, sleep_mu_);
}

bool Engine::progress() {
  bool did = false;
  // A sender may have queued while we held the engine and found it busy: a
  // few rounds more take it. Not for ever: senders that keep queueing would
  // keep whoever drives here, and the progress thread runs failure detection
  // (its heartbeats) between calls.
  for (int round = 0; round < kProgressRounds; ++round) {
    std::unique_lock lk(mu_, std::try_to_lock);
    if (!lk.owns_lock() || shut_) break;
    forget_short_of_memory();
    did |= progress_locked();
    const bool short_of_memory = short_of_memory_.load(std::memory_order_relaxed);
    lk.unlock();
    // This round's deliveries before another: senders that keep queueing
    // would otherwise keep this loop going and hold every delivery back.
    deliver_ready();
    // A sender may have queued while we held the engine and found it busy.
    // (Short of memory, what is left waits for the next round.)
    if (short_of_memory || outq_size_.load(std::memory_order_seq_cst) == 0 || round + 1 == kProgressRounds)
      return did;
  }
  deliver_ready();  // what another thread's round made ready
  return did;
}

bool Engine::progress_locked() {
  // Each step is skipped outright when it has nothing to do: an idle round is
  // polled over and over, and how long it takes is how late a frame is seen.
  // (outq_size_ counts an envelope before it is queued: zero means none is.)
  bool did = false;
  if (outq_size_.load(std::memory_order_acquire) != 0 || open_count_.load(std::memory_order_acquire) != 0 ||
      !unjoined_.empty())
    did |= drain_outq();
  if (!dirty_.empty()) did |= flush_outboxes();
  if (!send_reqs_.empty()) did |= test_sends();
  if (!staging_.empty()) did |= pump_blocks();
  if (retry_ready_) retry_ready();
  did |= take_frames();
  if (frames_pending_ != 0) did |= test_frame_recvs();
  if (!seg_reqs_.empty()) did |= test_segment_recvs();
  note_in_flight();
  return did;
}

bool Engine::note_in_flight() {
  if (staging_now_.load(std::memory_order_relaxed) != !staging_.empty())
    staging_now_.store(!staging_.empty(), std::memory_order_relaxed);
  const bool now = !send_reqs_.empty() || !seg_reqs_.empty() || frames_pending_ != 0 || !staging_.empty();
  // Written only under mu_: a plain load tells whether anything changed, and
  // every poll round and flush is spared a locked exchange when nothing did.
  if (in_flight_.load(std::memory_order_relaxed) == now) return false;
  in_flight_.store(now, std::memory_order_seq_cst);
  return now;
}

void Engine::drop_queued_frames(Source& src) noexcept {
  for (auto& f : src.frames) {
    if (f.req != MPI_REQUEST_NULL) {  // a large frame's receive (complete ones wait with a null request)
      MPI_Cancel(&f.req);
      MPI_Request_free(&f.req);
      // MPI may still write it: kept alive, or (no memory to note it) leaked.
      try {
        abandoned_.reserve(abandoned_.size() + 1);
        std::shared_ptr<ByteBuffer> kept(std::move(f.buf));  // (f.buf keeps it if this throws)
        abandoned_.push_back(std::move(kept));
      } catch (const std::bad_alloc&) {
        (void)f.buf.release();
      }
    }
    --frames_pending_;
  }
  src.frames.clear();
  src.unposted = 0;
}

void Engine::mark_lost(NodeId n) {
  if (n >= nodes()) return;
  for (bool told = false;;) {
    try {
      mark_lost_once(n);
      return;
    } catch (const std::bad_alloc&) {
      // Nothing was changed (the room is made first): again, once there is
      // memory. Half done, the request arrays would be left inconsistent.
      short_of_memory_.store(true, std::memory_order_relaxed);
      if (!told) std::fprintf(stderr, "troupe: node %u: no memory to drop node %u's traffic; waiting\n", self_, n);
      told = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

void Engine::mark_lost_once(NodeId n) {
  std::vector<std::shared_ptr<Delivery>> undelivered;
  {
  std::lock_guard lk(mu_);
  auto& p = *peers_[n];
  if (!p.alive.load()) return;
  if (shut_) {  // MPI is not ours to call any more
    p.alive.store(false);
    return;
  }
  // Room first, for everything kept below: past this point nothing throws.
  std::size_t sends = 0, receives = 0;
  for (const auto& m : send_meta_) sends += m.peer == n ? 1 : 0;
  for (const auto& m : seg_meta_) receives += m.from == n ? 1 : 0;
  std::vector<std::shared_ptr<SendMeta>> kept(sends);
  for (auto& k : kept) k = std::make_shared<SendMeta>();
  auto& src = *sources_[n];
  abandoned_.reserve(abandoned_.size() + sends + receives + src.queue.size() + src.frames.size());
  undelivered.reserve(src.queue.size());
  p.alive.store(false);
  for (auto* e : p.outbox) delete e;
  p.outbox.clear();
  {
    std::lock_guard olk(open_[n].mu);
    if (OutEnvelope* f = open_[n].frame.exchange(nullptr)) {
      open_count_.fetch_sub(1, std::memory_order_acq_rel);
      delete f;
    }
  }
  // Blocks not yet handed to MPI are dropped.
  p.blocks.clear();
  if (p.staging) {
    p.staging = false;
    staging_.erase(std::find(staging_.begin(), staging_.end(), n));
  }
  // Sends to it may never complete: free the requests, keep their buffers.
  bool slot_lost = false;
  std::size_t next_kept = 0;
  compact(send_reqs_, send_meta_, [&](std::size_t r) {
    if (send_meta_[r].peer != n) return true;
    if (send_reqs_[r] != MPI_REQUEST_NULL) MPI_Request_free(&send_reqs_[r]);  // null: MPI refused the send
    slot_lost |= static_cast<bool>(send_meta_[r].slot);
    auto& k = kept[next_kept++];
    *k = std::move(send_meta_[r]);
    abandoned_.push_back(std::move(k));
    return false;
  });
  // Staging slots MPI may still read are never given back: later blocks get a
  // new pool (the old one lives on with those slots).
  if (slot_lost) stage_pool_.reset();
  // Receives from it: cancel what can be cancelled, abandon the rest.
  compact(seg_reqs_, seg_meta_, [&](std::size_t r) {
    if (seg_meta_[r].from != n) return true;
    if (seg_reqs_[r] != MPI_REQUEST_NULL) {  // null: MPI refused the receive
      MPI_Cancel(&seg_reqs_[r]);
      MPI_Request_free(&seg_reqs_[r]);
    }
    abandoned_.push_back(seg_meta_[r].owner);
    return false;
  });
  drop_queued_frames(src);
  src.undrained.reset();
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

void Engine::shut() {
  std::vector<std::shared_ptr<Delivery>> undelivered;
  std::vector<std::unique_ptr<Inbound>> stranded;
  {
    std::lock_guard lk(mu_);  // whoever is inside an MPI call of ours finishes it first
    if (shut_) return;
    stop_receiving_locked();
    try {
      test_sends();  // sends done (or refused) are no longer pending
    } catch (...) {
    }
    shut_ = true;
    // What arrived and waits for its blocks, or behind such, is never
    // delivered now: whoever waits for it learns so (an ask's reply, say, when
    // a runtime goes without finish()). Its buffers stay where MPI may write.
    try {
      for (const auto& s : sources_) undelivered.insert(undelivered.end(), s->queue.begin(), s->queue.end());
    } catch (const std::bad_alloc&) {
      undelivered.clear();  // (no memory: they wait for ever, as before)
    }
    // Read and complete, but no room was found for them in the ready list:
    // delivered below if there is room now, told otherwise. (A reply among
    // them has left its ask's table: nothing else would end that ask.)
    release_arrived();
    stranded.swap(arrived_);
    partial_.fetch_sub(stranded.size(), std::memory_order_relaxed);
  }
  deliver_ready();  // what is complete is delivered
  for (auto& in : stranded)
    if (in) in->abandon();
  for (auto& d : undelivered)
    if (d->inbound) d->inbound->abandon();
}

void Engine::release_joined_comms() {
  std::lock_guard lk(mu_);
  if (!shut_ || !send_reqs_.empty() || !seg_reqs_.empty()) return;
  for (std::size_t c = joined_start_ ? 0 : 1; c < comms_.size(); ++c)
    if (comms_[c] != MPI_COMM_NULL) MPI_Comm_free(&comms_[c]);
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

std::vector<NodeId> Engine::take_flags(std::atomic<bool>* flags) const {
  std::vector<NodeId> out;
  const std::size_t n = nodes();
  for (NodeId i = 0; i < n; ++i)
    if (flags[i].load(std::memory_order_relaxed) && flags[i].exchange(false)) out.push_back(i);
  return out;
}

std::vector<NodeId> Engine::lost_but_heard() { return take_flags(lost_heard_.get()); }

void Engine::send_expel(NodeId n) {
  if (n >= nodes() || n == self_) return;
  std::lock_guard lk(mu_);
  if (shut_) return;
  // Room first: once MPI holds a buffer, keeping it allocates nothing. Short
  // of memory, no notice goes this time (the tick sends it again a second
  // later, and the heartbeats' lost sets carry the news too).
  std::shared_ptr<std::uint64_t> buf;
  try {
    abandoned_.reserve(abandoned_.size() + expel_sent_.size());
    expel_sent_.reserve(expel_sent_.size() + 1);
    buf = std::make_shared<std::uint64_t>(self_);
  } catch (const std::bad_alloc&) {
    return;
  }
  // Notices sent earlier that are done (or failed: a process really gone).
  std::erase_if(expel_sent_, [this](auto& s) {
    int done = 0;
    if (MPI_Test(&s.first, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS) return done != 0;
    if (s.first != MPI_REQUEST_NULL) {  // MPI still holds it: its buffer stays
      MPI_Request_free(&s.first);
      abandoned_.push_back(std::move(s.second));
    }
    return true;
  });
  MPI_Request req = MPI_REQUEST_NULL;
  if (MPI_Isend(buf.get(), 1, MPI_UINT64_T, peers_[n]->rank, kTagExpel, peer_comm(n), &req) == MPI_SUCCESS)
    expel_sent_.emplace_back(req, std::move(buf));
}

bool Engine::expel_received() {
  std::lock_guard lk(mu_);
  if (!receiving_) return false;
  while (expel_reqs_.size() < comms_.size()) {  // the first call, or a communicator joined
    const std::size_t c = expel_reqs_.size();
    // Room first: a posted receive is always listed (unlisted, it would never
    // be tested or cancelled, and could take a later notice). Short of
    // memory, it is posted at a later call.
    try {
      expel_reqs_.reserve(c + 1);
      expel_bufs_.push_back(std::make_unique<std::uint64_t>(0));
    } catch (const std::bad_alloc&) {
      break;
    }
    MPI_Request req = MPI_REQUEST_NULL;
    if (MPI_Irecv(expel_bufs_.back().get(), 1, MPI_UINT64_T, MPI_ANY_SOURCE, kTagExpel, comms_[c], &req) !=
        MPI_SUCCESS)
      req = MPI_REQUEST_NULL;
    expel_reqs_.push_back(req);
  }
  for (auto& req : expel_reqs_) {
    if (req == MPI_REQUEST_NULL) continue;
    int done = 0;
    if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) return true;
  }
  return false;
}

bool Engine::heard_pending(NodeId n, std::chrono::milliseconds patience) {
  if (n >= nodes()) return false;
  int flag = 0;
  bool queued = false;
  {
    std::lock_guard lk(mu_);  // brief: probes, no receive
    const auto& src = *sources_[n];
    if (shut_ || src.broken) return false;  // nothing from it is read any more
    // Frames and stubs are taken in every round; large frames are received
    // as their stubs come. Not MPI_ANY_TAG: a block waits in MPI until its
    // envelope is read, which a frame that never ends holds back for good.
    MPI_Iprobe(peers_[n]->rank, kTagFrame, peer_comm(n), &flag, MPI_STATUS_IGNORE);
    if (!flag) MPI_Iprobe(peers_[n]->rank, kTagLargeFrame, peer_comm(n), &flag, MPI_STATUS_IGNORE);
    if (!flag && !src.frames.empty()) {
      // Its first frame: in (read at the next round, or waiting for memory,
      // which has patience of its own), or arriving for a while yet.
      const FrameRecv& f = src.frames.front();
      int done = 1;
      if (!f.unposted && f.req != MPI_REQUEST_NULL) {
        MPI_Request_get_status(f.req, &done, MPI_STATUS_IGNORE);
        const auto allowed = std::chrono::steady_clock::duration(patience).count() +
                             std::chrono::steady_clock::duration(std::chrono::microseconds(1)).count() *
                                 static_cast<std::int64_t>(std::min<std::uint64_t>(f.announced, kLargestFrame));
        if (!done) done = coarse_now() - f.posted_at < allowed;
      }
      queued = done != 0;
    }
    // A frame of its may sit in a posted receive, where a probe cannot see it,
    // or in the slot before them, waiting for memory (which has patience of
    // its own, as a queued one's).
    const auto c = static_cast<std::size_t>(peers_[n]->comm);
    if (!flag && !queued && c < posted_.size()) {
      const auto& r = posted_[c];
      queued = r.held && r.from[(r.head + kPostedReceives - 1) % kPostedReceives] == n;
      for (unsigned k = 0; k < r.posted && !queued; ++k) {
        int done = 0;
        MPI_Status st;
        MPI_Request_get_status(r.req[(r.head + k) % kPostedReceives], &done, &st);
        queued = done != 0 && st.MPI_SOURCE == peers_[n]->rank;
      }
    }
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
  return !send_reqs_.empty() || !dirty_.empty() || !staging_.empty();
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
  out.hot_polls = hot_polls_.load(std::memory_order_relaxed);
  out.helper_rests = helper_rests_.load(std::memory_order_relaxed);
  out.helper_rest_us = helper_rest_us_.load(std::memory_order_relaxed);
  out.helper_rest_longest_us = helper_rest_longest_us_.load(std::memory_order_relaxed);
  out.helper_rests_cut = helper_rests_cut_.load(std::memory_order_relaxed);
  return out;
}

void Engine::wake() {
  // Taking the lock orders us after a sleeper's last look (it holds the lock
  // from marking itself asleep until it waits); the notify comes after we let
  // go, so the woken thread does not block at once on the lock we hold (which
  // cost the waking thread a second system call to hand the lock over).
  { std::lock_guard lk(sleep_mu_); }
  sleep_cv_.notify_one();
}

void Engine::start_progress_thread(std::function<void()> tick, std::chrono::microseconds tick_period,
                                   std::function<void()> on_activity) {
  stop_.store(false);
  thread_ = std::thread([this, tick = std::move(tick), tick_period, on_activity = std::move(on_activity)]() mutable {
    progress_loop(std::move(tick), tick_period, std::move(on_activity));
  });
  name_thread(thread_, "troupe-progress");
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
  auto last_did = clock::now();
  std::uint64_t helper_rounds = helper_rounds_.load(std::memory_order_relaxed);
  auto rest = kShortestRest;
  // Rests while a helper drives; `counted`: because one drove (not merely
  // because one is there), what the stats count.
  auto rest_while_helped = [&](std::chrono::microseconds r, bool counted) {
    auto bump = [](std::atomic<std::uint64_t>& c, std::uint64_t by) {
      c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
    };
    std::unique_lock lk(sleep_mu_);
    sleeping_.store(true, std::memory_order_seq_cst);
    // The last helper may have stopped since we looked, and seen us awake
    // (Engine::helper_stop): then nobody drives, and we do not rest.
    if (helpers_.load(std::memory_order_seq_cst) > 0 && !stop_.load(std::memory_order_seq_cst)) {
      if (counted) {
        const auto us = static_cast<std::uint64_t>(r.count());
        bump(helper_rests_, 1);
        bump(helper_rest_us_, us);
        if (us > helper_rest_longest_us_.load(std::memory_order_relaxed))
          helper_rest_longest_us_.store(us, std::memory_order_relaxed);
      }
      if (sleep_cv_.wait_for(lk, r) == std::cv_status::no_timeout) bump(helper_rests_cut_, 1);
    }
    sleeping_.store(false, std::memory_order_release);
  };
  auto tick_if_due = [&](clock::time_point now) {
    if (!tick || now < next_tick) return;
    // A loss found here fails the asks to the lost node on this thread, and
    // their continuations run here: one that blocked would stop failure
    // detection (no heartbeats: this node would be declared lost in turn).
    // As on a thread delivering messages, blocking is refused.
    const NoBlockingHere no_blocking("the progress thread (a continuation of an ask failed by a loss it found)");
    try {
      tick();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "troupe: node %u: failure detection tick failed: %s\n", self_, e.what());
    }
    next_tick = now + tick_period;
  };
  while (!stop_.load(std::memory_order_acquire)) {
    const std::uint64_t rounds = helper_rounds_.load(std::memory_order_relaxed);
    const bool helped = rounds != std::exchange(helper_rounds, rounds);  // a helper drove since we last looked
    if (helpers_.load(std::memory_order_acquire) > 0 && helped) {
      // A helper drove the engine since we last looked: leave it to them, run
      // failure detection, look again shortly. (A helper that stopped driving,
      // say a poll task waiting for a worker, changes nothing: we drive.)
      // The longer it has driven, the longer we rest.
      tick_if_due(clock::now());
      rest_while_helped(rest, true);
      rest = std::min(rest * 2, kLongestRest);
      continue;
    }
    rest = kShortestRest;  // no helper drove since we last looked
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
      last_did = now;
      // Traffic is arriving (frames, or the blocks of a large message) and
      // nobody else polls: let the workers poll. They also run the turns that
      // the arrivals made ready, at once; left to the scheduler, with this
      // thread still hot on a rank's one core, the reply to a window of large
      // TCP messages waited ~330 us (median) for its worker (event trace).
      // Not if a helper drove since we last looked: a thread asking in a loop
      // is between two waits, and a poll task would share its core with it
      // (the task's worker then took a third of the asking rank's context
      // switches in the round-trip benchmark).
      if (on_activity && !helped && helpers_.load(std::memory_order_acquire) == 0 &&
          arrivals_.load(std::memory_order_relaxed) != arrived_before) {
        try {
          on_activity();
        } catch (const std::exception& e) {  // escaping, it would end the process
          std::fprintf(stderr, "troupe: node %u: handing polling to the workers failed: %s\n", self_, e.what());
        }
      }
      continue;
    }
    if (helpers_.load(std::memory_order_acquire) > 0) {
      // Someone blocked on a future drives the engine: rest, but stay near.
      rest_while_helped(kShortestRest, false);
      continue;
    }
    ++idle;
    // Busy: stay near for a few hundred rounds. Polling in place holds the
    // core, which pays only while a transfer is under way (MPI moves its bytes
    // inside our calls). Otherwise poll between yields: a thread that shares
    // the core runs first (Open MPI binds each rank to one core when there are
    // cores enough), and a sender's windows of 1-4 KiB tells moved 1.3-1.6x
    // the data (docs/benchmarks.md).
    if (idle < 256 && in_flight_.load(std::memory_order_relaxed)) {
      hot_polls_.store(hot_polls_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      for (int i = 0; i < 16; ++i) TROUPE_CPU_RELAX();
      continue;
    }
    // Blocks wait for staging slots: a slot comes free when MPI says its piece
    // was read, and the next piece is copied then. Napping between those
    // looks stalls the copy loop: stay near, yielding, while the stream moves.
    // Not longer: ranks that share cores and all yield in place starved one
    // another's heartbeats into false node losses (MPICH, 4 ranks on 2 cores,
    // 2 of 10 runs of a test; 0 of 12 when the stay ends 1 ms after the last
    // progress).
    if (idle < 512 || (staging_now_.load(std::memory_order_relaxed) && now - last_did < kStayNearWhileStaging)) {
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
    // (Short of memory, the nap is not cut: the naps between tries of what
    // waits for memory grow to 1 ms.)
    if (in_flight_.load(std::memory_order_seq_cst) && !short_of_memory_.load(std::memory_order_relaxed))
      nap = std::min(nap, kShortestNap);
    // (Short of memory, what is queued waits for the next try: nap anyway.)
    const bool waiting = outq_size_.load() != 0 || open_count_.load() != 0;
    if ((!waiting || short_of_memory_.load(std::memory_order_relaxed)) && !stop_.load()) {
      idle_naps_.fetch_add(1, std::memory_order_relaxed);
      idle_nap_us_.fetch_add(static_cast<std::uint64_t>(nap.count()), std::memory_order_relaxed);
      sleep_cv_.wait_for(lk, nap);
    }
    sleeping_.store(false, std::memory_order_release);
  }
}

}  // namespace troupe::detail
