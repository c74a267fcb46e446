// A move-only type-erased callable (std::move_only_function is C++23).
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

namespace troupe::detail {

template <class Sig> class UniqueFunction;

template <class R, class... A>
class UniqueFunction<R(A...)> {
 public:
  UniqueFunction() = default;
  UniqueFunction(std::nullptr_t) {}
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, UniqueFunction>>>
  UniqueFunction(F&& f) : impl_(std::make_unique<Impl<std::decay_t<F>>>(std::forward<F>(f))) {}

  UniqueFunction(UniqueFunction&&) noexcept = default;
  UniqueFunction& operator=(UniqueFunction&&) noexcept = default;

  explicit operator bool() const noexcept { return impl_ != nullptr; }
  R operator()(A... a) { return impl_->call(std::forward<A>(a)...); }

 private:
  struct Base {
    virtual ~Base() = default;
    virtual R call(A... a) = 0;
  };
  template <class F>
  struct Impl final : Base {
    explicit Impl(F&& f) : f_(std::move(f)) {}
    explicit Impl(const F& f) : f_(f) {}
    R call(A... a) override { return f_(std::forward<A>(a)...); }
    F f_;
  };
  std::unique_ptr<Base> impl_;
};

}  // namespace troupe::detail
