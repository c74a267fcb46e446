// Core: the local half of a runtime (actors, scheduler, timers). No MPI here.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "troupe/clock.hpp"
#include "troupe/cluster.hpp"
#include "troupe/config.hpp"
#include "troupe/detail/actor_cell.hpp"
#include "troupe/detail/future_state.hpp"
#include "troupe/detail/unique_function.hpp"
#include "troupe/fwd.hpp"
#include "troupe/future.hpp"

namespace troupe::detail {

class Scheduler;
class ThreadPlacement;
class TimerService;
class ActorTable;
struct CallBase;
struct TypeTag;

/// The distributed half, seen from the core. Implemented in runtime/remote; null
/// for a local runtime.
class RemoteLink {
 public:
  virtual ~RemoteLink() = default;
  virtual std::size_t size() const = 0;
  /// Sends a call to an actor on another node. For an ask, the call carries its
  /// promise; any failure (unknown method, lost node, ...) lands there.
  virtual void send_call(NodeId node, ActorId actor, std::unique_ptr<CallBase> call) = 0;
  /// A tell whose arguments are plain numbers: encoded before this returns, so
  /// the call may live on the caller's stack (no allocation).
  virtual void send_tell(NodeId node, ActorId actor, const CallBase& call) = 0;
  /// An ask whose arguments are plain numbers: its promise is taken and its
  /// arguments encoded before this returns, so the call may live on the
  /// caller's stack (no allocation); any failure lands in the promise.
  virtual void send_ask(NodeId node, ActorId actor, CallBase& call) = 0;
  virtual void stop(NodeId node, ActorId actor) = 0;
  virtual std::uint64_t monitor(NodeId node, ActorId actor, MonitorFn fn) = 0;
  virtual void demonitor(NodeId node, ActorId actor, std::uint64_t token) = 0;
  virtual void mailbox_size(NodeId node, ActorId actor, Promise<std::size_t> p) = 0;
  /// The same two, addressed to the actor registered under `name` on that node.
  virtual void send_named(NodeId node, const std::string& name, std::unique_ptr<CallBase> call) = 0;
  virtual void mailbox_size_named(NodeId node, const std::string& name, Promise<std::size_t> p) = 0;
  /// Spawns on another node: init points to the class's init tuple.
  virtual void spawn(NodeId node, const TypeTag* type, const void* init,
                     UniqueFunction<void(ActorId, std::exception_ptr)> done) = 0;
  /// Graceful collective shutdown of the whole job; returns the exit code.
  /// Afterwards nothing more is sent or received.
  virtual int finish() = 0;
  /// The runtime goes without finish(), after its local actors ended: the
  /// other nodes are told to count this one lost now.
  virtual void leave() {}
  /// Releases MPI (MPI_Finalize if troupe initialised it), after the local actors ended.
  virtual void finalize() {}
  /// Hands queued envelopes to MPI now (called when an actor's turn ends).
  virtual void flush() {}
  virtual ClusterState cluster_state() const = 0;
  virtual bool wait_cluster(const std::function<bool(const ClusterState&)>& pred, Clock::time_point deadline) = 0;
};

class Core {
 public:
  Core(Runtime& rt, Config cfg, std::unique_ptr<ThreadPlacement> placement);
  ~Core();
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  Runtime& runtime() const noexcept { return rt_; }
  const Config& config() const noexcept { return cfg_; }
  /// A node that joined later takes the members' failure detector settings
  /// (before its cluster view, which reads them, is made).
  void adopt_heartbeat(std::chrono::milliseconds period, std::chrono::milliseconds timeout) noexcept {
    cfg_.heartbeat_period = period;
    cfg_.heartbeat_timeout = timeout;
  }
  NodeId node() const noexcept { return node_; }
  void set_node(NodeId n) noexcept { node_ = n; }

