// Discrete-event model of troupe's failure detector (runtime/cluster/):
// heartbeat ring, binomial-tree failure news, anti-entropy on heartbeats,
// and optional launcher (PMIx) polling. One Sim object is one run.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "event_queue.hpp"
#include "lost_sets.hpp"
#include "rng.hpp"

namespace fault_sim {

using Ns = std::int64_t;
constexpr Ns kUs = 1000;
constexpr Ns kMs = 1000 * kUs;
constexpr Ns kSec = 1000 * kMs;
constexpr Ns kNever = std::numeric_limits<Ns>::max() / 4;

enum class Pmix { off, watcher, all };
enum class StallDist { exponential, pareto };

struct Params {
  std::uint32_t n = 1000;
  // The detector (troupe::Config::heartbeat_period / heartbeat_timeout) and the
  // progress thread's tick (the detector runs on it, every 10 ms).
  Ns period = 100 * kMs;
  Ns timeout = 600 * kMs;
  Ns tick = 10 * kMs;
  // Network: per hop a lognormal latency (median, shape) after the sender's
  // CPU has spent send_cost on the message; a node's sends are serialised.
  Ns latency_median = 5 * kUs;
  double latency_sigma = 0.5;
  Ns send_cost = 2 * kUs;
  // Wire sizes.
  std::uint32_t header_bytes = 64;
  std::uint32_t id_bytes = 4;
  // Launcher process table (PMIx): off, only the watcher acts on it, or every
  // node acts on any death it sees there.
  Pmix pmix = Pmix::off;
  Ns pmix_period = 50 * kMs;
  Ns pmix_cost = 750 * kUs;  // CPU per poll (reported, not simulated)
  // Progress-thread stalls (oversubscribed ranks): stalls start as a Poisson
  // process with stall_p expected stalls per heartbeat period while running.
  double stall_p = 0.0;
  Ns stall_mean = 30 * kMs;
  StallDist stall_dist = StallDist::exponential;
  double pareto_alpha = 3.0;
  // Counting mode (false-positive study): when non-empty, nothing is ever
  // declared; each watcher just counts, for every timeout in this list, the
  // moments it would have declared its (live) predecessor lost.
  std::vector<Ns> count_timeouts;
  Ns duration = 0;  // counting mode: simulated time after warm-up
  // Faults.
  std::vector<std::uint32_t> crashes;  // all die at crash_time
  Ns crash_time = kNever;
  Ns warmup = 300 * kMs;
  Ns max_after = 20 * kSec;  // give up if news has not converged by then
  std::uint64_t seed = 1;
};

struct RunResult {
  // Failure runs.
  double detect_first_ms = -1;  // death -> first declaration of a dead node
  double detect_last_ms = -1;   // death -> the last dead node is declared
  double all_know_ms = -1;      // death -> every survivor knows every dead node
  std::uint32_t max_tree_hops = 0;     // deepest tree hop that taught a survivor news
  std::uint64_t learned_by_tree = 0;   // (survivor, dead node) pairs learnt per way
  std::uint64_t learned_by_ring = 0;
  std::uint64_t learned_by_pmix = 0;   // incl. a watcher's own declaration after a poll
  std::uint64_t learned_by_detect = 0;
  std::uint64_t broadcasts = 0;        // trees started (= declarations)
  std::uint64_t false_declarations = 0;
  std::uint64_t expelled = 0;          // live nodes that found themselves declared lost
  bool agree = false;                  // all survivors ended with the same set
  bool exact = false;                  // ... and it is exactly the set of dead nodes
  std::uint32_t final_set_size = 0;
  std::uint32_t survivors = 0;
  std::uint32_t longest_dead_run = 0;  // most consecutive dead ids on the ring (set by the caller)
  // Traffic. Steady state: whole periods in [period, crash) (or the whole counting run).
  double steady_hb_msgs_per_node_s = 0, steady_bytes_per_node_s = 0;
  // The second after the crash.
  double post_msgs_per_node_s = 0, post_hb_msgs_per_node_s = 0, post_bytes_per_node_s = 0;
  double lost_msgs_per_survivor = 0, lost_bytes_per_survivor = 0;  // whole run
  // Counting mode: per entry of count_timeouts.
  std::vector<std::uint64_t> would_declare;
  double node_hours = 0;
  std::uint64_t stalls = 0;
  // Cost of the simulation itself.
  std::uint64_t events = 0;
  double sim_seconds = 0;
  double wall_seconds = 0;
};

/// The children of `self` in the failure-news tree rooted at `root` over the
/// nodes 0..n-1 not in `lost` (sorted); empty if root or self is in `lost`.
void tree_children(const std::vector<std::uint32_t>& lost, std::uint32_t n, std::uint32_t root, std::uint32_t self,
                   std::vector<std::uint32_t>& out);

class Sim {
 public:
  explicit Sim(const Params& p);
  RunResult run();

