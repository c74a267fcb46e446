// ActorRef<T>: the address of an actor of class T, on this node or another.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "troupe/detail/call_message.hpp"
#include "troupe/detail/core.hpp"
#include "troupe/detail/method_traits.hpp"
#include "troupe/error.hpp"
#include "troupe/future.hpp"

namespace troupe {

namespace detail {
/// Resolves (node, actor) to a live local cell while a message is decoded.
std::shared_ptr<ActorCell> resolve_local(Core* core, NodeId node, ActorId actor);
Core* decoding_core() noexcept;
}  // namespace detail

/// Copyable, comparable, hashable and serializable (inside messages, with Cereal)
/// address of an actor. tell/ask work the same whether the actor is local or not.
template <class T>
class ActorRef {
 public:
  ActorRef() = default;

  NodeId node() const noexcept { return node_; }
  ActorId id() const noexcept { return id_; }
  bool valid() const noexcept { return id_ != 0; }
  explicit operator bool() const noexcept { return valid(); }
  bool is_local() const noexcept { return cell_ != nullptr; }

  /// Sends M(args...) without waiting. Messages from one sender to one actor
  /// are handled in send order. A tell to an exited actor is dropped.
  template <auto M, class... A>
  void tell(A&&... a) const {
    check_method<M, A...>();
    if (cell_) {
      cell_->enqueue(new detail::CallMessage<M, T>(std::nullopt, std::forward<A>(a)...));
    } else if constexpr (detail::all_arithmetic<typename detail::Method<M>::Args>::value) {
      const detail::CallMessage<M, T> call(std::nullopt, std::forward<A>(a)...);
      if (remote_target()) link().send_tell(node_, id_, call);
    } else {
      send_remote(std::make_unique<detail::CallMessage<M, T>>(std::nullopt, std::forward<A>(a)...));
    }
  }

  /// Calls M(args...) and returns the future of its result (Task<R> and
  /// Future<R> results unwrap to R). Errors arrive inside the future.
  template <auto M, class... A>
  Future<typename detail::Method<M>::Result> ask(A&&... a) const {
    check_method<M, A...>();
    using R = typename detail::Method<M>::Result;
    Promise<R> p(waiter());
    auto f = p.get_future();
    if (cell_) {
      cell_->enqueue(new detail::CallMessage<M, T>(std::move(p), std::forward<A>(a)...));
    } else if constexpr (detail::all_arithmetic<typename detail::Method<M>::Args>::value) {
      detail::CallMessage<M, T> call(std::move(p), std::forward<A>(a)...);  // encoded before send_ask returns
      if (remote_target()) {
        link().send_ask(node_, id_, call);
      } else {  // a local actor that is gone
        call.fail(std::make_exception_ptr(ActorExited(node_, id_)));
      }
    } else {
      send_remote(std::make_unique<detail::CallMessage<M, T>>(std::move(p), std::forward<A>(a)...));
    }
    return f;
  }

  /// Stops the actor after the messages already sent to it. Throws
  /// std::bad_alloc, and the actor runs on, if there is no memory for it.
  void stop() const {
    if (cell_) {
      cell_->request_stop();
    } else if (valid() && !(core_ && node_ == core_->node())) {
      link().stop(node_, id_);
    }
  }

  /// Messages waiting in the actor's mailbox.
  Future<std::size_t> mailbox_size() const {
    if (cell_) return make_ready_future<std::size_t>(cell_->mailbox_size());
    if (core_ && node_ == core_->node()) return make_error_future<std::size_t>(ActorExited(node_, id_));
    Promise<std::size_t> p(waiter());
    auto f = p.get_future();
    link().mailbox_size(node_, id_, std::move(p));
    return f;
  }

  friend bool operator==(const ActorRef& a, const ActorRef& b) noexcept {
    return a.node_ == b.node_ && a.id_ == b.id_;
  }
  friend bool operator<(const ActorRef& a, const ActorRef& b) noexcept {
    return a.node_ != b.node_ ? a.node_ < b.node_ : a.id_ < b.id_;
  }

  template <class Archive>
  void save(Archive& ar) const {
    ar(node_, id_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(node_, id_);
    core_ = detail::decoding_core();
    cell_ = detail::resolve_local(core_, node_, id_);
  }

  // ---- internal --------------------------------------------------------------
  explicit ActorRef(std::shared_ptr<detail::ActorCell> cell)
      : node_(cell->node()), id_(cell->id()), core_(&cell->core()), cell_(std::move(cell)) {}
  ActorRef(detail::Core* core, NodeId node, ActorId id)
      : node_(node), id_(id), core_(core), cell_(detail::resolve_local(core, node, id)) {}
  const std::shared_ptr<detail::ActorCell>& cell() const noexcept { return cell_; }
  detail::Core* core() const noexcept { return core_; }
  /// The same actor seen as another class (no check; used by registries).
  template <class U>
  ActorRef<U> as() const {
    ActorRef<U> r;
    r.node_ = node_;
    r.id_ = id_;
    r.core_ = core_;
    r.cell_ = cell_;
    return r;
  }

 private:
  template <class U> friend class ActorRef;

  template <auto M, class... A>
  static constexpr void check_method() {
    using Traits = detail::Method<M>;
    static_assert(std::is_base_of_v<typename Traits::Class, T> || std::is_same_v<typename Traits::Class, T>,
                  "troupe: the method does not belong to this actor's class");
    static_assert(sizeof...(A) == Traits::arity, "troupe: wrong number of arguments for this method");
    static_assert(std::is_constructible_v<typename Traits::Args, A&&...>,
                  "troupe: arguments do not convert to the method's parameters");
  }
  detail::WaiterSlot* waiter() const noexcept { return core_ ? core_->waiter() : nullptr; }
  detail::RemoteLink& link() const {
    if (!core_ || !core_->remote()) throw Error("troupe: actor reference is not bound to a runtime");
    return *core_->remote();
  }
  /// True if the actor is on another node; false for a local actor that is gone.
  bool remote_target() const {
    if (!valid()) throw Error("troupe: message sent to an empty ActorRef");
    return !(core_ && node_ == core_->node());
  }
  void send_remote(std::unique_ptr<detail::CallBase> call) const {
    if (!remote_target()) {  // a local actor that is gone
      call->fail(std::make_exception_ptr(ActorExited(node_, id_)));
      return;
    }
    link().send_call(node_, id_, std::move(call));
  }

  NodeId node_ = kInvalidNode;
  ActorId id_ = 0;
  detail::Core* core_ = nullptr;
  std::shared_ptr<detail::ActorCell> cell_;  // set when the actor lives on this node
};

}  // namespace troupe

template <class T>
struct std::hash<troupe::ActorRef<T>> {
  std::size_t operator()(const troupe::ActorRef<T>& r) const noexcept {
    return std::hash<std::uint64_t>{}((static_cast<std::uint64_t>(r.node()) << 48) ^ r.id());
  }
};
