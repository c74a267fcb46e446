#include "cluster.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <cereal/types/vector.hpp>

#include "core/memory_patience.hpp"
#include "troupe/detail/core.hpp"

namespace troupe::detail {

namespace {

/// A new list: `list`'s listeners, then `fn`.
template <class Fn>
std::shared_ptr<const std::vector<Fn>> appended(const std::shared_ptr<const std::vector<Fn>>& list, Fn fn) {
  auto next = list ? std::make_shared<std::vector<Fn>>(*list) : std::make_shared<std::vector<Fn>>();
  next->push_back(std::move(fn));
  return next;
}

}  // namespace

using std::chrono::steady_clock;

Cluster::Cluster(Core& core, Engine& engine, std::vector<NodeInfo> nodes, std::size_t capacity)
    : core_(core),
      engine_(engine),
      self_(engine.self()),
      info_(std::move(nodes)),
      capacity_(std::max(capacity != 0 ? capacity : info_.size() + kSpareNodes, info_.size())),
      count_(info_.size()),
      alive_(new std::atomic<bool>[capacity_]),
      sent_(new std::atomic<std::uint64_t>[capacity_]),
      delivered_(new std::atomic<std::uint64_t>[capacity_]) {
  for (std::size_t i = 0; i < capacity_; ++i) {
    alive_[i].store(i < info_.size() && info_[i].alive);
    sent_[i].store(0);
    delivered_[i].store(0);
  }
  // A node that joined later learns of the losses before it as it starts.
  for (std::size_t i = 0; i < info_.size(); ++i)  // (a node's id is its place in info_)
    if (!info_[i].alive) losses_handled_.fetch_add(loss_mark(static_cast<NodeId>(i)), std::memory_order_relaxed);
  // The termination protocol's per-node state, sized once: a probe that
  // finds no room would be dropped, and a wave that cannot open would leave
  // finish() waiting, for want of memory.
  probes_.resize(capacity_);
  replies_.reserve(capacity_);
  acked_.reserve(capacity_);
  std::unique_ptr<PmixProbe> probe;
  const char* no_pmix = std::getenv("TROUPE_PMIX");
  // Not on a node that joined later: its MPI_COMM_WORLD is not the launcher's job.
  if (core_.config().use_pmix && !engine_.joined() && !(no_pmix != nullptr && std::string(no_pmix) == "0"))
    probe = std::make_unique<PmixProbe>(engine_.world_ranks());
  detector_ = std::make_unique<FailureDetector>(*this, core_.config().heartbeat_period,
                                                core_.config().heartbeat_timeout, std::move(probe));
}

HybridClock& Cluster::clock() noexcept { return core_.clock(); }

void Cluster::add_nodes(const std::vector<NodeInfo>& all) {
  if (all.size() > capacity_) throw Error("troupe: no room for more nodes");
  std::lock_guard lk(mu_);
  const std::size_t before = count_.load();
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (i < info_.size()) {
      if (i >= before) info_[i] = all[i];
      continue;
    }
    info_.push_back(all[i]);
  }
  // (Work counters are not reset: ids are never reused, and traffic from a
  // new node may already have been counted.)
  for (std::size_t i = before; i < all.size(); ++i) alive_[i].store(true);
  count_.store(all.size(), std::memory_order_release);
  cv_.notify_all();
}

ClusterState Cluster::state() const {
  std::lock_guard lk(mu_);
  auto nodes = info_;
  for (auto& n : nodes) n.alive = alive(n.id);
  return ClusterState(std::move(nodes));
}

bool Cluster::wait(const std::function<bool(const ClusterState&)>& pred, steady_clock::time_point deadline) {
  while (true) {
    if (pred(state())) return true;
    if (steady_clock::now() >= deadline) return false;
    if (!engine_.progress()) {
      std::unique_lock lk(mu_);
      cv_.wait_for(lk, std::chrono::microseconds(500));
    }
  }
}

NodeId Cluster::next_alive(NodeId n) const noexcept {
  const auto count = static_cast<NodeId>(size());
  for (NodeId step = 1; step < count; ++step)
    if (const NodeId m = (n + step) % count; alive(m)) return m;
  return n;
}

