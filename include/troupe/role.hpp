// Role: the group of nodes that share a role (--troupe-role=NAME, TROUPE_ROLE or
// Config::role), an MPI rank group with its own communicator, and the
// dispatchers that send to an actor registered under a per-node name
// (Runtime::register_local) on the role's nodes:
//
//   rt.role("mail-server").least_busy<Smtp>("smtp").tell<&Smtp::send>(mail);
//   auto all = rt.role("worker").broadcast<Worker>("w").ask<&Worker::load>().get();  // vector
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "troupe/dispatch.hpp"
#include "troupe/registry.hpp"
#include "troupe/fwd.hpp"

namespace troupe {

class Role {
 public:
  Role(Runtime& rt, std::string name) : rt_(&rt), name_(std::move(name)) {}
  const std::string& name() const noexcept { return name_; }

  /// The role's live nodes, sorted. A lost node leaves every role at once.
  std::vector<NodeId> nodes() const;
  bool contains(NodeId node) const;

  /// The communicator of the role's ranks, made when the job started
  /// (MPI_Comm_split), for MPI collectives among them; MPI_COMM_NULL on a node
  /// outside the role. It keeps every rank the role started with: after one is
  /// lost, a collective on it would wait for the dead rank forever (MPI cannot
  /// shrink it without ULFM); use live_comm() then. Nodes that joined later
  /// (Runtime::add_nodes) are in neither: on them both are MPI_COMM_NULL.
  /// The runtime owns it and frees it in finish() (MPI_COMM_NULL from then on).
  MPI_Comm comm() const;
  /// A new communicator of the role's live ranks among those it started with.
  /// Collective over them: every live member must call it (with the same view
  /// of who is lost). The caller owns it (MPI_Comm_free).
  MPI_Comm live_comm() const;

  template <class T> Dispatcher<T, true> broadcast(std::string name) const { return make<T, true>(name, Strategy::broadcast); }
  template <class T> Dispatcher<T> least_busy(std::string name) const { return make<T>(name, Strategy::least_busy); }
  template <class T> Dispatcher<T> random(std::string name) const { return make<T>(name, Strategy::random); }
  template <class T> Dispatcher<T> round_robin(std::string name) const { return make<T>(name, Strategy::round_robin); }
  template <class T> Dispatcher<T> first(std::string name) const { return make<T>(name, Strategy::first); }
  template <class T> Dispatcher<T> second(std::string name) const { return make<T>(name, Strategy::second); }
  template <class T> Dispatcher<T> third(std::string name) const { return make<T>(name, Strategy::third); }
  template <class T> Dispatcher<T> last(std::string name) const { return make<T>(name, Strategy::last); }
  template <class T> Dispatcher<T> next(std::string name) const { return make<T>(name, Strategy::next); }
  template <class T> Dispatcher<T> prev(std::string name) const { return make<T>(name, Strategy::prev); }
  /// Process groups scoped to this role (see troupe::Groups): kept on the
  /// role's nodes only, usable there only.
  Groups groups() const;

  /// A user-defined strategy registered with Runtime::register_dispatcher.
  template <class T>
  Dispatcher<T, true> dispatch(std::string strategy, std::string name) const {
    return Dispatcher<T, true>(*rt_, DispatchSpec{name_, std::move(name), Strategy::custom, std::move(strategy)});
  }

 private:
  template <class T, bool G = false>
  Dispatcher<T, G> make(std::string& name, Strategy s) const {
    return Dispatcher<T, G>(*rt_, DispatchSpec{name_, std::move(name), s, {}});
  }
  Runtime* rt_;
  std::string name_;
};

}  // namespace troupe
