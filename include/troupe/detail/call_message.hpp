// CallMessage<M, C>: a call of the method M on an actor of class C (M may
// belong to a base of C) with its arguments, and for an ask the promise of
// its result.
#pragma once

#include <exception>
#include <optional>
#include <tuple>
#include <utility>

#include "troupe/detail/actor_cell.hpp"
#include "troupe/detail/method_traits.hpp"
#include "troupe/error.hpp"
#include "troupe/future.hpp"
#include "troupe/task.hpp"

namespace troupe::detail {

/// Reports an exception that a tell's method threw (nobody waits for it).
void report_unhandled(Core& core, ActorId actor, const char* method, std::exception_ptr e) noexcept;

/// Base of every call, local or decoded from the wire: lets the remote layer
/// reach the arguments and promise without knowing M.
struct CallBase : Message {
  const MethodTag* tag = nullptr;
  /// Fails the caller (an ask's future) without running the method.
  virtual void fail(std::exception_ptr e) noexcept = 0;
  virtual bool is_ask() const noexcept = 0;
};

/// Completes an ask's promise from a coroutine result; if the coroutine is
/// destroyed unfinished (its actor exited), the caller gets ActorExited.
template <class R>
class AskCompletion {
 public:
  AskCompletion(Promise<R> p, NodeId node, ActorId actor)
      : p_(std::move(p)), node_(node), actor_(actor) {}
  AskCompletion(AskCompletion&&) noexcept = default;
  ~AskCompletion() {
    if (!p_.valid()) return;
    try {
      p_.set_exception(actor_exited(node_, actor_));
    } catch (...) {  // (a destructor: nothing may leave it)
    }
  }
  void operator()(TaskResult<R>&& r) {
    if (r.error) return p_.set_exception(r.error);
    if constexpr (std::is_void_v<R>) {
      p_.set_value();
    } else {
      p_.set_value(std::move(*r.value));
    }
  }

 private:
  Promise<R> p_;
  NodeId node_;
  ActorId actor_;
};

/// Runs M on the cell's object, an actor of class C, and hands the result to
/// `finish(TaskResult<R>&&)`. Plain values finish at once, Task<R> when the
/// coroutine completes, Future<R> when it resolves. A cell of another class
/// (a reference seen as the wrong class) gets an error, never the call.
template <auto M, class C, class Args, class Finish>
void invoke_call(ActorCell& cell, Args& args, Finish&& finish) {
  using Traits = Method<M>;
  using Ret = typename Traits::Return;
  using R = typename Traits::Result;
  using Class = typename Traits::Class;
  static_assert(std::is_base_of_v<Class, C>, "troupe: the method does not belong to this actor's class");
  TaskResult<R> out;
  // Once finish went to a coroutine or a continuation, it is theirs to call,
  // or to drop (an ask's completion then answers ActorExited): never ours.
  bool handed = false;
  try {
    if (cell.type() != &type_tag<C>)
      throw UnknownType(std::string("troupe: ") + method_tag<M, C>.debug_name + " called on an actor of class " +
                        cell.type()->debug_name);
    // Through the actor's own class: a base's subobject may not start where
    // the object does (a polymorphic derived class, a second base).
    auto& obj = static_cast<Class&>(*static_cast<C*>(cell.object()));
    if constexpr (is_task<Ret>::value) {
      static_assert(!params_have_reference<typename Traits::Params>::value,
                    "troupe: a method returning Task<R> must take its arguments by value: its call message "
                    "is gone once the coroutine first waits, and a reference parameter would dangle");
      auto task = invoke_method<M>(obj, args);  // first: if it throws, finish is still ours
      handed = true;
      cell.start_task<R>(std::move(task), std::forward<Finish>(finish));
      return;
    } else if constexpr (is_future<Ret>::value) {
      auto fut = invoke_method<M>(obj, args);
      // Checked before finish moves into the continuation: it must still be ours.
      if (!fut.valid()) throw Error(std::string("troupe: ") + method_tag<M, C>.debug_name + " returned an empty Future");
      handed = true;
      std::move(fut).on_complete(
          [f = std::forward<Finish>(finish)](Future<R> fut) mutable {
            TaskResult<R> res;
            try {
              if constexpr (std::is_void_v<R>) {
                fut.take();
                res.value.emplace();
              } else {
                res.value.emplace(fut.take());
              }
            } catch (...) {
              res.error = std::current_exception();
            }
            f(std::move(res));
          });
      return;
    } else if constexpr (std::is_void_v<Ret>) {
      invoke_method<M>(obj, args);
      out.value.emplace();
    } else {
      out.value.emplace(invoke_method<M>(obj, args));
    }
  } catch (...) {
    if (handed) return report_unhandled(cell.core(), cell.id(), method_tag<M, C>.debug_name, std::current_exception());
    out.error = std::current_exception();
  }
  // A result whose move throws leaves its error with the caller's promise and
  // throws it here too: not into the actor's turn, which cannot take it.
  try {
    finish(std::move(out));
  } catch (...) {
    report_unhandled(cell.core(), cell.id(), method_tag<M, C>.debug_name, std::current_exception());
  }
}

template <auto M, class C>
class CallMessage final : public CallBase {
 public:
  using Traits = Method<M>;
  using Args = typename Traits::Args;
  static_assert(!args_hold_views<Args>::value,
                "troupe: an actor method must not take std::string_view or std::span: the message would point into "
                "the sender's memory when the actor runs; take std::string or std::vector (by value or const&)");
  using R = typename Traits::Result;

  template <class... A>
  explicit CallMessage(std::optional<Promise<R>> p, A&&... a)
      : args(std::forward<A>(a)...), promise(std::move(p)) {
    tag = &method_tag<M, C>;
  }

  void run(ActorCell& cell) override {
    if (promise) {
      invoke_call<M, C>(cell, args, AskCompletion<R>(std::move(*promise), cell.node(), cell.id()));
    } else {
      invoke_call<M, C>(cell, args, [core = &cell.core(), id = cell.id()](TaskResult<R>&& r) {
        if (r.error) report_unhandled(*core, id, method_tag<M, C>.debug_name, r.error);
      });
    }
  }
  void reject(ActorCell& cell) noexcept override {
    fail(actor_exited(cell.node(), cell.id()));
  }
  void fail(std::exception_ptr e) noexcept override {
    if (promise && promise->valid()) promise->set_exception(std::move(e));
  }
  bool is_ask() const noexcept override { return promise.has_value(); }

  Args args;
  std::optional<Promise<R>> promise;
};

}  // namespace troupe::detail