void Cluster::send_control(NodeId to, Control type, const std::function<void(WireOutputArchive&)>& body, bool work) {
  if (!alive(to)) return;
  // Termination was declared: the others may be finalizing MPI already.
  if (done_.load() && type != Control::finish_ack && type != Control::finish_done) return;
  auto e = std::make_unique<OutEnvelope>();  // (nothing of it is kept if what follows throws)
  e->dest = to;
  e->work = work;
  EnvelopeWriter w(e->bytes);
  w.begin(Kind::control, self_, 0, 0, static_cast<std::uint64_t>(type), clock().now().raw, work ? kFlagWork : 0);
  {
    WireOutputArchive ar(e->bytes, nullptr);
    if (body) body(ar);
  }
  w.finish(nullptr, 0);
  if (work) count_sent(to);
  engine_.send(e.release());
}

bool Cluster::send_control_patiently(NodeId to, Control type, const std::function<void(WireOutputArchive&)>& body) {
  return retry_while_short_of_memory([&] { send_control(to, type, body); }, [] { return true; });
}

void Cluster::nodes_added(const std::vector<NodeId>& fresh) {
  InHandler in(*this);  // before the copy, as for the extra control handler
  decltype(added_listeners_) listeners;
  {
    std::lock_guard lk(mu_);
    listeners = added_listeners_;
  }
  if (listeners)
    for (auto& l : *listeners) l(fresh);
}

void Cluster::on_added(std::function<void(const std::vector<NodeId>&)> listener) {
  std::lock_guard lk(mu_);
  added_listeners_ = appended(added_listeners_, std::move(listener));
}

void Cluster::set_extra_control(std::function<void(NodeId, std::uint64_t, WireInputArchive&)> handler) {
  {
    std::lock_guard lk(mu_);
    extra_control_ = handler;
    replaying_ = static_cast<bool>(handler);
  }
  if (!handler) {
    while (handler_calls_.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
    return;
  }
  // The messages that came first, in order; what comes meanwhile joins the
  // stash (run at once by its delivering thread, it could overtake them).
  while (true) {
    std::vector<Stashed> early;
    {
      std::lock_guard lk(mu_);
      if (stash_.empty()) {
        replaying_ = false;
        return;
      }
      early.swap(stash_);
    }
    for (auto& m : early) {
      try {  // one that fails must not leave the later ones stashed for good
        WireInputArchive ar(m.payload->data(), m.payload->size(), WireInputArchive::InlineBlocks{});
        handler(m.from, m.type, ar);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "troupe: node %u: a control message from node %u failed: %s\n", self_, m.from, e.what());
      }
    }
  }
}

void Cluster::on_control_bytes(NodeId from, std::uint64_t type, std::shared_ptr<ByteBuffer> payload) {
  if (type >= static_cast<std::uint64_t>(Control::replicate)) {
    std::lock_guard lk(mu_);
    if (!extra_control_ || replaying_) {
      stash_.push_back(Stashed{from, type, std::move(payload)});
      return;
    }
  }
  WireInputArchive ar(payload->data(), payload->size(), WireInputArchive::InlineBlocks{});
  on_control(from, type, ar);
}

