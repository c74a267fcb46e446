// The cluster-wide name registry and process groups.
//
// Both are replicated on every node: reads are local, writes go to every live
// node. Each name (and each group member) is a last-writer-wins register
// ordered by the writers' hybrid logical clocks, ties broken by node id, so
// every node ends with the same value whatever the order writes arrive in. A
// write's future completes once every live node has applied it: from then on a
// read on any node sees it (or something newer). Entries whose actor exited or
// whose node was lost disappear everywhere.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "troupe/actor_ref.hpp"
#include "troupe/dispatch.hpp"
#include "troupe/future.hpp"

namespace troupe {

namespace detail {
class NameServices;

/// What a registry name holds.
struct RegistryValue {
  std::uint8_t kind = 0;  // 1: an actor, 2: a dispatcher
  NodeId node = kInvalidNode;
  ActorId actor = 0;
  std::string type;  // the actor class, checked by get<T>
  DispatchSpec spec;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(kind, node, actor, type, spec);
  }
};

struct Member {
  NodeId node;
  ActorId actor;
  std::string type;
};
}  // namespace detail

class Registry {
 public:
  explicit Registry(detail::NameServices& ns) : ns_(&ns) {}

  /// Binds a cluster-wide name to an actor. Conflicting writes: the latest by
  /// hybrid logical clock wins (ties: the higher node id).
  template <class T>
  Future<void> put(const std::string& name, const ActorRef<T>& ref) {
    return put_value(name, detail::RegistryValue{1, ref.node(), ref.id(), detail::type_tag<T>.debug_name, {}});
  }
  /// Binds a name to a dispatcher: senders say "@name", the strategy chooses.
  template <class T, bool G>
  Future<void> put(const std::string& name, const Dispatcher<T, G>& d) {
    return put_value(name, detail::RegistryValue{2, kInvalidNode, 0, detail::type_tag<T>.debug_name, d.spec()});
  }
  Future<void> remove(const std::string& name);

  /// The actor bound to name, if any. Throws troupe::Error if it is bound to
  /// an actor of another class, or to a dispatcher.
  template <class T>
  std::optional<ActorRef<T>> get(const std::string& name) const {
    auto v = get_value(name);
    if (!v) return std::nullopt;
    check(name, *v, detail::type_tag<T>.debug_name, 1);
    return ActorRef<T>(&core(), v->node, v->actor);
  }
  std::optional<DispatchSpec> get_dispatcher(const std::string& name) const;
  bool contains(const std::string& name) const { return get_value(name).has_value(); }
  std::vector<std::string> names() const;

  // ---- internal --------------------------------------------------------------
  Future<void> put_value(const std::string& name, const detail::RegistryValue& v);
  std::optional<detail::RegistryValue> get_value(const std::string& name) const;

 private:
  static void check(const std::string& name, const detail::RegistryValue& v, const char* type, int kind);
  detail::Core& core() const;
  detail::NameServices* ns_;
};

struct GroupEvent {
  std::string group;
  NodeId node = kInvalidNode;
  ActorId actor = 0;
  bool joined = true;  ///< false: left (or its actor exited, or its node was lost)
  std::string scope;   ///< the role of role-scoped groups; empty for cluster-wide ones
};

/// Process groups. rt.groups() is the cluster-wide scope: every node keeps
/// every group. rt.role("r").groups() is the scope of role r: its groups are
/// a namespace of their own, hold actors of r's nodes only, and are kept (and
/// written) on r's nodes only, so keeping them in step costs O(|r|) messages
/// per change, not O(cluster). Using a role's scope on a node outside that
/// role throws troupe::Error; joining an actor of another role fails the
/// returned future with troupe::Error.
class Groups {
 public:
  explicit Groups(detail::NameServices& ns, std::string scope = {}) : ns_(&ns), scope_(std::move(scope)) {}
  /// The role these groups are confined to; empty for the cluster-wide scope.
  const std::string& scope() const noexcept { return scope_; }

