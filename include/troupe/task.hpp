// Task<R>: the coroutine type of actor methods that co_await other asks.
//
// A Task is lazy: it starts when the actor handles the message (or when another
// Task co_awaits it). While it is suspended on a Future, the actor handles its
// other messages (reentrancy) unless the class opts out with
//   static constexpr bool troupe_reentrant = false;
// Either way the coroutine resumes on its actor, never concurrently with it.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "troupe/detail/future_state.hpp"
#include "troupe/detail/unique_function.hpp"

namespace troupe {

namespace detail {

template <class R>
struct TaskResult {
  std::optional<Stored<R>> value;
  std::exception_ptr error;
  Stored<R> take() {
    if (error) std::rethrow_exception(error);
    return std::move(*value);
  }
};

template <class R>
struct TaskPromiseBase {
  std::coroutine_handle<> continuation;                  // awaiting parent task, if nested
  UniqueFunction<void(TaskResult<R>&&)> on_done;         // detached top-level completion
  TaskResult<R> result;

  std::suspend_always initial_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { result.error = std::current_exception(); }

  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      auto& p = h.promise();
      if (p.continuation) return p.continuation;
      auto done = std::move(p.on_done);
      TaskResult<R> result;
      result.error = p.result.error;
      try {
        if (p.result.value) result.value.emplace(std::move(*p.result.value));
      } catch (...) {  // the value's move threw: that is the task's outcome
        result.value.reset();
        result.error = std::current_exception();
      }
      h.destroy();
      if (done) {
        try {
          done(std::move(result));
        } catch (...) {  // a completion must not throw out of a noexcept resume
        }
      }
      return std::noop_coroutine();
    }
    void await_resume() const noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }
};

template <class R>
struct TaskReturn : TaskPromiseBase<R> {
  template <class V>
  void return_value(V&& v) {
    this->result.value.emplace(std::forward<V>(v));
  }
};
template <>
struct TaskReturn<void> : TaskPromiseBase<void> {
  void return_void() noexcept { this->result.value.emplace(); }
};

}  // namespace detail

template <class R = void>
class [[nodiscard]] Task {
 public:
  struct promise_type;
  using handle_type = std::coroutine_handle<promise_type>;

  struct promise_type : detail::TaskReturn<R> {
    Task get_return_object() noexcept { return Task(handle_type::from_promise(*this)); }
  };

  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    if (h_) h_.destroy();
  }

  /// co_await a Task from another Task: runs it and resumes the caller after.
  auto operator co_await() && noexcept {
    struct Awaiter {
      handle_type h;
      bool await_ready() const noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) noexcept {
        h.promise().continuation = parent;
        return h;
      }
      R await_resume() {
        if constexpr (std::is_void_v<R>) {
          h.promise().result.take();
        } else {
          return h.promise().result.take();
        }
      }
    };
    return Awaiter{h_};
  }

  /// Starts the task detached; done(result) runs once it finishes and the frame is
  /// freed. Returns the handle for bookkeeping (do not resume it yourself).
  std::coroutine_handle<> start(detail::UniqueFunction<void(detail::TaskResult<R>&&)> done) && {
    auto h = std::exchange(h_, {});
    h.promise().on_done = std::move(done);
    h.resume();
    return h;
  }

 private:
  explicit Task(handle_type h) noexcept : h_(h) {}
  handle_type h_;
};

namespace detail {
template <class T> struct is_task : std::false_type {};
template <class R> struct is_task<Task<R>> : std::true_type { using value_type = R; };
}  // namespace detail

}  // namespace troupe