void Cluster::on_control(NodeId from, std::uint64_t type, WireInputArchive& ar) {
  switch (static_cast<Control>(type)) {
    case Control::finish_probe: {
      std::uint64_t wave = 0;
      ar(wave);
      std::lock_guard lk(mu_);
      if (from < probes_.size()) probes_[from] = wave;  // probes from one node come in order: the latest is the one to answer
      break;
    }
    case Control::finish_status: {
      std::uint64_t wave = 0;
      Status st;
      ar(wave, st.in_finish, st.idle, st.sent, st.delivered, st.lost);
      std::lock_guard lk(mu_);
      if (wave_open_ && wave == wave_ && from < replies_.size()) replies_[from] = st;
      break;
    }
    case Control::finish_done: {
      std::uint64_t wave = 0;
      ar(wave);
      const bool first = !done_.exchange(true);
      // Passed on once, to the next live node but the one it came from: if
      // the coordinator dies while it tells everyone, the nodes it missed hear
      // it along the ring, rather than take the nodes that heard it, and
      // finished, for lost (the node after the coordinator too, which the last
      // node reaches past it). First, and each send waiting out a shortage
      // on its own: once done_ is set nothing else tells the others.
      NodeId next = next_alive(self_);
      if (next == from) next = next_alive(next);
      if (first && next != self_ && next != from)
        send_control_patiently(next, Control::finish_done, [wave](WireOutputArchive& out) { out(wave); });
      send_control_patiently(from, Control::finish_ack, nullptr);
      // The coordinator waits (boundedly) for every node's ack: one that
      // heard it along the ring first acks the coordinator too, as it may
      // have finished by the time the coordinator's own notice comes.
      if (const NodeId c = coordinator(); first && c != from && c != self_)
        send_control_patiently(c, Control::finish_ack, nullptr);
      break;
    }
    case Control::finish_ack: {
      std::lock_guard lk(mu_);
      if (from < acked_.size()) acked_[from] = true;
      break;
    }
    case Control::heartbeat: {
      std::vector<NodeId> lost;
      ar(lost);
      merge_lost(lost);  // anti-entropy: news the tree may have missed
      break;
    }
    case Control::leaving:
      if (alive(from)) {
        std::fprintf(stderr, "troupe: node %u: node %u is lost (its runtime went without finish())\n", self_, from);
        declare_lost(from);  // a node its notice missed learns it from the heartbeats' lost sets
      }
      break;
    case Control::lost: {
      NodeId root = 0;
      std::vector<NodeId> lost;
      ar(root, lost);
      merge_lost(lost);
      broadcast_lost(root, lost);  // our part of the root's tree
      break;
    }
    default: {
      std::function<void(NodeId, std::uint64_t, WireInputArchive&)> h;
      InHandler in(*this);  // before the copy: set_extra_control(nullptr) then waits for the call
      {
        std::lock_guard lk(mu_);
        h = extra_control_;
      }
      if (h) h(from, type, ar);  // otherwise: a type from a newer peer, ignored
      break;
    }
  }
  cv_.notify_all();
}

void Cluster::declare_lost(NodeId n) {
  if (n >= size() || n == self_) return;
  declaring_.fetch_add(1, std::memory_order_seq_cst);  // before the node leaves the sums
  struct Declared {  // on every way out, after the work the loss made is counted
    Cluster& c;
    NodeId n;
    bool handled = false;
    ~Declared() {
      if (handled) c.losses_handled_.fetch_add(loss_mark(n), std::memory_order_seq_cst);
      c.declaring_.fetch_sub(1, std::memory_order_seq_cst);
    }
  } declared{*this, n};
  if (!alive_[n].exchange(false)) return;
  declared.handled = true;
  engine_.mark_lost(n);
  detector_->on_lost(n, steady_clock::now());
  // Counted before the copy, as a call of the extra control handler is: an
  // owner that goes meanwhile (its listener then finds it gone) either waits
  // for this call, or has gone before the copy is made, and the listener sees so.
  InHandler in(*this);
  decltype(lost_listeners_) listeners;
  {
    std::lock_guard lk(mu_);
    info_[n].alive = false;
    listeners = lost_listeners_;
  }
  if (listeners) {
    // Each listener handles its part of the loss whatever another's does.
    for (auto& l : *listeners) {
      try {
        l(n);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "troupe: node %u: handling the loss of node %u failed: %s\n", self_, n, e.what());
      } catch (...) {
        std::fprintf(stderr, "troupe: node %u: handling the loss of node %u failed\n", self_, n);
      }
    }
  }
  cv_.notify_all();
}

std::vector<NodeId> Cluster::lost_set() const {
  std::vector<NodeId> out;
  for (NodeId n = 0; n < size(); ++n)
    if (!alive(n)) out.push_back(n);
  return out;
}

bool Cluster::merge_lost(const std::vector<NodeId>& lost) {
  bool news = false;
  for (NodeId n : lost) {
    if (n == self_) {
      // It told them so itself (leave()), or it has finished: a survivor
      // that missed the end and took finished nodes for lost must not make
      // one that finished fail.
      if (left_.load() || done_.load()) continue;
      expelled();
    }
    if (n < size() && alive(n)) {
      declare_lost(n);
      news = true;
    }
  }
  return news;
}

