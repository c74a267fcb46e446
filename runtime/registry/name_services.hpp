// NameServices: one per runtime; the state behind roles' dispatchers, the
// registry and process groups, and the control messages that keep the
// replicas in step.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "registry/replicated_map.hpp"
#include "troupe/dispatch.hpp"
#include "troupe/registry.hpp"

namespace troupe::detail {

class Cluster;
class RemoteNode;

class NameServices {
 public:
  explicit NameServices(Runtime& rt);
  ~NameServices();

  Runtime& runtime() noexcept { return rt_; }
  Core& core() noexcept { return core_; }
  /// Null for a local runtime.
  Cluster* cluster() noexcept { return cluster_; }
  NodeId self() const noexcept;
  /// Expires when this object dies (for callbacks that may outlive it).
  std::weak_ptr<bool> life() const { return life_; }

  Registry& registry() noexcept { return registry_; }
  Groups& groups() noexcept { return groups_; }
  ReplicatedMap& registry_map() noexcept { return registry_map_; }
  ReplicatedMap& group_map() noexcept { return group_map_; }

  /// Sends a replicated write to node n (work: finish() waits for it).
  void send_update(NodeId to, std::uint8_t map, const std::string& key, const ReplEntry& e, std::uint64_t corr);
  /// Tests: no update from this node is sent to node n (as from a writer that
  /// dies before its update reaches n). kInvalidNode: sent to all again.
  void drop_updates_to_for_tests(NodeId n) noexcept { drop_to_.store(n, std::memory_order_relaxed); }

  // dispatch state
  std::uint64_t next_round_robin(const std::string& key);
  void add_dispatcher(const std::string& name, DispatchFn fn);
  DispatchFn dispatcher(const std::string& name) const;

  // group subscriptions
  std::uint64_t subscribe(const std::string& group, std::function<void(const GroupEvent&)> fn);
  void unsubscribe(std::uint64_t token);

 private:
  void on_control(NodeId from, std::uint64_t type, WireInputArchive& ar);
  void group_changed(const std::string& key, const ReplEntry* before, const ReplEntry* after);

  std::shared_ptr<bool> life_ = std::make_shared<bool>(true);
  std::atomic<NodeId> drop_to_{kInvalidNode};
  Runtime& rt_;
  Core& core_;
  Cluster* cluster_ = nullptr;
  ReplicatedMap registry_map_;
  ReplicatedMap group_map_;
  Registry registry_;
  Groups groups_;

  mutable std::mutex mu_;
  std::map<std::string, std::uint64_t> round_robin_;
  std::map<std::string, DispatchFn> dispatchers_;
  struct Subscriber {
    std::string group;  // scoped
    std::uint64_t since;  // the first event it hears of (events_seq_ when it subscribed)
    std::function<void(const GroupEvent&)> fn;
  };
  std::map<std::uint64_t, Subscriber> subscribers_;
  std::uint64_t next_token_ = 1;
  // The subscriber being called (0: none) and by which thread: unsubscribe()
  // waits for that call, unless it is made from it.
  std::uint64_t calling_ = 0;
  std::thread::id calling_thread_;
  std::condition_variable called_;
  // Group events reach subscribers one at a time, in the order applied.
  std::mutex events_mu_;
  std::deque<std::pair<std::uint64_t, GroupEvent>> events_;  // with their numbers, from 0
  std::uint64_t events_seq_ = 0;  // the next event's number (under events_mu_)
  bool draining_ = false;
  void drain_events();
};

/// Group keys: "<group>\x1f<node>:<actor>"; a group scoped to role r is
/// named "\x1e<r>\x1e<group>" (control characters no user name holds).
std::string group_key(const std::string& group, NodeId node, ActorId actor);
std::string group_of_key(const std::string& key);
std::string scoped_group(const std::string& scope, const std::string& group);
/// The role a key is confined to (empty: cluster-wide).
std::string scope_of_key(const std::string& key);
/// The live node a node that joined later asks for a copy of the replicas:
/// one that was there before its batch (ids from first_of_batch on) over one
/// that joined with it, then one of its own role over another. kInvalidNode:
/// none is alive.
NodeId copy_source(const ClusterState& st, NodeId self, const std::string& role, NodeId first_of_batch);
/// {scope, group} of a (possibly scoped) group name.
std::pair<std::string, std::string> split_scoped_group(const std::string& scoped);

}  // namespace troupe::detail