  Scheduler& scheduler() noexcept { return *sched_; }
  TimerService& timers() noexcept { return *timers_; }
  /// The slot this runtime's futures find its waiter in.
  WaiterSlot* waiter() const noexcept { return waiter_; }
  Waiter* current_waiter() const noexcept { return waiter_->load(std::memory_order_acquire); }
  void set_waiter(Waiter* w) noexcept { waiter_->store(w, std::memory_order_release); }
  RemoteLink* remote() const noexcept { return remote_; }
  HybridClock& clock() noexcept { return clock_; }
  void set_remote(RemoteLink* r) noexcept { remote_ = r; }

  ActorId next_id() noexcept { return next_id_.fetch_add(1, std::memory_order_relaxed); }
  void add_cell(std::shared_ptr<ActorCell> cell);
  void remove_cell(ActorId id) noexcept;
  std::shared_ptr<ActorCell> find_cell(ActorId id) const;
  std::size_t actor_count() const noexcept;

  /// Per-node names: an actor of this node registered under a name. A name
  /// disappears when its actor exits; registering it again rebinds it.
  void register_local(const std::string& name, const std::shared_ptr<ActorCell>& cell);
  void unregister_local(const std::string& name) noexcept;
  std::shared_ptr<ActorCell> find_local(const std::string& name) const;

  /// Runs f on a scheduler thread. False once the scheduler is shut down:
  /// f is dropped, not run.
  bool post(UniqueFunction<void()> f);
  /// Runs a monitor's callback on a scheduler thread; with no memory for the
  /// task, here and now rather than never (its function is kept until the
  /// task holds it). Dropped, as post()'s, once the scheduler is shut down.
  void fire_monitor(MonitorFn fn, const ExitInfo& info) noexcept;

  /// Quiescence accounting: every scheduled actor, posted task and pending
  /// one-shot timer counts as outstanding work.
  void work_started() noexcept { outstanding_.fetch_add(1, std::memory_order_relaxed); }
  void work_done() noexcept;
  std::size_t outstanding() const noexcept { return outstanding_.load(std::memory_order_acquire); }
  /// Blocks until no work is outstanding (or the deadline passes).
  bool wait_quiescent(std::optional<Clock::time_point> deadline = std::nullopt);

  void on_unhandled(ActorId actor, const char* method, std::exception_ptr e) noexcept;

  /// Periodic timers stop when finish() begins.
  void track_periodic(std::weak_ptr<struct TimerControl> c);
  /// Cancels the periodic timers, and those started from now on (an actor
  /// handling a message in flight while finish() waits may start one).
  void stop_periodic() noexcept;
  bool periodic_stopped() const;

  /// Local shutdown: waits for quiescence, ends all actors, stops threads.
  void shutdown() noexcept;
  bool is_shut_down() const noexcept { return shut_down_; }
  /// Shut down and its threads stopped: a timer started now would never fire.
  bool is_stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }

 private:
  Runtime& rt_;
  Config cfg_;
  NodeId node_ = 0;
  std::unique_ptr<TimerService> timers_;
  std::unique_ptr<Scheduler> sched_;
  std::unique_ptr<ActorTable> table_;
  WaiterSlot* waiter_ = new_waiter_slot();  // emptied by ~Core: futures may outlive it
  RemoteLink* remote_ = nullptr;
  HybridClock clock_;
  std::atomic<ActorId> next_id_{1};
  std::atomic<std::size_t> outstanding_{0};
  bool shut_down_ = false;
  std::atomic<bool> stopped_{false};
  mutable std::mutex names_mu_;
  std::unordered_map<std::string, std::shared_ptr<ActorCell>> names_;
  mutable std::mutex periodic_mu_;
  std::vector<std::weak_ptr<TimerControl>> periodic_;
  bool periodic_stopped_ = false;  // under periodic_mu_: later periodic timers start cancelled
};

/// The runtime that actors on this thread belong to, else the most recently
/// started one in the process (null if none).
Core* current_core() noexcept;

/// While a message is decoded, the runtime that decodes it (so ActorRefs inside
/// bind to it).
class DecodingScope {
 public:
  explicit DecodingScope(Core* core) noexcept;
  ~DecodingScope();
  DecodingScope(const DecodingScope&) = delete;
  DecodingScope& operator=(const DecodingScope&) = delete;

 private:
  Core* prev_;
};

}  // namespace troupe::detail