void Cluster::confirm_lost(NodeId n, const std::string& why) {
  if (!alive(n)) return;
  std::fprintf(stderr, "troupe: node %u: node %u is lost (%s)\n", self_, n, why.c_str());
  declare_lost(n);
  broadcast_lost(self_, lost_set());
}

void Cluster::broadcast_lost(NodeId root, const std::vector<NodeId>& lost) {
  // The tree is over the nodes the root did not know lost, so every receiver
  // computes the same one from the message alone.
  std::vector<NodeId> live;
  for (NodeId n = 0; n < size(); ++n)
    if (!std::binary_search(lost.begin(), lost.end(), n)) live.push_back(n);
  for (NodeId child : FailureDetector::tree_children(live, root, self_)) {
    if (!alive(child)) continue;  // found lost since: the ring will tell its subtree
    send_control(child, Control::lost, [&](WireOutputArchive& ar) { ar(root, lost); });
  }
}

void Cluster::send_heartbeat(NodeId to) {
  auto lost = lost_set();
  send_control(to, Control::heartbeat, [&](WireOutputArchive& ar) { ar(lost); });
}

void Cluster::tick() {
  if (done_.load() || left_.load()) return;
  // A node declared lost stays lost: told so by a node that still hears it,
  // it stops; one that still sends after being declared lost is told so, at
  // most once a second.
  if (engine_.expel_received()) expelled();
  for (NodeId n : engine_.newly_broken()) confirm_lost(n, "its messages can no longer be exchanged in order");
  const auto now = steady_clock::now();
  for (NodeId n : engine_.lost_but_heard()) {
    if (n >= next_expel_.size()) next_expel_.resize(n + 1);
    if (now < next_expel_[n]) continue;
    next_expel_[n] = now + std::chrono::seconds(1);
    engine_.send_expel(n);
  }
  detector_->tick(now);
}

