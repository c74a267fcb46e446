// Dispatchers: send to "the actor named N on the nodes of role R", choosing the
// node(s) by a strategy. Built-in strategies, and user-defined ones registered
// by name (Runtime::register_dispatcher).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "troupe/actor_ref.hpp"
#include "troupe/detail/call_message.hpp"
#include "troupe/future.hpp"

namespace troupe {

enum class Strategy : std::uint8_t {
  broadcast,    ///< every node of the role (ask gathers every reply)
  least_busy,   ///< the node whose named actor has the fewest waiting messages (asked of the candidates)
  random,       ///< a node chosen uniformly
  round_robin,  ///< each call the next node, per (role, name), per sending node
  first,        ///< by node id order
  second,
  third,
  last,
  next,  ///< the node after the caller within the role, wrapping around
  prev,  ///< the node before the caller within the role, wrapping around
  custom,  ///< a function registered with Runtime::register_dispatcher
};
const char* to_string(Strategy s) noexcept;

/// One destination: an actor by id, or by its per-node name.
struct DispatchTarget {
  NodeId node = kInvalidNode;
  std::string name;   // used when actor == 0
  ActorId actor = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(node, name, actor);
  }
};

/// What a user-defined dispatcher sees.
struct DispatchContext {
  std::string role;
  std::string name;
  NodeId caller = kInvalidNode;
  std::vector<NodeId> nodes;  ///< the role's live nodes, sorted
};
using DispatchFn = std::function<std::vector<DispatchTarget>(const DispatchContext&)>;

/// A dispatcher as data: storable in the registry, valid on every node.
struct DispatchSpec {
  std::string role;
  std::string name;
  Strategy strategy = Strategy::first;
  std::string custom;  ///< the registered function's name, for Strategy::custom
  template <class Archive>
  void serialize(Archive& ar) {
    ar(role, name, strategy, custom);
  }
};

namespace detail {
/// Picks the targets (least_busy asks the candidates first, so it completes later).
void resolve_dispatch(Runtime& rt, const DispatchSpec& spec,
                      UniqueFunction<void(std::vector<DispatchTarget>, std::exception_ptr)> done);
/// Delivers a call to one target, here or on another node; failures land in the call.
void send_to_target(Runtime& rt, const DispatchTarget& target, std::unique_ptr<CallBase> call);
Core& core_of(Runtime& rt) noexcept;
}  // namespace detail

/// Sends to the targets a DispatchSpec chooses. Gather: ask returns every
/// target's reply (broadcast and custom strategies); otherwise the one chosen.
template <class T, bool Gather = false>
class Dispatcher {
 public:
  Dispatcher(Runtime& rt, DispatchSpec spec) : rt_(&rt), spec_(std::move(spec)) {}
  const DispatchSpec& spec() const noexcept { return spec_; }

  template <auto M, class... A>
  void tell(A&&... a) const {
    using Args = typename detail::Method<M>::Args;
    auto args = std::make_shared<Args>(std::forward<A>(a)...);
    Runtime* rt = rt_;
    detail::resolve_dispatch(*rt_, spec_, [rt, args](std::vector<DispatchTarget> targets, std::exception_ptr err) {
      if (err) return detail::report_unhandled(detail::core_of(*rt), 0, "dispatch", err);
      for (std::size_t i = 0; i < targets.size(); ++i) {
        auto call = i + 1 == targets.size() ? std::make_unique<detail::CallMessage<M, T>>(std::nullopt, std::move(*args))
                                            : std::make_unique<detail::CallMessage<M, T>>(std::nullopt, *args);
        detail::send_to_target(*rt, targets[i], std::move(call));
      }
    });
  }

  template <auto M, class... A>
  auto ask(A&&... a) const {
    using R = typename detail::Method<M>::Result;
    using Args = typename detail::Method<M>::Args;
    using Out = std::conditional_t<Gather, std::conditional_t<std::is_void_v<R>, void, std::vector<detail::Stored<R>>>, R>;
    auto args = std::make_shared<Args>(std::forward<A>(a)...);
    auto promise = std::make_shared<Promise<Out>>(detail::core_of(*rt_).waiter());
    auto out = promise->get_future();
    Runtime* rt = rt_;
    detail::resolve_dispatch(*rt_, spec_, [rt, args, promise](std::vector<DispatchTarget> targets, std::exception_ptr err) {
      if (err) return promise->set_exception(err);
      if constexpr (Gather) {
        std::vector<Future<R>> replies;
        for (auto& t : targets) {
          Promise<R> p(detail::core_of(*rt).waiter());
          replies.push_back(p.get_future());
          detail::send_to_target(*rt, t, std::make_unique<detail::CallMessage<M, T>>(std::move(p), *args));
        }
        when_all(std::move(replies)).on_complete([promise](auto all) { detail::settle(*promise, all); });
      } else {
        if (targets.empty())
          return promise->set_exception(
              std::make_exception_ptr(NameNotFound("troupe: the dispatcher chose no target")));
        Promise<R> p(detail::core_of(*rt).waiter());
        p.get_future().on_complete([promise](Future<R> f) { detail::settle(*promise, f); });
        detail::send_to_target(*rt, targets.front(),
                               std::make_unique<detail::CallMessage<M, T>>(std::move(p), std::move(*args)));
      }
    });
    return out;
  }

 private:
  Runtime* rt_;
  DispatchSpec spec_;
};

}  // namespace troupe
