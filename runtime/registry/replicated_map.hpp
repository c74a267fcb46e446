// ReplicatedMap: a map replicated on every node, one last-writer-wins register
// per key. A write is stamped with the writer's hybrid logical clock; among
// writes to one key the largest (timestamp, node id) wins everywhere, so the
// replicas converge whatever order the writes arrive in. A write is sent to
// every live node, and its future completes when all of them applied it.
// Entries point at an actor (owner node, actor id): they vanish when that node
// is lost, and the owner node removes them when the actor exits.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "troupe/cluster.hpp"
#include "troupe/future.hpp"
#include "troupe/fwd.hpp"
#include "troupe/wire/archive.hpp"

namespace troupe::detail {

class NameServices;

struct ReplEntry {
  std::string value;
  std::uint64_t ts = 0;  // HlcTimestamp::raw
  NodeId origin = 0;
  NodeId owner = kInvalidNode;  // the node of the actor it points at, if any
  ActorId actor = 0;
  bool tombstone = false;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, ts, origin, owner, actor, tombstone);
  }
  /// The total order of versions: later timestamp, then higher node; for the
  /// same version, its deletion beats it (a conditional delete: it removes that
  /// version and nothing written after it).
  bool beats(const ReplEntry& o) const noexcept {
    if (ts != o.ts) return ts > o.ts;
    if (origin != o.origin) return origin > o.origin;
    return tombstone && !o.tombstone;
  }
};

class ReplicatedMap {
 public:
  /// Called for every change a node applies: before/after are null when absent.
  using Listener = std::function<void(const std::string& key, const ReplEntry* before, const ReplEntry* after)>;
  /// The role a key is confined to: it is written to, and kept on, that role's
  /// nodes only. Empty: every node.
  using ScopeOf = std::function<std::string(const std::string& key)>;
  ReplicatedMap(NameServices& ns, std::uint8_t id, Listener listener, ScopeOf scope_of = nullptr);

  Future<void> write(const std::string& key, std::string value, NodeId owner, ActorId actor, bool tombstone);
  /// Deletes exactly this version of key (if nothing newer replaced it).
  void remove_version(const std::string& key, const ReplEntry& version);
  /// Sends every entry this node wrote, and every deletion it made of an
  /// entry pointing at its actors, to the given nodes (new members).
  void push_own(const std::vector<NodeId>& to);
  std::optional<ReplEntry> get(const std::string& key) const;
  std::vector<std::pair<std::string, ReplEntry>> scan(const std::string& prefix) const;

  /// An update from node `from` (kInvalidNode: made here); true if it changed the map.
  bool apply(const std::string& key, ReplEntry e, NodeId from = kInvalidNode);
  void acked(std::uint64_t corr, NodeId from);
  void node_lost(NodeId n);
  /// A write's wait for the acks of `nodes` (not empty), numbered `corr`: its
  /// future completes once each has acked (acked) or is lost (node_lost).
  Future<void> expect_acks(const std::vector<NodeId>& nodes, std::uint64_t& corr);
  /// Every entry node n keeps, tombstones included (to bring it up to date).
  std::vector<std::pair<std::string, ReplEntry>> everything_for(NodeId n) const;
  /// The role key is confined to (empty: every node).
  std::string scope_of(const std::string& key) const { return scope_of_ ? scope_of_(key) : std::string{}; }
  /// True if node n (per st) keeps keys of that scope.
  static bool kept_on(const std::string& scope, NodeId n, const ClusterState& st);
  std::uint8_t id() const noexcept { return id_; }

 private:
  void watch_owner_actor(const std::string& key, const ReplEntry& e);
  /// Passes on entries a lost node wrote: to each key's relay (its lowest
  /// live keeper), which sends them to every other live keeper. came_from:
  /// the node this node had them from (kInvalidNode: its own copy, at a
  /// loss). A node other than the relay sends on only its own copy or what it
  /// read from the lost writer itself; the relay sends to all but came_from
  /// (so an entry the relay spread costs about 2·N messages).
  void forward(const std::vector<std::pair<std::string, ReplEntry>>& entries, NodeId came_from);
  Future<void> broadcast(const std::string& key, const ReplEntry& e);
  /// Node n will never ack: the waits left with no node to hear from end.
  /// Allocates nothing (a loss must end them even when memory is out).
  void end_waits_on(NodeId n);

  /// Every node, per the cluster's current view (just this one in a local runtime).
  ClusterState view() const;

  NameServices& ns_;
  std::uint8_t id_;
  Listener listener_;
  ScopeOf scope_of_;
  mutable std::mutex mu_;
  std::map<std::string, ReplEntry> entries_;  // tombstones included (they win over older writes)
  std::set<std::pair<std::string, ActorId>> watched_;
  struct Wait {
    std::set<NodeId> nodes;
    Promise<void> promise;
  };
  std::map<std::uint64_t, Wait> waits_;
  std::uint64_t next_corr_ = 1;
};

}  // namespace troupe::detail
