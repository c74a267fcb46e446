// Dispatch: which nodes a DispatchSpec chooses, and delivery to one target.
#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <random>

#include "name_services.hpp"
#include "troupe/registry.hpp"
#include "troupe/role.hpp"
#include "troupe/runtime.hpp"

namespace troupe {

const char* to_string(Strategy s) noexcept {
  switch (s) {
    case Strategy::broadcast: return "broadcast";
    case Strategy::least_busy: return "least_busy";
    case Strategy::random: return "random";
    case Strategy::round_robin: return "round_robin";
    case Strategy::first: return "first";
    case Strategy::second: return "second";
    case Strategy::third: return "third";
    case Strategy::last: return "last";
    case Strategy::next: return "next";
    case Strategy::prev: return "prev";
    case Strategy::custom: return "custom";
  }
  return "?";
}

namespace detail {
namespace {

std::mt19937_64& rng() {
  thread_local std::mt19937_64 g{std::random_device{}()};
  return g;
}

std::vector<NodeId> role_nodes(Runtime& rt, const std::string& role) {
  std::vector<NodeId> out;
  for (auto& n : rt.cluster().nodes())
    if (n.alive && n.role == role) out.push_back(n.id);
  return out;
}

std::exception_ptr no_nodes(const DispatchSpec& s, const std::string& why) {
  return std::make_exception_ptr(NameNotFound("troupe: " + std::string(to_string(s.strategy)) + " dispatch to '" +
                                              s.name + "' in role '" + s.role + "': " + why));
}

/// least_busy: asks every candidate how many messages wait for its named
/// actor, then picks the smallest (at random among equals).
void least_busy(Runtime& rt, const DispatchSpec& spec, std::vector<NodeId> nodes,
                UniqueFunction<void(std::vector<DispatchTarget>, std::exception_ptr)> done) {
  struct Poll {
    std::mutex mu;
    std::vector<std::pair<std::size_t, NodeId>> sizes;
    std::size_t left;
    UniqueFunction<void(std::vector<DispatchTarget>, std::exception_ptr)> done;
    DispatchSpec spec;
  };
  auto poll = std::make_shared<Poll>();
  poll->left = nodes.size();
  poll->done = std::move(done);
  poll->spec = spec;
  auto finish_one = [poll](NodeId n, std::optional<std::size_t> size) {
    std::vector<std::pair<std::size_t, NodeId>> sizes;
    {
      std::lock_guard lk(poll->mu);
      if (size) poll->sizes.emplace_back(*size, n);
      if (--poll->left != 0) return;
      sizes = poll->sizes;
    }
    if (sizes.empty()) return poll->done({}, no_nodes(poll->spec, "no candidate answered"));
    std::size_t best = sizes[0].first;
    for (auto& [s, node] : sizes) best = std::min(best, s);
    std::vector<NodeId> ties;
    for (auto& [s, node] : sizes)
      if (s == best) ties.push_back(node);
    const NodeId pick = ties[rng()() % ties.size()];
    poll->done({DispatchTarget{pick, poll->spec.name, 0}}, nullptr);
  };
  auto& core = core_of(rt);
  for (NodeId n : nodes) {
    if (n == core.node()) {
      auto cell = core.find_local(spec.name);
      finish_one(n, cell ? std::optional<std::size_t>(cell->mailbox_size()) : std::nullopt);
      continue;
    }
    Promise<std::size_t> p(core.waiter());
    p.get_future().on_complete([finish_one, n](Future<std::size_t> f) mutable {
      try {
        finish_one(n, f.take());
      } catch (...) {
        finish_one(n, std::nullopt);  // lost, or no such name there: not a candidate
      }
    });
    core.remote()->mailbox_size_named(n, spec.name, std::move(p));
  }
}

}  // namespace

Core& core_of(Runtime& rt) noexcept { return rt.core(); }

void resolve_dispatch(Runtime& rt, const DispatchSpec& spec,
                      UniqueFunction<void(std::vector<DispatchTarget>, std::exception_ptr)> done) {
  auto nodes = role_nodes(rt, spec.role);
  if (spec.strategy == Strategy::custom) {
    auto fn = rt.names().dispatcher(spec.custom);
    if (!fn) return done({}, no_nodes(spec, "no dispatcher is registered as '" + spec.custom + "' on this node"));
    std::vector<DispatchTarget> targets;
    try {
      targets = fn(DispatchContext{spec.role, spec.name, rt.node(), nodes});
    } catch (...) {
      return done({}, std::current_exception());
    }
    return done(std::move(targets), nullptr);
  }
  if (nodes.empty()) return done({}, no_nodes(spec, "the role has no live node"));
  auto one = [&](NodeId n) { done({DispatchTarget{n, spec.name, 0}}, nullptr); };
  auto nth = [&](std::size_t i) {
    if (i >= nodes.size())
      return done({}, no_nodes(spec, "the role has only " + std::to_string(nodes.size()) + " live node(s)"));
    one(nodes[i]);
  };
  const NodeId self = rt.node();
  switch (spec.strategy) {
    case Strategy::broadcast: {
      std::vector<DispatchTarget> all;
      for (NodeId n : nodes) all.push_back(DispatchTarget{n, spec.name, 0});
      return done(std::move(all), nullptr);
    }
    case Strategy::random: return one(nodes[rng()() % nodes.size()]);
    case Strategy::round_robin: {
      const auto k = rt.names().next_round_robin(spec.role + '\x1f' + spec.name);
      return one(nodes[k % nodes.size()]);
    }
    case Strategy::first: return nth(0);
    case Strategy::second: return nth(1);
    case Strategy::third: return nth(2);
    case Strategy::last: return one(nodes.back());
    case Strategy::next: {
      auto it = std::upper_bound(nodes.begin(), nodes.end(), self);
      return one(it == nodes.end() ? nodes.front() : *it);
    }
    case Strategy::prev: {
      auto it = std::lower_bound(nodes.begin(), nodes.end(), self);
      return one(it == nodes.begin() ? nodes.back() : *std::prev(it));
    }
    case Strategy::least_busy: return least_busy(rt, spec, std::move(nodes), std::move(done));
    case Strategy::custom: break;
  }
  done({}, no_nodes(spec, "unknown strategy"));
}

void send_to_target(Runtime& rt, const DispatchTarget& t, std::unique_ptr<CallBase> call) {
  auto& core = rt.core();
  if (t.node == core.node()) {
    auto cell = t.actor != 0 ? core.find_cell(t.actor) : core.find_local(t.name);
    if (!cell) {
      if (t.actor != 0) return call->fail(std::make_exception_ptr(ActorExited(t.node, t.actor)));
      return call->fail(std::make_exception_ptr(
          NameNotFound("troupe: no actor is registered as '" + t.name + "' on node " + std::to_string(t.node))));
    }
    cell->enqueue(call.release());
    return;
  }
  auto* link = core.remote();
  if (link == nullptr)
    return call->fail(std::make_exception_ptr(Error("troupe: a local runtime has no node " + std::to_string(t.node))));
  if (t.actor != 0) {
    link->send_call(t.node, t.actor, std::move(call));
  } else {
    link->send_named(t.node, t.name, std::move(call));
  }
}

}  // namespace detail
}  // namespace troupe
