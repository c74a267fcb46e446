#include "sim.hpp"

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace fault_sim {

namespace {

/// Position of id among the nodes not in `lost` (sorted): index in the live list.
std::uint64_t live_index(const std::vector<std::uint32_t>& lost, std::uint32_t id) {
  return id - static_cast<std::uint64_t>(std::lower_bound(lost.begin(), lost.end(), id) - lost.begin());
}

/// The j-th node (0-based) not in `lost`: j plus the number of lost ids before
/// it, i.e. the number of q with lost[q] - q <= j (non-decreasing in q).
std::uint32_t live_at(const std::vector<std::uint32_t>& lost, std::uint64_t j) {
  std::size_t lo = 0, hi = lost.size();
  while (lo < hi) {
    const std::size_t mid = (lo + hi) / 2;
    if (lost[mid] - mid <= j)
      lo = mid + 1;
    else
      hi = mid;
  }
  return static_cast<std::uint32_t>(j + lo);
}

}  // namespace

// Binomial tree over the nodes not in `lost`, rooted at root: relative index
// i = (index(self) - index(root)) mod m; children at i + 2^k for 2^k > i.
// Same tree as FailureDetector::tree_children, without building the live list.
void tree_children(const std::vector<std::uint32_t>& lost, std::uint32_t n, std::uint32_t root, std::uint32_t self,
                   std::vector<std::uint32_t>& out) {
  out.clear();
  if (std::binary_search(lost.begin(), lost.end(), root) || std::binary_search(lost.begin(), lost.end(), self)) return;
  const std::uint64_t m = n - lost.size();
  const std::uint64_t ri = live_index(lost, root), si = live_index(lost, self);
  const std::uint64_t i = (si + m - ri) % m;
  for (std::uint64_t step = 1; step < m; step <<= 1) {
    if (step <= i) continue;  // children are at distances larger than ours
    if (i + step >= m) break;
    out.push_back(live_at(lost, (ri + i + step) % m));
  }
}

Sim::Sim(const Params& p)
    : p_(p),
      rng_(p.seed),
      sets_(p.n, static_cast<std::uint32_t>(p.count_timeouts.empty() ? p.crashes.size() + 64 : 0)),
      nodes_(p.n),
      counting_(!p.count_timeouts.empty()),
      crashed_(p.n, 0),
      know_(p.n, 0),
      declared_at_(p.n, -1) {
  if (p_.n < 2) throw std::invalid_argument("need at least 2 nodes");
  if (p_.period % p_.tick != 0) throw std::invalid_argument("period must be a multiple of the tick");
  for (std::uint32_t v = 0; v < p_.n; ++v) {
    Node& nd = nodes_[v];
    nd.tick_base = static_cast<Ns>(rng_.below(static_cast<std::uint64_t>(p_.tick)));
    // Random heartbeat phase (nodes start at different moments).
    nd.next_beat = first_tick_at_or_after(nd, static_cast<Ns>(rng_.below(static_cast<std::uint64_t>(p_.period))));
    set_wake(v, nd.tick_base);
  }
  if (p_.stall_p > 0) {
    inbox_.resize(p_.n);
    const double mean_gap = static_cast<double>(p_.period) / p_.stall_p;
    for (std::uint32_t v = 0; v < p_.n; ++v) push(static_cast<Ns>(rng_.exponential(mean_gap)), EvKind::stall, v);
  }
  if (p_.pmix != Pmix::off) {
    poll_phase_.resize(p_.n);
    for (auto& ph : poll_phase_) ph = static_cast<Ns>(rng_.below(static_cast<std::uint64_t>(p_.pmix_period)));
  }
  // Steady state: whole heartbeat periods from the first full one to the crash.
  {
    const Ns last = std::min(p_.crash_time, counting_ ? p_.warmup + p_.duration : p_.warmup);
    steady_end_ = p_.period + std::max<Ns>(0, (last - p_.period) / p_.period) * p_.period;
  }
  if (counting_) {
    fp_counted_.assign(static_cast<std::size_t>(p_.n) * p_.count_timeouts.size(), -1);
    fp_count_.assign(p_.count_timeouts.size(), 0);
    count_from_ = p_.warmup;
    end_ = p_.warmup + p_.duration;
    p_.crash_time = kNever;
  } else {
    for (std::uint32_t x : p_.crashes) crashed_.at(x) = 1;
    survivors_target_ = p_.n - static_cast<std::uint32_t>(p_.crashes.size());
    if (!p_.crashes.empty()) {
      push(p_.crash_time, EvKind::crash, 0);
      end_ = p_.crash_time + p_.max_after;
    } else {
      end_ = p_.warmup;
    }
  }
}

Ns Sim::first_tick_at_or_after(const Node& nd, Ns t) const {
  if (t <= nd.tick_base) return nd.tick_base;
  return nd.tick_base + (t - nd.tick_base + p_.tick - 1) / p_.tick * p_.tick;
}

Ns Sim::stall_length() {
  const double mean = static_cast<double>(p_.stall_mean);
  return static_cast<Ns>(p_.stall_dist == StallDist::exponential ? rng_.exponential(mean)
                                                                    : rng_.pareto(mean, p_.pareto_alpha));
}

std::uint32_t Sim::alloc_msg(const Msg& m) {
  if (!free_msgs_.empty()) {
    const std::uint32_t s = free_msgs_.back();
    free_msgs_.pop_back();
    msgs_[s] = m;
    return s;
  }
  msgs_.push_back(m);
  return static_cast<std::uint32_t>(msgs_.size() - 1);
}

void Sim::free_msg(std::uint32_t slot) {
  sets_.release(msgs_[slot].set);
  free_msgs_.push_back(slot);
}

// ---------------------------------------------------------------------------
// The ring (runtime: FailureDetector::successor / predecessor / tick).

std::uint32_t Sim::successor(std::uint32_t v) const {
  for (std::uint32_t k = 1; k < p_.n; ++k) {
    const std::uint32_t c = (v + k) % p_.n;
    if (!knows_lost(v, c)) return c;
  }
  return v;
}

std::uint32_t Sim::predecessor(std::uint32_t v) const {
  for (std::uint32_t k = 1; k < p_.n; ++k) {
    const std::uint32_t c = (v + p_.n - k) % p_.n;
    if (!knows_lost(v, c)) return c;
  }
  return v;
}

// One tick of v's progress thread. Ticks at which nothing can happen (no
// heartbeat due, no timeout possible) are skipped: the next wake is the first
// tick at which one of them could.
void Sim::tick(std::uint32_t v, Ns now) {
  Node& nd = nodes_[v];
  if (now >= nd.next_beat) {
    const std::uint32_t s = successor(v);
    if (s != v) send(v, s, MsgType::heartbeat, nd.set, v, 0, now);
    nd.next_beat = now + p_.period;
  }
  const std::uint32_t p = predecessor(v);
  if (p != v) {
    if (nd.watching != static_cast<std::int64_t>(p)) {  // a new predecessor: fresh grace period
      nd.watching = p;
      nd.heard = now;
    }
    if (!counting_) {
      if (now - nd.heard > p_.timeout) confirm_lost(v, p, now, Via::detect);
    } else {
      // Each silence counts once per timeout: a declared node would be gone,
      // so nothing is counted again until the predecessor is heard from.
      for (std::size_t j = 0; j < p_.count_timeouts.size(); ++j) {
        Ns& counted = fp_counted_[v * p_.count_timeouts.size() + j];
        if (counted != nd.heard && now - nd.heard > p_.count_timeouts[j]) {
          if (now >= count_from_) ++fp_count_[j];
          counted = nd.heard;
        }
      }
    }
  }
  if (nd.alive) schedule_next_wake(v, now);
}

void Sim::schedule_next_wake(std::uint32_t v, Ns now) {
  const Node& nd = nodes_[v];
  Ns t = first_tick_at_or_after(nd, nd.next_beat);
  if (nd.watching < 0) {
    t = std::min(t, first_tick_at_or_after(nd, now + 1));
  } else if (!counting_) {
    t = std::min(t, first_tick_at_or_after(nd, nd.heard + p_.timeout + 1));
  } else {
    for (std::size_t j = 0; j < p_.count_timeouts.size(); ++j)
      if (fp_counted_[v * p_.count_timeouts.size() + j] != nd.heard)
        t = std::min(t, first_tick_at_or_after(nd, nd.heard + p_.count_timeouts[j] + 1));
  }
  if (t <= now) t = first_tick_at_or_after(nd, now + 1);
  set_wake(v, t);
}

void Sim::set_wake(std::uint32_t v, Ns t) {
  Node& nd = nodes_[v];
  if (nd.wake_at <= t) return;  // an earlier wake is pending; it reschedules
  nd.wake_at = t;
  push(t, EvKind::wake, v, ++nd.wake_gen);
}

// ---------------------------------------------------------------------------
// Messages (runtime: Cluster::handle_control, merge_lost, declare_lost,
// confirm_lost, broadcast_lost).

void Sim::send(std::uint32_t from, std::uint32_t to, MsgType type, SetId s, std::uint32_t root, std::uint32_t hops,
               Ns now) {
  Node& nd = nodes_[from];
  const Ns departs = std::max(now, nd.send_busy) + p_.send_cost;
  nd.send_busy = departs;
  const std::uint64_t bytes = p_.header_bytes + std::uint64_t{p_.id_bytes} * sets_.size(s) +
                              (type == MsgType::lost ? p_.id_bytes : 0);
  if (now >= p_.period && now < steady_end_) {
    if (type == MsgType::heartbeat) ++steady_hb_;
    steady_bytes_ += bytes;
  } else if (now >= p_.crash_time && now < p_.crash_time + kSec) {
    (type == MsgType::heartbeat ? post_hb_ : post_lost_) += 1;
    post_bytes_ += bytes;
  }
  sets_.acquire(s);
  const std::uint32_t slot =
      alloc_msg(Msg{s, from, to, root, static_cast<std::uint16_t>(std::min<std::uint32_t>(hops, 65535)), type});
  push(departs + latency(), EvKind::deliver, to, slot);
}

void Sim::deliver(std::uint32_t slot, Ns now) {
  const Msg m = msgs_[slot];  // copied: handling it may grow msgs_
  Node& nd = nodes_[m.to];
  if (!nd.alive) {  // sent to a dead node: lost on the wire
    free_msg(slot);
    return;
  }
  if (nd.stalled_until > now) {  // the progress thread is descheduled: it waits
    inbox_[m.to].push_back(slot);
    return;
  }
  receive(m.to, m, now);
  free_msg(slot);
}

void Sim::receive(std::uint32_t v, const Msg& m, Ns now) {
  if (knows_lost(v, m.from)) return;  // no traffic with lost nodes (Engine::mark_lost)
  Node& nd = nodes_[v];
  if (nd.watching == static_cast<std::int64_t>(m.from)) nd.heard = std::max(nd.heard, now);  // any message counts
  if (m.type == MsgType::lost) {
    ++lost_recv_;
    lost_recv_bytes_ += p_.header_bytes + std::uint64_t{p_.id_bytes} * (sets_.size(m.set) + 1);
  }
  merge(v, m.set, now, m.type == MsgType::lost ? Via::tree : Via::ring, m.hops);
  if (!nd.alive) return;
  if (m.type == MsgType::lost) forward(v, m.root, m.set, m.hops + 1u, now);  // our part of the root's tree
}

void Sim::merge(std::uint32_t v, SetId s, Ns now, Via via, std::uint32_t hops) {
  Node& nd = nodes_[v];
  if (sets_.subset(s, nd.set)) return;  // nothing new
  tmp_ids_.clear();
  sets_.difference(s, nd.set, tmp_ids_);
  const SetId old = nd.set;
  if (sets_.subset(old, s)) {  // the sender knows everything we know: share its snapshot
    sets_.acquire(s);
    nd.set = s;
  } else {
    nd.set = sets_.unite(old, s);
  }
  sets_.release(old);
  for (std::uint32_t id : tmp_ids_)  // learn() does not touch tmp_ids_
    if (!learn(v, id, now, via, hops)) break;
}

// v has just added id to its lost set (declare_lost). False: v learnt that it
// was itself declared lost, and stopped.
bool Sim::learn(std::uint32_t v, std::uint32_t id, Ns now, Via via, std::uint32_t hops) {
  Node& nd = nodes_[v];
  if (id == v) {  // Cluster::expelled(): a lost node stays lost, so it exits
    nd.alive = false;
    ++r_.expelled;
    --survivors_target_;
    return false;
  }
  if (crashed_[id]) {
    switch (via) {
      case Via::detect: ++r_.learned_by_detect; break;
      case Via::tree:
        ++r_.learned_by_tree;
        r_.max_tree_hops = std::max(r_.max_tree_hops, hops);
        break;
      case Via::ring: ++r_.learned_by_ring; break;
      case Via::pmix: ++r_.learned_by_pmix; break;
    }
    if (++know_[id] == survivors_target_) {
      if (++fully_known_ == p_.crashes.size()) {
        all_known_at_ = now;
        // Run on for one more timeout (plus slack) to catch declarations the
        // news itself could cause, and at least a second for the traffic figures.
        end_ = std::max(now + p_.timeout + p_.period + 2 * p_.tick, p_.crash_time + kSec);
      }
    }
  }
  if (nd.watching == static_cast<std::int64_t>(id)) {  // FailureDetector::on_lost: re-chosen at the next tick
    nd.watching = -1;
    set_wake(v, first_tick_at_or_after(nd, now + 1));
  }
  return true;
}

void Sim::confirm_lost(std::uint32_t v, std::uint32_t p, Ns now, Via via) {
  if (knows_lost(v, p)) return;
  Node& nd = nodes_[v];
  ++r_.broadcasts;
  if (!crashed_[p])
    ++r_.false_declarations;
  else if (declared_at_[p] < 0)
    declared_at_[p] = now;
  const SetId old = nd.set;
  nd.set = sets_.with(old, p);
  sets_.release(old);
  learn(v, p, now, via, 0);
  forward(v, v, nd.set, 1, now);  // the root of a new tree, carrying all it knows
}

// Our part of root's tree (Cluster::broadcast_lost): everyone computes the same
// tree from the set in the message; children this node already knows lost are
// skipped (the ring tells their subtrees).
void Sim::forward(std::uint32_t u, std::uint32_t root, SetId s, std::uint32_t hops, Ns now) {
  tree_children(sets_.sorted(s), p_.n, root, u, children_);
  for (std::uint32_t child : children_)
    if (!knows_lost(u, child)) send(u, child, MsgType::lost, s, root, hops, now);
}

// ---------------------------------------------------------------------------
// Faults, stalls, launcher polls.

void Sim::on_crash(Ns now) {
  for (std::uint32_t x : p_.crashes) nodes_[x].alive = false;
  if (p_.pmix == Pmix::off) return;
  // Polls before the crash find nothing, so they start here.
  for (std::uint32_t v = 0; v < p_.n; ++v) {
    if (!nodes_[v].alive) continue;
    const Ns ph = poll_phase_[v];
    push(ph + (now - ph + p_.pmix_period - 1) / p_.pmix_period * p_.pmix_period, EvKind::poll, v);
  }
}

void Sim::on_poll(std::uint32_t v, Ns now) {
  Node& nd = nodes_[v];
  if (!nd.alive) return;
  if (nd.stalled_until <= now) {
    if (p_.pmix == Pmix::watcher) {  // is my predecessor still in the launcher's table?
      const std::uint32_t p = predecessor(v);
      if (p != v && !nodes_[p].alive) confirm_lost(v, p, now, Via::pmix);
    } else {  // every death seen there that this node has not heard of yet
      for (std::uint32_t x : p_.crashes)
        if (nd.alive && !knows_lost(v, x)) confirm_lost(v, x, now, Via::pmix);
    }
  }
  push(now + p_.pmix_period, EvKind::poll, v);
}

void Sim::on_stall(std::uint32_t v, Ns now) {
  Node& nd = nodes_[v];
  if (!nd.alive) return;
  ++r_.stalls;
  nd.stalled_until = now + std::max<Ns>(1, stall_length());
  nd.wake_at = kNever;
  ++nd.wake_gen;  // pending ticks are void; the thread resumes with a tick
  push(nd.stalled_until, EvKind::resume, v);
}

void Sim::on_resume(std::uint32_t v, Ns now) {
  Node& nd = nodes_[v];
  nd.stalled_until = 0;
  if (!nd.alive) return;
  // The progress loop drains what arrived, then ticks (Engine::progress_loop).
  nd.tick_base = now;
  std::vector<std::uint32_t> box;
  box.swap(inbox_[v]);
  for (std::uint32_t slot : box) {
    const Msg m = msgs_[slot];
    if (nd.alive) receive(v, m, now);
    free_msg(slot);
  }
  if (!nd.alive) return;
  tick(v, now);
  push(now + static_cast<Ns>(rng_.exponential(static_cast<double>(p_.period) / p_.stall_p)), EvKind::stall, v);
}

// ---------------------------------------------------------------------------

RunResult Sim::run() {
  const auto wall0 = std::chrono::steady_clock::now();
  Ns now = 0;
  while (!q_.empty()) {
    const Event e = q_.pop();
    if (static_cast<Ns>(e.t) > end_) break;
    now = static_cast<Ns>(e.t);
    ++r_.events;
    switch (e.kind) {
      case EvKind::wake: {
        Node& nd = nodes_[e.node];
        if (!nd.alive || e.aux != nd.wake_gen || nd.stalled_until > now) break;
        nd.wake_at = kNever;
        tick(e.node, now);
        break;
      }
      case EvKind::deliver: deliver(e.aux, now); break;
      case EvKind::crash: on_crash(now); break;
      case EvKind::stall: on_stall(e.node, now); break;
      case EvKind::resume: on_resume(e.node, now); break;
      case EvKind::poll: on_poll(e.node, now); break;
    }
  }
  const Ns stop = now;  // the last event handled
  r_.sim_seconds = static_cast<double>(stop) / kSec;

  // Agreement: every survivor ends with the same lost set, equal to the dead.
  std::int64_t first = -1;
  r_.agree = true;
  for (std::uint32_t v = 0; v < p_.n; ++v) {
    if (!nodes_[v].alive) continue;
    ++r_.survivors;
    if (first < 0)
      first = v;
    else if (!sets_.equal(nodes_[v].set, nodes_[first].set))
      r_.agree = false;
  }
  if (first >= 0) {
    const SetId s = nodes_[first].set;
    r_.final_set_size = sets_.size(s);
    bool exact = r_.agree && r_.final_set_size == p_.crashes.size() && r_.expelled == 0;
    for (std::uint32_t x : p_.crashes) exact = exact && sets_.contains(s, x);
    r_.exact = exact;
  }

  const double n = p_.n;
  const double steady_window = static_cast<double>(std::min(steady_end_, stop) - p_.period) / kSec;
  if (steady_window > 0) {
    r_.steady_hb_msgs_per_node_s = static_cast<double>(steady_hb_) / n / steady_window;
    r_.steady_bytes_per_node_s = static_cast<double>(steady_bytes_) / n / steady_window;
  }
  if (!counting_ && !p_.crashes.empty()) {
    const double post_window = static_cast<double>(std::min<Ns>(kSec, stop - p_.crash_time)) / kSec;
    if (post_window > 0) {
      r_.post_hb_msgs_per_node_s = static_cast<double>(post_hb_) / n / post_window;
      r_.post_msgs_per_node_s = static_cast<double>(post_hb_ + post_lost_) / n / post_window;
      r_.post_bytes_per_node_s = static_cast<double>(post_bytes_) / n / post_window;
    }
    if (r_.survivors > 0) {
      r_.lost_msgs_per_survivor = static_cast<double>(lost_recv_) / r_.survivors;
      r_.lost_bytes_per_survivor = static_cast<double>(lost_recv_bytes_) / r_.survivors;
    }
    Ns lo = kNever, hi = -1;
    bool all = true;
    for (std::uint32_t x : p_.crashes) {
      if (declared_at_[x] < 0) {
        all = false;
        continue;
      }
      lo = std::min(lo, declared_at_[x]);
      hi = std::max(hi, declared_at_[x]);
    }
    if (hi >= 0) r_.detect_first_ms = static_cast<double>(lo - p_.crash_time) / kMs;
    if (all && hi >= 0) r_.detect_last_ms = static_cast<double>(hi - p_.crash_time) / kMs;
    if (all_known_at_ >= 0) r_.all_know_ms = static_cast<double>(all_known_at_ - p_.crash_time) / kMs;
  }
  if (counting_) {
    r_.would_declare = fp_count_;
    r_.node_hours = n * static_cast<double>(p_.duration) / kSec / 3600.0;
  }
  r_.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return r_;
}

}  // namespace fault_sim
