// Future<T> and Promise<T>: the result of an ask. Errors travel inside and are
// rethrown by get() and co_await.
#pragma once

#include <chrono>
#include <coroutine>
#include <exception>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "troupe/detail/future_state.hpp"
#include "troupe/error.hpp"

namespace troupe {

template <class T> class Future;

namespace detail {
template <class T> struct is_future : std::false_type {};
template <class T> struct is_future<Future<T>> : std::true_type { using value_type = T; };
template <class T> inline constexpr bool is_future_v = is_future<std::decay_t<T>>::value;

template <class F, class T>
struct then_result {
  using type = std::invoke_result_t<F, T>;
};
template <class F>
struct then_result<F, void> {
  using type = std::invoke_result_t<F>;
};
template <class U> struct flatten { using type = U; };
template <class U> struct flatten<Future<U>> { using type = U; };
}  // namespace detail

template <class T>
class Promise {
 public:
  Promise() : s_(std::make_shared<detail::State<T>>(nullptr)) {}
  explicit Promise(detail::WaiterSlot* w) : s_(std::make_shared<detail::State<T>>(w)) {}
  Promise(Promise&&) noexcept = default;
  Promise& operator=(Promise&& o) noexcept {
    if (this != &o) {
      abandon();
      s_ = std::move(o.s_);
    }
    return *this;
  }
  Promise(const Promise&) = delete;
  Promise& operator=(const Promise&) = delete;
  ~Promise() { abandon(); }

  /// Its one future. A second call throws troupe::Error, as std::promise
  /// does: two futures would share one value and one continuation.
  Future<T> get_future() const {
    if (s_ && !s_->claim_future()) throw Error("troupe: this Promise's future was taken already (a Promise has one)");
    return Future<T>(s_);
  }

  /// Sets its result once: a second call (or one on a moved-from Promise)
  /// throws troupe::Error. If making the value throws, the future gets that
  /// error, and the exception goes on to the caller.
  template <class... A>
  void set_value(A&&... a) {
    auto s = std::move(s_);
    if (!s) no_state();
    s->set_value(std::forward<A>(a)...);
  }
  void set_exception(std::exception_ptr e) {
    auto s = std::move(s_);
    if (!s) no_state();
    s->set_error(std::move(e));
  }
  template <class E>
  void set_error(E&& e) {
    set_exception(std::make_exception_ptr(std::forward<E>(e)));
  }
  bool valid() const noexcept { return s_ != nullptr; }

 private:
  [[noreturn]] static void no_state() {
    throw Error("troupe: this Promise has no result to set (it was set already, or the Promise moved)");
  }
  void abandon() noexcept {
    if (s_) {
      try {
        s_->set_error(std::make_exception_ptr(Error("troupe: promise dropped without a result")));
      } catch (...) {
        // No memory for those words: the waiter learns of the shortage (the
        // exception at hand, which needs none), rather than wait for ever.
        try {
          s_->set_error(std::current_exception());
        } catch (...) {
        }
      }
      s_.reset();
    }
  }
  std::shared_ptr<detail::State<T>> s_;
};

template <class T>
class Future {
 public:
  using value_type = T;
  Future() = default;
  explicit Future(std::shared_ptr<detail::State<T>> s) : s_(std::move(s)) {}
  Future(Future&&) noexcept = default;
  Future& operator=(Future&&) noexcept = default;
  Future(const Future&) = delete;
  Future& operator=(const Future&) = delete;

  bool valid() const noexcept { return s_ != nullptr; }
  bool ready() const noexcept { return s_ && s_->ready(); }

  /// Blocks until the result is there. For driver code: inside an actor, use co_await.
  /// On a future that is ready it never blocks, so it may be called anywhere
  /// (in an on_complete callback, say); otherwise not inside an actor or on a
  /// runtime thread (troupe::Error).
  T get() {
    check_valid();
    if (!s_->ready()) {
      detail::check_blocking_allowed("Future::get()");
      s_->wait();
    }
    return take();
  }
  /// Like get(), but throws troupe::Timeout if the result is not there in time.
  template <class Rep, class Per>
  T get_for(std::chrono::duration<Rep, Per> d) {
    check_valid();
    if (!wait_for(d)) throw Timeout("troupe: Future::get_for timed out");
    return take();
  }
  void wait() {
    check_valid();
    if (s_->ready()) return;
    detail::check_blocking_allowed("Future::wait()");
    s_->wait();
  }
  template <class Rep, class Per>
  bool wait_for(std::chrono::duration<Rep, Per> d) {
    check_valid();
    if (s_->ready()) return true;
    detail::check_blocking_allowed("Future::wait_for()");
    return s_->wait(detail::deadline_after(d));
  }

  /// Calls f with the value once it is there (on the thread that delivers it; keep
  /// f short). Errors skip f and propagate. f may return a Future, which is flattened.
  template <class F>
  auto then(F&& f) -> Future<typename detail::flatten<typename detail::then_result<F, T>::type>::type>;

  /// Calls f(Future<T>&&) once ready, with the value or the error inside.
  template <class F>
  void on_complete(F&& f) {
    check_valid();
    auto s = s_;
    s->on_ready([s, f = std::forward<F>(f)]() mutable { f(Future<T>(std::move(s))); });
    s_.reset();
  }

