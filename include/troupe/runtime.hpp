// Runtime: one per process (per MPI rank). Spawns actors, owns the scheduler,
// timers and, when started with MPI, this node's place in the cluster.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "troupe/actor_ref.hpp"
#include "troupe/clock.hpp"
#include "troupe/cluster.hpp"
#include "troupe/config.hpp"
#include "troupe/dispatch.hpp"
#include "troupe/detail/core.hpp"
#include "troupe/detail/method_traits.hpp"
#include "troupe/future.hpp"
#include "troupe/timer.hpp"

namespace troupe {

class Role;
class Registry;
class Groups;
template <class T> class Target;
struct AdoptedComm;
class Registry;
class Groups;

/// Identifies one monitor, for demonitor().
struct MonitorId {
  NodeId node = kInvalidNode;
  ActorId actor = 0;
  std::uint64_t token = 0;
};

namespace detail {
class Cluster;
class NameServices;
/// spawn_on's view of a class registered with TROUPE_REMOTE (see troupe/remote.hpp).
template <class T> struct RemoteInit;
}  // namespace detail

class Runtime {
 public:
  /// A local runtime: one node, no MPI.
  explicit Runtime(Config cfg = {});
  /// A cluster node: initialises MPI (MPI_Init_thread) unless it already is, in
  /// which case troupe adopts MPI_COMM_WORLD and leaves MPI to the application.
  /// Removes --troupe-* options from argv.
  Runtime(int& argc, char**& argv, Config cfg = {});
  /// A cluster node inside an MPI application that owns MPI (see troupe/mpi.hpp).
  explicit Runtime(const AdoptedComm& comm, Config cfg = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  NodeId node() const noexcept { return core_->node(); }
  /// Nodes the job started with, plus any added later (alive or not).
  std::size_t size() const noexcept;
  const Config& config() const noexcept { return core_->config(); }
  std::size_t threads() const noexcept;

  /// Creates an actor of class T on this node; T(args...) runs on the actor's context.
  template <class T, class... A>
  ActorRef<T> spawn(A&&... a) {
    auto& core = *core_;
    auto cell = std::make_shared<detail::TypedCell<T>>(core, core.next_id(), &detail::type_tag<T>,
                                                       !detail::NonReentrant<T>);
    // Listed before its constructor runs: a reference it hands out works at
    // once (messages wait for the object), and an actor that stops itself
    // there is unlisted by its exit like any other.
    try {
      cell->template construct<T>([&] { core.add_cell(cell); }, std::forward<A>(a)...);
    } catch (...) {
      core.remove_cell(cell->id());
      throw;
    }
    return ActorRef<T>(std::move(cell));
  }

  /// Creates an actor of class T (registered with TROUPE_REMOTE) on another node.
  template <class T, class... A>
  Future<ActorRef<T>> spawn_on(NodeId node, A&&... a) {
    if (node == this->node()) return make_ready_future<ActorRef<T>>(spawn<T>(std::forward<A>(a)...));
    using Init = typename detail::RemoteInit<T>::tuple;
    Init init(std::forward<A>(a)...);
    Promise<ActorRef<T>> p(core_->waiter());
    auto f = p.get_future();
    auto* core = core_.get();
    remote_or_throw().spawn(node, &detail::type_tag<T>, &init,
                            [p = std::move(p), core, node](ActorId id, std::exception_ptr e) mutable {
                              if (e) return p.set_exception(e);
                              p.set_value(ActorRef<T>(core, node, id));
                            });
    return f;
  }

  /// Calls fn once when the actor exits or its node is lost (at once, on a
  /// scheduler thread, if that already happened).
  template <class T, class F>
  MonitorId monitor(const ActorRef<T>& ref, F&& fn) {
    return monitor_impl(ref.node(), ref.id(), ref.cell(), detail::MonitorFn(std::forward<F>(fn)));
  }
  void demonitor(const MonitorId& id);

  /// Sends M(args...) to ref after a delay.
  template <auto M, class T, class Rep, class Per, class... A>
  Timer tell_after(const ActorRef<T>& ref, std::chrono::duration<Rep, Per> delay, A&&... a) {
    return after(delay, [ref, args = std::make_tuple(std::decay_t<A>(std::forward<A>(a))...)]() mutable {
      std::apply([&](auto&... x) { ref.template tell<M>(std::move(x)...); }, args);
    });
  }
  /// Sends M(args...) to ref every period until cancelled, until a local target
  /// exits, or until finish() begins.
  template <auto M, class T, class Rep, class Per, class... A>
  Timer tell_every(const ActorRef<T>& ref, std::chrono::duration<Rep, Per> period, A&&... a) {
    return every(period, [ref, args = std::make_tuple(std::decay_t<A>(std::forward<A>(a))...)]() {
      if (ref.cell() && ref.cell()->exited()) return false;
      std::apply([&](const auto&... x) { ref.template tell<M>(x...); }, args);
      return true;
    });
  }
  /// Runs fn on a scheduler thread after a delay (one-shot).
  template <class Rep, class Per>
  Timer after(std::chrono::duration<Rep, Per> delay, detail::UniqueFunction<void()> fn) {
    return after_impl(detail::saturated(delay), std::move(fn));
  }
  /// Calls tick on the timer thread every period while it returns true.
  template <class Rep, class Per>
  Timer every(std::chrono::duration<Rep, Per> period, std::function<bool()> tick) {
    return every_impl(detail::saturated(period), std::move(tick));
  }

  /// The nodes of the job as this node sees them (a local runtime: itself).
  ClusterState cluster() const;
  /// Waits until pred(cluster()) holds; false if the timeout passed first.
  template <class Rep, class Per>
  bool wait_cluster(const std::function<bool(const ClusterState&)>& pred, std::chrono::duration<Rep, Per> timeout) {
    return wait_cluster_until(pred, detail::saturated_add(detail::Clock::now(), detail::saturated(timeout)));
  }
  /// Brings new processes of this program into the job (after losses, to
  /// replace lost ranks): MPI_Comm_spawn over the live nodes, then merged into
  /// the cluster as new nodes. Collective: every live node calls it, after they
  /// all see the same lost set (wait_cluster). args: the new processes'
  /// command line (e.g. "--troupe-role=worker"). Returns the new node ids.
  std::vector<NodeId> add_nodes(int count, const std::vector<std::string>& args = {});
  /// True in a process that add_nodes() started.
  bool joined_later() const;

  /// This node's hybrid logical clock; every remote message carries and merges it.
  HybridClock& clock() noexcept { return core_->clock(); }

  // ---- names, roles, dispatchers, registry, groups (troupe/role.hpp, troupe/registry.hpp)
  /// The nodes of a role (may be empty), with its communicator and dispatchers.
  Role role(const std::string& name);
  /// Registers a local actor under a per-node name (what dispatchers target).
  /// The name disappears when the actor exits.
  template <class T>
  void register_local(const std::string& name, const ActorRef<T>& ref) {
    if (!ref.cell()) throw Error("troupe: register_local needs an actor of this node");
    core_->register_local(name, ref.cell());
  }
  void unregister_local(const std::string& name) { core_->unregister_local(name); }
  /// A user-defined dispatch strategy, usable as Role::dispatch<T>(name, ...)
  /// on every node that registers it under the same name.
  void register_dispatcher(const std::string& name, DispatchFn fn);
  Registry& registry();
  Groups& groups();
  /// "@name" addressing: the registry entry (actor or dispatcher) named name,
  /// looked up at each send.
  template <class T>
  Target<T> at(std::string name) {
    if (!name.empty() && name[0] == '@') name.erase(0, 1);
    return Target<T>(*this, registry(), std::move(name));
  }

  /// Graceful shutdown. Local runtime: waits until no actor has work, then ends
  /// all actors. Cluster: collective over the live nodes; every message sent
  /// before finish() is delivered and handled first. Returns the exit code (0).
  int finish();

  // ---- internal --------------------------------------------------------------
  detail::Core& core() noexcept { return *core_; }
  detail::NameServices& names();

 private:
  MonitorId monitor_impl(NodeId node, ActorId actor, const std::shared_ptr<detail::ActorCell>& cell,
                         detail::MonitorFn fn);
  Timer after_impl(std::chrono::nanoseconds delay, detail::UniqueFunction<void()> fn);
  Timer every_impl(std::chrono::nanoseconds period, std::function<bool()> tick);
  detail::RemoteLink& remote_or_throw();
  bool wait_cluster_until(const std::function<bool(const ClusterState&)>& pred, detail::Clock::time_point deadline);

  void start_cluster(const void* comm, bool owns_mpi, Config cfg);

  std::unique_ptr<detail::Core> core_;
  std::unique_ptr<detail::RemoteLink> link_;
  std::once_flag names_once_;
  std::unique_ptr<detail::NameServices, void (*)(detail::NameServices*)> names_{nullptr, nullptr};
  int finished_ = -1;
};

/// The runtime of the actor running on this thread, or else the process's
/// current runtime. Throws troupe::Error if there is none.
Runtime& runtime();

/// Inside an actor of class T: its own reference. Throws troupe::Error elsewhere.
template <class T>
ActorRef<T> self() {
  auto* cell = detail::current_cell();
  if (cell == nullptr) throw Error("troupe::self<T>() called outside an actor");
  if (cell->type() != &detail::type_tag<T>)
    throw Error(std::string("troupe::self<T>(): the running actor is a ") + cell->type()->debug_name +
                ", not a " + detail::type_tag<T>.debug_name);
  return ActorRef<T>(cell->shared_from_this());
}

}  // namespace troupe
