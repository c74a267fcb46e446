// Compile-time facts about an actor method named by a member pointer.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "troupe/fwd.hpp"

namespace troupe::detail {

/// Argument tuples of plain numbers only: they never hold a large block, and
/// go to and from the wire element by element.
template <class Tuple> struct all_arithmetic : std::false_type {};
template <class... T> struct all_arithmetic<std::tuple<T...>> : std::conjunction<std::is_arithmetic<T>...> {};

/// Types that only point at data they do not own: a message holding one would
/// point into the sender's memory (a temporary string, say) when the actor
/// runs, on another thread, maybe after the data is gone.
template <class T> struct is_view : std::false_type {};
template <class C, class Tr> struct is_view<std::basic_string_view<C, Tr>> : std::true_type {};
template <class T, std::size_t E> struct is_view<std::span<T, E>> : std::true_type {};
template <class Tuple> struct args_hold_views : std::false_type {};
template <class... T> struct args_hold_views<std::tuple<T...>> : std::disjunction<is_view<T>...> {};

/// Parameter lists with a reference among them.
template <class Tuple> struct params_have_reference : std::false_type {};
template <class... P> struct params_have_reference<std::tuple<P...>> : std::disjunction<std::is_reference<P>...> {};

template <class F> inline constexpr bool always_false = false;

/// Anything but a member function of an object an actor can be called on.
template <class F>
struct MemFn {
  static_assert(always_false<F>,
                "troupe: an actor method must be a non-static member function callable on an lvalue object: "
                "not &&-qualified (the actor is never an rvalue) and not volatile");
};

#define TROUPE_DETAIL_MEMFN(QUAL, IS_CONST)                 \
  template <class C, class R, class... P>                   \
  struct MemFn<R (C::*)(P...) QUAL> {                       \
    using Class = C;                                        \
    using Return = R;                                       \
    using Params = std::tuple<P...>;                        \
    using Args = std::tuple<std::decay_t<P>...>;            \
    static constexpr std::size_t arity = sizeof...(P);      \
    static constexpr bool is_const = IS_CONST;              \
  };
TROUPE_DETAIL_MEMFN(, false)
TROUPE_DETAIL_MEMFN(const, true)
TROUPE_DETAIL_MEMFN(noexcept, false)
TROUPE_DETAIL_MEMFN(const noexcept, true)
TROUPE_DETAIL_MEMFN(&, false)
TROUPE_DETAIL_MEMFN(const&, true)
TROUPE_DETAIL_MEMFN(& noexcept, false)
TROUPE_DETAIL_MEMFN(const& noexcept, true)
#undef TROUPE_DETAIL_MEMFN

template <class R> struct Unwrap { using type = R; };
template <class R> struct Unwrap<Task<R>> { using type = R; };
template <class R> struct Unwrap<Future<R>> { using type = R; };
/// Results whose value comes later: a Task or a Future.
template <class R> inline constexpr bool is_deferred_result = false;
template <class R> inline constexpr bool is_deferred_result<Task<R>> = true;
template <class R> inline constexpr bool is_deferred_result<Future<R>> = true;

/// Facts about the method M: its class, its argument tuple, and the type an ask
/// of it yields (Task<R> and Future<R> unwrap to R). A method that returns a
/// reference yields a copy (or, for R&&, what is moved out), made inside the
/// actor's turn: nothing outside the actor ever refers into it.
template <auto M>
struct Method : MemFn<decltype(M)> {
  using Base = MemFn<decltype(M)>;
  using Result = std::remove_cvref_t<typename Unwrap<typename Base::Return>::type>;
  static_assert(!std::is_reference_v<typename Base::Return> ||
                    !is_deferred_result<std::remove_cvref_t<typename Base::Return>>,
                "troupe: a method that returns a Future or a Task must return it by value (an ask yields what it "
                "completes with, and the actor must not keep a Future it handed out)");
  static_assert(!std::is_reference_v<typename Base::Return> ||
                    is_deferred_result<std::remove_cvref_t<typename Base::Return>> ||
                    std::is_constructible_v<Result, typename Base::Return>,
                "troupe: a method that returns a reference yields a copy of what it refers to, and this type "
                "cannot be copied from it (return by value, or return R&& to move it out)");
};

/// The text after "<param> = " in a compiler's pretty function name: the
/// template argument as written by the compiler (for diagnostics only).
constexpr std::string_view template_argument(std::string_view pretty, std::string_view param) {
  auto b = pretty.find(param);
  if (b == std::string_view::npos) return pretty;
  b += param.size();
  return pretty.substr(b, pretty.find_first_of(";]", b) - b);
}
template <std::size_t N>
constexpr auto to_char_array(std::string_view s) {
  std::array<char, N + 1> a{};
  for (std::size_t i = 0; i < N; ++i) a[i] = s[i];
  return a;
}
template <auto M>
constexpr std::string_view pretty_method_name() {
  return template_argument(__PRETTY_FUNCTION__, "M = ");
}
template <class T>
constexpr std::string_view pretty_type_name() {
  return template_argument(__PRETTY_FUNCTION__, "T = ");
}
template <auto M>
inline constexpr auto method_name_storage = to_char_array<pretty_method_name<M>().size()>(pretty_method_name<M>());
template <class T>
inline constexpr auto type_name_storage = to_char_array<pretty_type_name<T>().size()>(pretty_type_name<T>());

/// A unique address per method of an actor class, used as a key in this
/// process's method table (never sent over the wire: wire ids come from
/// TROUPE_REMOTE's names). A base class's method called on two derived
/// classes is two methods: C is the actor's class, M may belong to a base.
struct MethodTag {
  const char* debug_name;
  /// The wire registry's entry for this method, remembered once the registry
  /// is frozen (entries never move or change after that).
  mutable std::atomic<const void*> entry{nullptr};
};
template <auto M, class C>
inline const MethodTag method_tag{method_name_storage<M>.data()};

/// A unique address per actor class, same purpose as MethodTag.
struct TypeTag {
  const char* debug_name;
};
template <class T>
inline const TypeTag type_tag{type_name_storage<T>.data()};

/// Calls M on obj with the stored arguments (moved, or passed as lvalues where
/// the parameter is a non-const lvalue reference).
template <auto M, class Obj, class Tuple>
decltype(auto) invoke_method(Obj& obj, Tuple& args) {
  using Params = typename Method<M>::Params;
  return [&]<std::size_t... I>(std::index_sequence<I...>) -> decltype(auto) {
    return (obj.*M)(std::forward<std::tuple_element_t<I, Params>>(std::get<I>(args))...);
  }(std::make_index_sequence<std::tuple_size_v<Params>>{});
}

template <class T>
concept NonReentrant = requires { requires T::troupe_reentrant == false; };

}  // namespace troupe::detail
