// Cluster: this node's view of the job. Membership (who is there, who is
// alive), the hybrid logical clock, the work counters and the termination
// protocol behind finish(), and the control messages they exchange.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "cluster/detector.hpp"
#include "cluster/termination.hpp"
#include "transport/engine.hpp"
#include "troupe/clock.hpp"
#include "troupe/cluster.hpp"
#include "troupe/wire/archive.hpp"

namespace troupe::detail {

class Core;

/// Control message types (envelope kind `control`, id = the type).
enum class Control : std::uint32_t {
  finish_probe = 1,   ///< coordinator -> all: report your status for wave N
  finish_status = 2,  ///< -> coordinator: wave, in finish, idle, work sent, work delivered
  finish_done = 3,    ///< coordinator -> all: everything is delivered and handled; shut down
  finish_ack = 4,     ///< -> coordinator: done received
  heartbeat = 16,     ///< -> the node that watches me
  lost = 17,          ///< failure news: these nodes are lost (gossiped)
  leaving = 18,       ///< the sender's runtime goes without finish(): it is lost from now on
  replicate = 32,     ///< registry and groups: an update to apply (32..47 are theirs)
  replicate_ack = 33,
  replicate_sync = 34,  ///< a node that joined later asks for a copy of every replica
};

class Cluster final : public DetectorSite {
 public:
  /// capacity: how many nodes the job may ever hold (0: these and kSpareNodes
  /// more). Every node of a job must hold the same (add_nodes refuses, on
  /// every member alike, what goes past it).
  Cluster(Core& core, Engine& engine, std::vector<NodeInfo> nodes, std::size_t capacity = 0);

  NodeId self() const noexcept override { return self_; }
  std::size_t size() const noexcept override { return count_.load(std::memory_order_acquire); }
  std::size_t capacity() const noexcept { return capacity_; }
  bool alive(NodeId n) const noexcept override { return n < size() && alive_[n].load(std::memory_order_acquire); }
  ClusterState state() const;
  HybridClock& clock() noexcept;

  /// Blocks (helping the engine) until pred(state()) holds or the deadline passes.
  bool wait(const std::function<bool(const ClusterState&)>& pred, std::chrono::steady_clock::time_point deadline);

  // ---- messages ------------------------------------------------------------
  /// Encodes and sends a control message: body(ar) writes its payload. Work
  /// messages are counted, so finish() waits until they are handled.
  void send_control(NodeId to, Control type, const std::function<void(WireOutputArchive&)>& body, bool work = false);
  /// send_control (not counted as work) tried again while it finds no memory,
  /// for the memory patience; false if it never went.
  bool send_control_patiently(NodeId to, Control type, const std::function<void(WireOutputArchive&)>& body);
  /// Control types this layer does not know (from Control::replicate on) go to
  /// this handler (the registry's). Null removes it, and returns once no call
  /// of it, or of a listener, is under way, so that the component behind them
  /// can be destroyed.
  void set_extra_control(std::function<void(NodeId, std::uint64_t, WireInputArchive&)> handler);
  /// A control message arrived (called at delivery, in order per source).
  void on_control(NodeId from, std::uint64_t type, WireInputArchive& ar);
  /// The same, from its bytes: types meant for the extra handler wait (in
  /// order) until it is set, so nothing sent early is lost.
  void on_control_bytes(NodeId from, std::uint64_t type, std::shared_ptr<ByteBuffer> payload);
  /// Work accounting for the termination protocol.
  void count_sent(NodeId to) noexcept { sent_[to].fetch_add(1, std::memory_order_relaxed); }
  /// A message counted as sent could not be written after all.
  void uncount_sent(NodeId to) noexcept { sent_[to].fetch_sub(1, std::memory_order_relaxed); }
  void count_delivered(NodeId from, std::uint64_t n = 1) noexcept {
    delivered_[from].fetch_add(n, std::memory_order_relaxed);
  }
  /// Work messages from `from` delivered here so far (diagnostics and tests).
  std::uint64_t delivered_from(NodeId from) const noexcept { return delivered_[from].load(std::memory_order_relaxed); }

  /// Nodes joined (Runtime::add_nodes): `all` describes every node id so far.
  void add_nodes(const std::vector<NodeInfo>& all);
  /// Once they can be reached: tells the listeners (the registry pushes them
  /// what this node wrote).
  void nodes_added(const std::vector<NodeId>& fresh);
  void on_added(std::function<void(const std::vector<NodeId>&)> listener);

  // ---- loss ------------------------------------------------------------------
  /// Declares a node lost, for good, here. Listeners run once per lost node.
  void declare_lost(NodeId n);
  void on_lost(std::function<void(NodeId)> listener);
  /// This node found n dead (why: for the log): declare it and spread the news.
  void confirm_lost(NodeId n, const std::string& why) override;
  /// The nodes lost so far, sorted.
  std::vector<NodeId> lost_set() const;
  /// Failure detection: run from the progress thread every few milliseconds.
  void tick();
  void send_heartbeat(NodeId to) override;
  std::chrono::steady_clock::time_point last_heard(NodeId n) const override { return engine_.last_heard(n); }
  bool heard_pending(NodeId n, std::chrono::milliseconds patience) override {
    return engine_.heard_pending(n, patience);
  }