  template <class T>
  Future<void> join(const std::string& group, const ActorRef<T>& ref) {
    return update(group, ref.node(), ref.id(), detail::type_tag<T>.debug_name, true);
  }
  template <class T>
  Future<void> leave(const std::string& group, const ActorRef<T>& ref) {
    return update(group, ref.node(), ref.id(), detail::type_tag<T>.debug_name, false);
  }
  /// The group's members of class T, local and remote, sorted by (node, id).
  template <class T>
  std::vector<ActorRef<T>> members(const std::string& group) const {
    std::vector<ActorRef<T>> out;
    for (auto& m : members_of(group))
      if (m.type == detail::type_tag<T>.debug_name) out.push_back(ActorRef<T>(&core(), m.node, m.actor));
    return out;
  }
  std::vector<std::string> groups() const;
  /// Called (on a scheduler thread, one event at a time, in the order this
  /// node applied them) for every join and leave this node applies from now on.
  /// To know the members from before too, subscribe first, then read
  /// members(): every change is in that list or heard as an event (maybe
  /// both, so treat a join of a known member as nothing new). The other order
  /// can miss a change made between the two calls.
  std::uint64_t subscribe(const std::string& group, std::function<void(const GroupEvent&)> fn);
  /// Once it returns, the callback does not run and will not run again, so
  /// what it captured may go: it waits for a call under way, so do not call it
  /// holding a lock the callback takes. Called from inside that callback, it
  /// returns at once (the call under way finishes).
  void unsubscribe(std::uint64_t token);

  // ---- internal --------------------------------------------------------------
  Future<void> update(const std::string& group, NodeId node, ActorId actor, const std::string& type, bool join);
  std::vector<detail::Member> members_of(const std::string& group) const;

 private:
  detail::Core& core() const;
  /// Throws unless this node keeps the scope's groups.
  void check_here(const char* what) const;
  detail::NameServices* ns_;
  std::string scope_;
};

/// A registry name used as an address ("@name"): looked up at each send.
template <class T>
class Target {
 public:
  Target(Runtime& rt, Registry& reg, std::string name) : rt_(&rt), reg_(&reg), name_(std::move(name)) {}

  template <auto M, class... A>
  void tell(A&&... a) const {
    auto v = reg_->get_value(name_);
    if (!v) return detail::report_unhandled(detail::core_of(*rt_), 0, name_.c_str(), missing());
    if (v->kind == 2) return Dispatcher<T>(*rt_, v->spec).template tell<M>(std::forward<A>(a)...);
    ActorRef<T>(&detail::core_of(*rt_), v->node, v->actor).template tell<M>(std::forward<A>(a)...);
  }
  template <auto M, class... A>
  Future<typename detail::Method<M>::Result> ask(A&&... a) const {
    using R = typename detail::Method<M>::Result;
    auto v = reg_->get_value(name_);
    if (!v) return make_error_future<R>(missing());
    if (v->kind == 2 && (v->spec.strategy == Strategy::broadcast || v->spec.strategy == Strategy::custom))
      return make_error_future<R>(std::make_exception_ptr(Error(
          "troupe: '@" + name_ + "' names a dispatcher that reaches several nodes: an ask would hear from one; "
          "tell it, or ask its Dispatcher (a gathering one returns every reply)")));
    if (v->kind == 2) return Dispatcher<T>(*rt_, v->spec).template ask<M>(std::forward<A>(a)...);
    return ActorRef<T>(&detail::core_of(*rt_), v->node, v->actor).template ask<M>(std::forward<A>(a)...);
  }

 private:
  std::exception_ptr missing() const {
    return std::make_exception_ptr(NameNotFound("troupe: nothing is registered as '@" + name_ + "'"));
  }
  Runtime* rt_;
  Registry* reg_;
  std::string name_;
};

}  // namespace troupe