void Cluster::leave(std::chrono::milliseconds limit) {
  if (done_.load() || left_.exchange(true)) return;
  for (NodeId n = 0; n < size(); ++n)
    if (n != self_ && alive(n)) send_control(n, Control::leaving, nullptr);
  // A lost node's sends are abandoned, so only a live but slow one can make
  // this wait, and only until the limit.
  const auto deadline = steady_clock::now() + limit;
  while (steady_clock::now() < deadline) {
    engine_.progress();
    if (!engine_.sends_pending()) break;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void Cluster::expelled() {
  std::fprintf(stderr,
               "troupe: node %u: the other nodes declared this node lost (it was silent for longer than the "
               "heartbeat timeout); a lost node stays lost, so it stops now\n",
               self_);
  std::fflush(stderr);
  std::_Exit(70);
}

void Cluster::on_lost(std::function<void(NodeId)> listener) {
  std::lock_guard lk(mu_);
  lost_listeners_ = appended(lost_listeners_, std::move(listener));
}

std::optional<std::uint64_t> Cluster::unanswered_probe(NodeId n) const {
  std::lock_guard lk(mu_);
  return n < probes_.size() ? probes_[n] : std::nullopt;
}

NodeId Cluster::coordinator() const {
  for (NodeId n = 0; n < size(); ++n)
    if (alive(n)) return n;
  return self_;
}

Cluster::Status Cluster::local_status() const {
  Status st;
  st.in_finish = in_finish_.load();
  // Read first: a loss declared meanwhile changes the sums below.
  const bool declaring = declaring_.load(std::memory_order_seq_cst) != 0;
  st.lost = losses_handled_.load(std::memory_order_seq_cst);
  const bool quiet = engine_.quiet();  // first: a delivery in progress counts until it is done
  st.idle = !declaring && quiet && core_.outstanding() == 0;
  for (NodeId n = 0; n < size(); ++n) {
    if (!alive(n)) continue;
    st.sent += sent_[n].load(std::memory_order_relaxed);
    st.delivered += delivered_[n].load(std::memory_order_relaxed);
  }
  return st;
}

void Cluster::run_coordinator(steady_clock::time_point now) {
  std::unique_lock lk(mu_);
  if (!wave_open_) {
    if (now < next_wave_) return;
    ++wave_;
    wave_open_ = true;
    replies_.assign(size(), std::nullopt);  // within its capacity: allocates nothing
    const auto wave = wave_;
    lk.unlock();
    auto mine = local_status();
    try {
      for (NodeId n = 0; n < size(); ++n)
        if (n != self_ && alive(n)) send_control(n, Control::finish_probe, [wave](WireOutputArchive& ar) { ar(wave); });
    } catch (const std::bad_alloc&) {
      // A node not probed would never answer: the wave closes, and the next
      // one, a gap later, asks everyone again (late answers to this one are
      // ignored).
      lk.lock();
      if (wave_open_ && wave_ == wave) {
        wave_open_ = false;
        next_wave_ = now + wave_gap_;
      }
      return;
    }
    lk.lock();
    if (wave_open_ && wave_ == wave) replies_[self_] = mine;
    return;
  }
  const auto verdict = tally_.judge(replies_, self_, [this](NodeId n) { return alive(n); });
  if (verdict == TerminationTally::Verdict::incomplete) return;
  wave_open_ = false;
  switch (verdict) {
    case TerminationTally::Verdict::done: {
      const auto wave = wave_;
      acked_.assign(size(), false);  // within its capacity: allocates nothing
      lk.unlock();
      int told = 0;
      for (NodeId n = 0; n < size(); ++n) {
        if (n == self_ || !alive(n)) continue;
        if (told++ == die_after_done_.load()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(300));  // what was told leaves first
          ::kill(::getpid(), SIGKILL);
        }
        // Each waits out a shortage on its own; one never sent is heard
        // along the ring (finish_done is passed on).
        send_control_patiently(n, Control::finish_done, [wave](WireOutputArchive& ar) { ar(wave); });
      }
      done_.store(true);
      return;
    }
    case TerminationTally::Verdict::again_now:
      next_wave_ = now;
      return;
    default:
      next_wave_ = now + wave_gap_;
      wave_gap_ = std::min(wave_gap_ * 2, std::chrono::microseconds(20000));
      return;
  }
}

void Cluster::finish() {
  in_finish_.store(true);
  // The progress thread moves the messages; this thread only runs the
  // protocol, and sleeps between steps.
  while (!done_.load()) {
    bool did = false;
    const auto now = steady_clock::now();
    if (coordinator() == self_) {
      run_coordinator(now);
    } else {
      std::optional<std::pair<NodeId, std::uint64_t>> answer;
      {
        std::lock_guard lk(mu_);
        const NodeId c = coordinator();
        if (c < probes_.size() && probes_[c]) answer = std::make_pair(c, *probes_[c]);
      }
      if (answer) {
        auto st = local_status();
        const NodeId c = answer->first;  // (not a structured binding: clang 14 cannot capture one)
        const std::uint64_t wave = answer->second;
        try {
          send_control(c, Control::finish_status, [&](WireOutputArchive& ar) {
            ar(wave, st.in_finish, st.idle, st.sent, st.delivered, st.lost);
          });
          // Answered: the slot is cleared, unless a later probe took it meanwhile.
          std::lock_guard lk(mu_);
          if (probes_[c] == wave) probes_[c].reset();
          did = true;
        } catch (const std::bad_alloc&) {
          // Not answered: the probe stays, and is answered at the next step.
        }
      }
    }
    if (!did && !done_.load()) {
      std::unique_lock lk(mu_);
      cv_.wait_for(lk, std::chrono::microseconds(200));
    }
  }
  // The coordinator waits (boundedly) until every live node has its notice;
  // everyone makes sure its last messages have left.
  const auto deadline = steady_clock::now() + std::chrono::seconds(5);
  while (steady_clock::now() < deadline) {
    engine_.progress();
    bool pending = engine_.sends_pending();
    if (coordinator() == self_) {
      std::lock_guard lk(mu_);
      for (NodeId n = 0; n < acked_.size(); ++n)
        if (n != self_ && alive(n) && !acked_[n]) pending = true;
    }
    if (!pending) break;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace troupe::detail