  struct Awaiter {
    std::shared_ptr<detail::State<T>> s;
    bool await_ready() const noexcept { return s->ready(); }
    void await_suspend(std::coroutine_handle<> h) {
      s->on_ready([target = detail::ResumeTarget::here(h)]() mutable { target.resume(); });
    }
    T await_resume() {
      if constexpr (std::is_void_v<T>) {
        s->take();
      } else {
        return s->take();
      }
    }
  };
  Awaiter operator co_await() && {
    check_valid();
    return Awaiter{std::move(s_)};
  }

  // Internal: precondition ready().
  T take() {
    auto s = std::move(s_);
    if constexpr (std::is_void_v<T>) {
      s->take();
    } else {
      return s->take();
    }
  }
  const std::shared_ptr<detail::State<T>>& state() const noexcept { return s_; }

 private:
  /// A future whose value was taken (get, co_await, then, on_complete) or
  /// that was moved from, or made empty, has nothing left to give.
  void check_valid() const {
    if (!s_) throw Error("troupe: this Future is empty (its result was taken already, or it was moved from)");
  }
  std::shared_ptr<detail::State<T>> s_;
};

template <class T, class... A>
Future<T> make_ready_future(A&&... a) {
  auto s = std::make_shared<detail::State<T>>(nullptr);
  s->set_value(std::forward<A>(a)...);
  return Future<T>(std::move(s));
}

template <class T>
Future<T> make_error_future(std::exception_ptr e) {
  auto s = std::make_shared<detail::State<T>>(nullptr);
  s->set_error(std::move(e));
  return Future<T>(std::move(s));
}

template <class T, class E>
Future<T> make_error_future(E&& e) {
  return make_error_future<T>(std::make_exception_ptr(std::forward<E>(e)));
}

namespace detail {
/// Moves a completed future's value, or its error, into a promise.
template <class U>
void settle(Promise<U>& p, Future<U>& done) {
  try {
    if constexpr (std::is_void_v<U>) {
      done.take();
      p.set_value();
    } else {
      p.set_value(done.take());
    }
  } catch (...) {
    // (Unless the error came from making the value: the promise has it then.)
    if (p.valid()) p.set_exception(std::current_exception());
  }
}

template <class U, class F, class... A>
void fulfil_with(Promise<U>& p, F& f, A&&... a) {
  using R = std::invoke_result_t<F&, A...>;
  if constexpr (is_future_v<R>) {
    auto inner = f(std::forward<A>(a)...);
    if (!inner.valid()) throw Error("troupe: a continuation returned an empty Future");
    inner.on_complete([p = std::move(p)](Future<U> done) mutable { settle(p, done); });
  } else if constexpr (std::is_void_v<R>) {
    f(std::forward<A>(a)...);
    p.set_value();
  } else {
    p.set_value(f(std::forward<A>(a)...));
  }
}
}  // namespace detail

template <class T>
template <class F>
auto Future<T>::then(F&& f)
    -> Future<typename detail::flatten<typename detail::then_result<F, T>::type>::type> {
  using U = typename detail::flatten<typename detail::then_result<F, T>::type>::type;
  check_valid();
  Promise<U> p(s_->waiter());
  auto out = p.get_future();
  auto s = std::move(s_);
  auto* raw = s.get();
  raw->on_ready([s = std::move(s), p = std::move(p), f = std::forward<F>(f)]() mutable {
    if (s->has_error()) {
      p.set_exception(s->error());
      return;
    }
    try {
      if constexpr (std::is_void_v<T>) {
        detail::fulfil_with(p, f);
      } else {
        detail::fulfil_with(p, f, s->take());
      }
    } catch (...) {
      if (p.valid()) p.set_exception(std::current_exception());
    }
  });
  return out;
}

/// Completes when every future has; holds the values in order, or the first error
/// (by index) once all have completed.
template <class T>
auto when_all(std::vector<Future<T>> fs)
    -> Future<std::conditional_t<std::is_void_v<T>, void, std::vector<detail::Stored<T>>>> {
  using Out = std::conditional_t<std::is_void_v<T>, void, std::vector<detail::Stored<T>>>;
  struct Gather {
    explicit Gather(std::size_t n) : slots(n), errors(n), remaining(n) {}
    std::vector<std::optional<detail::Stored<T>>> slots;
    std::vector<std::exception_ptr> errors;
    std::atomic<std::size_t> remaining;
    Promise<Out> promise;
    void finish() {
      for (auto& e : errors)
        if (e) return promise.set_exception(e);
      try {
        if constexpr (std::is_void_v<T>) {
          promise.set_value();
        } else {
          std::vector<T> out;
          out.reserve(slots.size());
          for (auto& v : slots) out.push_back(std::move(*v));
          promise.set_value(std::move(out));
        }
      } catch (...) {  // no memory for the vector, or a value's move threw: the future gets that error
        if (promise.valid()) promise.set_exception(std::current_exception());
      }
    }
  };
  auto g = std::make_shared<Gather>(fs.size());
  if (!fs.empty() && fs[0].valid())
    g->promise = Promise<Out>(fs[0].state()->waiter());
  auto out = g->promise.get_future();
  if (fs.empty()) {
    g->finish();
    return out;
  }
  for (std::size_t i = 0; i < fs.size(); ++i) {
    fs[i].on_complete([g, i](Future<T> f) {
      try {
        if constexpr (std::is_void_v<T>) {
          f.take();
          g->slots[i].emplace();
        } else {
          g->slots[i].emplace(f.take());
        }
      } catch (...) {
        g->errors[i] = std::current_exception();
      }
      if (g->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) g->finish();
    });
  }
  return out;
}

}  // namespace troupe
