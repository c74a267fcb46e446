// The wire shape of a type: a short text naming what its bytes on the wire are
// made of (numbers of a kind and size, strings, containers, refs; a user class
// is opaque, "obj"), the same from every compiler. Two binaries that register a
// method under one name with different shapes would misread each other's
// calls: a cluster runtime compares the shapes of its nodes when it starts
// (an MPMD job runs several binaries).
#pragma once
#include <array>
#include <cstddef>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "troupe/fwd.hpp"

namespace troupe {
template <class T> class Array;
}

namespace troupe::detail {

template <class T, class = void>
struct WireShape {
  static std::string text() { return "obj"; }
};

template <class T>
std::string wire_shape() {
  if constexpr (std::is_void_v<T>) {
    return "-";
  } else {
    return WireShape<std::remove_cvref_t<T>>::text();
  }
}

template <class... T>
std::string wire_shape_list() {
  std::string out;
  ((out += (out.empty() ? "" : ","), out += wire_shape<T>()), ...);
  return out;
}

template <class T>
struct WireShape<T, std::enable_if_t<std::is_arithmetic_v<T> || std::is_enum_v<T>>> {
  static std::string text() {
    if constexpr (std::is_same_v<T, bool>) {
      return "b";
    } else if constexpr (std::is_enum_v<T>) {
      return "e" + std::to_string(sizeof(T));
    } else if constexpr (std::is_same_v<T, char>) {
      return "c";  // signed on some platforms, unsigned on others: the same bytes
    } else {
      const char kind = std::is_floating_point_v<T> ? 'f' : std::is_signed_v<T> ? 'i' : 'u';
      return kind + std::to_string(sizeof(T));
    }
  }
};

template <>
struct WireShape<std::string> {
  static std::string text() { return "str"; }
};
template <class T, class A>
struct WireShape<std::vector<T, A>> {
  static std::string text() { return "vec<" + wire_shape<T>() + ">"; }
};
template <class T, std::size_t N>
struct WireShape<std::array<T, N>> {
  static std::string text() { return "arr" + std::to_string(N) + "<" + wire_shape<T>() + ">"; }
};
template <class A, class B>
struct WireShape<std::pair<A, B>> {
  static std::string text() { return "(" + wire_shape_list<A, B>() + ")"; }
};
template <class... T>
struct WireShape<std::tuple<T...>> {
  static std::string text() { return "(" + wire_shape_list<T...>() + ")"; }
};
template <class T>
struct WireShape<std::optional<T>> {
  static std::string text() { return "opt<" + wire_shape<T>() + ">"; }
};
template <class K, class V, class C, class A>
struct WireShape<std::map<K, V, C, A>> {
  static std::string text() { return "map<" + wire_shape_list<K, V>() + ">"; }
};
template <class K, class V, class H, class E, class A>
struct WireShape<std::unordered_map<K, V, H, E, A>> {
  static std::string text() { return "umap<" + wire_shape_list<K, V>() + ">"; }
};
template <class T, class C, class A>
struct WireShape<std::set<T, C, A>> {
  static std::string text() { return "set<" + wire_shape<T>() + ">"; }
};
template <class T, class H, class E, class A>
struct WireShape<std::unordered_set<T, H, E, A>> {
  static std::string text() { return "uset<" + wire_shape<T>() + ">"; }
};
template <class T>
struct WireShape<ActorRef<T>> {
  static std::string text() { return "ref"; }
};
template <class T>
struct WireShape<Array<T>> {
  static std::string text() { return "Array<" + wire_shape<T>() + ">"; }
};

/// A method's shape: its arguments and its result ("(i4,vec<f8>)->f8").
template <class Args, class Result>
struct CallShape;
template <class... A, class Result>
struct CallShape<std::tuple<A...>, Result> {
  static std::string text() { return "(" + wire_shape_list<A...>() + ")->" + wire_shape<Result>(); }
};

}  // namespace troupe::detail