 private:
  enum class MsgType : std::uint8_t { heartbeat, lost };
  enum class Via : std::uint8_t { detect, tree, ring, pmix };

  struct Node {
    SetId set = 0;            // what this node knows lost
    Ns tick_base = 0;         // the progress thread ticks at tick_base + k*tick
    Ns next_beat = 0;         // next heartbeat due (runtime: next_beat_)
    Ns heard = 0;             // max(last heard from `watching`, watch_since)
    Ns stalled_until = 0;     // > now while descheduled
    Ns send_busy = 0;         // the sender's CPU is busy until then
    Ns wake_at = kNever;      // the pending (valid) wake, if any
    std::uint32_t wake_gen = 0;
    std::int64_t watching = -1;  // the predecessor being watched, -1: re-choose at next tick
    bool alive = true;
  };

  struct Msg {
    SetId set;
    std::uint32_t from, to, root;
    std::uint16_t hops;
    MsgType type;
  };

  // Protocol.
  void tick(std::uint32_t v, Ns now);
  void schedule_next_wake(std::uint32_t v, Ns now);
  void set_wake(std::uint32_t v, Ns t);
  void receive(std::uint32_t v, const Msg& m, Ns now);
  void merge(std::uint32_t v, SetId s, Ns now, Via via, std::uint32_t hops);
  bool learn(std::uint32_t v, std::uint32_t id, Ns now, Via via, std::uint32_t hops);
  void confirm_lost(std::uint32_t v, std::uint32_t p, Ns now, Via via);
  void forward(std::uint32_t u, std::uint32_t root, SetId s, std::uint32_t hops, Ns now);
  void send(std::uint32_t from, std::uint32_t to, MsgType type, SetId s, std::uint32_t root, std::uint32_t hops,
            Ns now);
  std::uint32_t successor(std::uint32_t v) const;
  std::uint32_t predecessor(std::uint32_t v) const;
  bool knows_lost(std::uint32_t v, std::uint32_t id) const { return sets_.contains(nodes_[v].set, id); }

  // Events.
  void on_crash(Ns now);
  void on_stall(std::uint32_t v, Ns now);
  void on_resume(std::uint32_t v, Ns now);
  void on_poll(std::uint32_t v, Ns now);
  void deliver(std::uint32_t slot, Ns now);

  Ns first_tick_at_or_after(const Node& nd, Ns t) const;
  Ns latency() { return static_cast<Ns>(rng_.lognormal(static_cast<double>(p_.latency_median), p_.latency_sigma)); }
  Ns stall_length();
  void push(Ns t, EvKind k, std::uint32_t node, std::uint32_t aux = 0) {
    q_.push(Event{static_cast<std::uint64_t>(t), k, node, aux});
  }
  std::uint32_t alloc_msg(const Msg& m);
  void free_msg(std::uint32_t slot);

  Params p_;
  Rng rng_;
  EventQueue q_;
  LostSets sets_;
  std::vector<Node> nodes_;
  std::vector<Msg> msgs_;
  std::vector<std::uint32_t> free_msgs_;
  std::vector<std::vector<std::uint32_t>> inbox_;  // per node, only with stalls
  std::vector<Ns> poll_phase_;
  bool counting_;
  std::vector<Ns> fp_counted_;  // counting mode, [node * timeouts + j]: `heard` when last counted
  std::vector<std::uint64_t> fp_count_;
  Ns count_from_ = 0;
  Ns steady_end_ = 0;  // steady-state traffic is counted in [period, steady_end_)

  // Ground truth and statistics.
  std::vector<std::uint8_t> crashed_;
  std::vector<std::uint32_t> know_;  // per crashed id: survivors that know it
  std::vector<Ns> declared_at_;      // per crashed id: first declaration
  std::uint32_t survivors_target_ = 0;
  std::uint32_t fully_known_ = 0;
  Ns all_known_at_ = -1;
  Ns end_ = kNever;
  std::vector<std::uint32_t> tmp_ids_, children_;
  RunResult r_;
  // Traffic counters.
  std::uint64_t steady_hb_ = 0, steady_bytes_ = 0;
  std::uint64_t post_hb_ = 0, post_lost_ = 0, post_bytes_ = 0;
  std::uint64_t lost_recv_ = 0, lost_recv_bytes_ = 0;
};

}  // namespace fault_sim