  // ---- shutdown ------------------------------------------------------------
  /// The termination protocol: returns once every live node called finish()
  /// and no work is in flight or being handled anywhere.
  void finish();
  bool finishing() const noexcept { return in_finish_.load(); }
  /// finish() has ended the cluster: nothing but its own messages is sent any more.
  bool done() const noexcept { return done_.load(); }
  /// This node's runtime goes without finish() (an exception unwound the
  /// scope that holds it, say): tells every live node, which counts it lost at
  /// once instead of after the heartbeat timeout, and waits (at most `limit`)
  /// for the notices to leave.
  /// From here on this node detects nothing and ignores news of its own loss.
  void leave(std::chrono::milliseconds limit);
  /// leave() was called: the others count this node lost.
  bool left() const noexcept { return left_.load(); }
  /// The wave node n asked of us that we have not answered yet (tests, diagnostics).
  std::optional<std::uint64_t> unanswered_probe(NodeId n) const;
  /// Tests: as coordinator, this node tells `count` nodes that the job is
  /// done, then dies (SIGKILL) before it tells the others.
  static void die_telling_done_after_for_tests(int count) noexcept { die_after_done_.store(count); }

 private:
  using Status = WorkStatus;
  NodeId coordinator() const;
  /// Merges a lost set heard from another node; true if it taught us something.
  bool merge_lost(const std::vector<NodeId>& lost);
  void broadcast_lost(NodeId root, const std::vector<NodeId>& lost);
  [[noreturn]] void expelled();
  Status local_status() const;
  void run_coordinator(std::chrono::steady_clock::time_point now);

  /// The live node after n on the ring of node ids (n itself if alone).
  NodeId next_alive(NodeId n) const noexcept;
  static inline std::atomic<int> die_after_done_{-1};

  Core& core_;
  Engine& engine_;
  NodeId self_;
  std::vector<NodeInfo> info_;  // under mu_
  // Per-node state in arrays sized once, with room for nodes that join later.
  static constexpr std::size_t kSpareNodes = 256;
  std::size_t capacity_;
  std::atomic<std::size_t> count_;
  std::unique_ptr<std::atomic<bool>[]> alive_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> sent_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> delivered_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Copied on write, so that a loss takes them without an allocation that
  // could fail with the listeners not yet told.
  template <class Fn>
  using Listeners = std::shared_ptr<const std::vector<Fn>>;
  Listeners<std::function<void(NodeId)>> lost_listeners_;
  Listeners<std::function<void(const std::vector<NodeId>&)>> added_listeners_;
  std::unique_ptr<FailureDetector> detector_;
  std::function<void(NodeId, std::uint64_t, WireInputArchive&)> extra_control_;
  struct Stashed {
    NodeId from;
    std::uint64_t type;
    std::shared_ptr<ByteBuffer> payload;
  };
  std::vector<Stashed> stash_;  // extra control messages that came before their handler
  bool replaying_ = false;      // the stash is being handed to the new handler: what comes joins it

  // termination protocol (under mu_)
  std::atomic<bool> in_finish_{false};
  std::atomic<bool> done_{false};
  std::atomic<bool> left_{false};  // leave() was called
  // The latest unanswered wave each node asked of us. Per node, not one slot:
  // a late probe from a node being declared lost (stopped, then resumed) must
  // not overwrite the one from the node that coordinates after it, which
  // would then wait for our answer for ever.
  std::vector<std::optional<std::uint64_t>> probes_;
  std::uint64_t wave_ = 0;            // coordinator: current wave
  bool wave_open_ = false;
  std::vector<std::optional<Status>> replies_;
  TerminationTally tally_;
  std::atomic<std::uint64_t> losses_handled_{0};  // a digest of the losses handled (loss_mark)
  std::atomic<int> declaring_{0};  // losses being declared (listeners running): not idle
  // Calls of the extra control handler and of listeners under way:
  // set_extra_control(nullptr) waits for them, so that the component that
  // installed them can go.
  std::atomic<int> handler_calls_{0};
  struct InHandler {
    explicit InHandler(Cluster& c) : c_(c) { c_.handler_calls_.fetch_add(1, std::memory_order_seq_cst); }
    ~InHandler() { c_.handler_calls_.fetch_sub(1, std::memory_order_seq_cst); }
    Cluster& c_;
  };
  std::chrono::steady_clock::time_point next_wave_{};
  std::vector<std::chrono::steady_clock::time_point> next_expel_;  // tick()'s only (the progress thread)
  std::chrono::microseconds wave_gap_{500};
  std::vector<bool> acked_;
};

}  // namespace troupe::detail
