// The wire shape of a type: a short text naming what its bytes on the wire are
// made of (numbers of a kind and size, strings, containers, refs, and a user
// class's fields in order, "{i4,vec<f8>}"), the same from every compiler. Two
// binaries that register a method under one name with different shapes would
// misread each other's calls: a cluster runtime compares the shapes of its
// nodes when it starts (an MPMD job runs several binaries).
//
// A user class is opaque ("obj") unless it asks for its fields to be
// compared (troupe::compare_wire_fields): then its shape comes from running
// its own cereal serialize() (or save(), or save_minimal(); a member, private
// with `friend class cereal::access` too, or a free function its namespace
// or namespace cereal holds) on a default-made instance with a ShapeArchive, which names each
// field by its type, never by its value. Opt-in, because that instantiates
// the class's serialization with an archive it was not written for and runs
// it at start-up. It stays opaque even so when the class has none of these,
// cannot be default-made, serializes by version (its versions may read one
// another's bytes by design), or its constructor or serialization throws.
#pragma once
#include <cereal/access.hpp>
#include <cereal/details/helpers.hpp>
#include <cereal/types/base_class.hpp>

#include <array>
#include <bitset>
#include <chrono>
#include <complex>
#include <cstddef>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "troupe/fwd.hpp"

namespace troupe {
template <class T> class Array;

/// Specialize as std::true_type for a class whose fields the nodes of a job
/// are to compare when a cluster runtime starts (a job of several binaries,
/// where two builds of one class could differ): its wire shape then names
/// its fields in order by type, "{i4,vec<f8>}", instead of "obj". The class
/// must be default-constructible (on the heap) and its serialize() must run
/// on the default-made instance with any archive, writing the same fields
/// on every node (cheap, no side effects, nothing that depends on the host).
///   template <> struct troupe::compare_wire_fields<sim::Cell> : std::true_type {};
template <class T>
struct compare_wire_fields : std::false_type {};
}  // namespace troupe

namespace troupe::detail {

template <class T>
std::string class_shape();

/// Any type not named below: a user class (class_shape).
template <class T, class = void>
struct WireShape {
  static constexpr bool user_class = true;
  static std::string text() { return class_shape<T>(); }
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
template <class T, std::size_t N>
struct WireShape<T[N]> {
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

template <class K, class V, class C, class A>
struct WireShape<std::multimap<K, V, C, A>> {
  static std::string text() { return "mmap<" + wire_shape_list<K, V>() + ">"; }
};
template <class K, class V, class H, class E, class A>
struct WireShape<std::unordered_multimap<K, V, H, E, A>> {
  static std::string text() { return "ummap<" + wire_shape_list<K, V>() + ">"; }
};
template <class T, class C, class A>
struct WireShape<std::multiset<T, C, A>> {
  static std::string text() { return "mset<" + wire_shape<T>() + ">"; }
};
template <class T, class H, class E, class A>
struct WireShape<std::unordered_multiset<T, H, E, A>> {
  static std::string text() { return "umset<" + wire_shape<T>() + ">"; }
};
template <class R, class P>
struct WireShape<std::chrono::duration<R, P>> {
  static std::string text() {
    return "dur<" + wire_shape<R>() + "," + std::to_string(P::num) + "/" + std::to_string(P::den) + ">";
  }
};
template <class C, class D>
struct WireShape<std::chrono::time_point<C, D>> {
  static std::string text() { return "time<" + wire_shape<D>() + ">"; }
};
template <std::size_t N>
struct WireShape<std::bitset<N>> {
  static std::string text() { return "bits" + std::to_string(N); }
};
template <class T, class A>
struct WireShape<std::deque<T, A>> {
  static std::string text() { return "deque<" + wire_shape<T>() + ">"; }
};
template <class T, class A>
struct WireShape<std::list<T, A>> {
  static std::string text() { return "list<" + wire_shape<T>() + ">"; }
};
template <class... T>
struct WireShape<std::variant<T...>> {
  static std::string text() { return "var<" + wire_shape_list<T...>() + ">"; }
};
template <class T>
struct WireShape<std::complex<T>> {
  static std::string text() { return "cplx<" + wire_shape<T>() + ">"; }
};
template <class T, class D>
struct WireShape<std::unique_ptr<T, D>> {
  static std::string text() { return "ptr<" + wire_shape<T>() + ">"; }
};
template <class T>
struct WireShape<std::shared_ptr<T>> {
  static std::string text() { return "sptr<" + wire_shape<T>() + ">"; }
};

namespace shape {

template <class T> struct is_nvp : std::false_type {};
template <class T> struct is_nvp<cereal::NameValuePair<T>> : std::true_type {};
template <class T> struct is_binary : std::false_type {};
template <class T> struct is_binary<cereal::BinaryData<T>> : std::true_type {};
template <class T> struct is_size_tag : std::false_type {};
template <class T> struct is_size_tag<cereal::SizeTag<T>> : std::true_type {};
template <class T> struct is_base : std::false_type {};
template <class B> struct is_base<cereal::base_class<B>> : std::true_type {};
template <class B> struct is_base<cereal::virtual_base_class<B>> : std::true_type {};

template <class T>
std::string fields_of(const T& t, bool& known);

/// What a user class's serialize() is run with to learn its shape: each
/// field it is handed adds the field's shape, by type (a vector is
/// "vec<...>" empty or not), and a nested class adds its own fields, read
/// from the instance at hand (which need not be default-made). A template
/// of a class of namespace cereal (ShapeArchive, below), so that
/// argument-dependent lookup searches that namespace too, where cereal lets
/// a class's free serialize() live (troupe's own archives are cereal's
/// classes' heirs, for the same end).
template <class AlsoLookIn>
class BasicShapeArchive {
 public:
  using is_loading = std::false_type;
  using is_saving = std::true_type;

  template <class... T>
  BasicShapeArchive& operator()(T&&... fields) {
    (add(fields), ...);
    return *this;
  }
  template <class T>
  BasicShapeArchive& operator&(T&& field) {
    add(field);
    return *this;
  }
  template <class T>
  BasicShapeArchive& operator<<(T&& field) {
    add(field);
    return *this;
  }
  void saveBinary(const void*, std::size_t) { put("bin"); }
  std::string take() {
    flush();
    return std::move(text_);
  }

 private:
  /// A field's shape; a run of one shape is written once with its count
  /// ("f8*3": a class that writes its elements one by one stays short).
  void put(const std::string& s) {
    if (repeats_ != 0 && s == last_) {
      ++repeats_;
      return;
    }
    flush();
    last_ = s;
    repeats_ = 1;
  }
  void flush() {
    if (repeats_ == 0) return;
    if (!text_.empty()) text_ += ',';
    text_ += last_;
    if (repeats_ > 1) text_ += "*" + std::to_string(repeats_);
    repeats_ = 0;
  }
  template <class T>
  void add(const T& field) {
    if constexpr (is_nvp<T>::value || std::is_base_of_v<cereal::detail::DeferredDataCore, T>) {
      add(field.value);
    } else if constexpr (is_binary<T>::value) {
      put("bin");
    } else if constexpr (is_size_tag<T>::value) {
      put("n");  // a count the class writes itself; what follows it depends on the instance
    } else if constexpr (is_base<T>::value) {
      bool known = true;
      std::string inner = fields_of(*field.base_ptr, known);
      put(known ? "base" + inner : "base:obj");
    } else if constexpr (requires { WireShape<T>::user_class; }) {
      bool known = true;
      std::string inner = fields_of(field, known);
      put(known ? inner : "obj");
    } else {
      put(WireShape<T>::text());
    }
  }

  std::string text_;
  std::string last_;
  std::size_t repeats_ = 0;
};
using ShapeArchive = BasicShapeArchive<cereal::access>;

// Free serialize/save/save_minimal are found by argument-dependent lookup
// alone, in the class's namespace or cereal's (these take nothing, so they
// never match).
void serialize() = delete;
void save() = delete;
void save_minimal() = delete;

/// Runs t's serialization with ar; false if t has none this can run (or
/// serializes by version).
template <class T>
bool run_fields(ShapeArchive& ar, T& t) {
  const T& c = t;
  if constexpr (requires { cereal::access::member_serialize(ar, t); }) {
    cereal::access::member_serialize(ar, t);
  } else if constexpr (requires { cereal::access::member_save(ar, c); }) {
    cereal::access::member_save(ar, c);
  } else if constexpr (requires { cereal::access::member_save_non_const(ar, t); }) {
    cereal::access::member_save_non_const(ar, t);
  } else if constexpr (requires { cereal::access::member_save_minimal(ar, c); }) {
    ar(cereal::access::member_save_minimal(ar, c));
  } else if constexpr (requires { serialize(ar, t); }) {
    serialize(ar, t);
  } else if constexpr (requires { save(ar, c); }) {
    save(ar, c);
  } else if constexpr (requires { save_minimal(ar, c); }) {
    ar(save_minimal(ar, c));
  } else {
    return false;
  }
  return true;
}

/// "{fields}" of the instance t; known = false if its class stays opaque. A
/// class met again inside itself (a tree's node) is "rec" there.
template <class T>
std::string fields_of(const T& t, bool& known) {
  if constexpr (!compare_wire_fields<T>::value) {
    known = false;
    return {};
  } else {
    static thread_local bool inside = false;
    if (inside) return "rec";
    inside = true;
    ShapeArchive ar;
    try {
      known = run_fields(ar, const_cast<T&>(t));  // an output archive: nothing is written to t
    } catch (...) {
      known = false;
    }
    inside = false;
    return known ? "{" + ar.take() + "}" : std::string();
  }
}

}  // namespace shape

template <class T>
std::string class_shape() {
  if constexpr (!compare_wire_fields<T>::value) {
    return "obj";  // nothing of the class's own code is instantiated or run
  } else if constexpr (std::is_default_constructible_v<T> && !std::is_abstract_v<T>) {
    bool known = true;
    std::string text;
    try {
      const auto made = std::make_unique<T>();  // on the heap: a class may hold large arrays
      text = shape::fields_of(*made, known);
    } catch (...) {
      known = false;  // its default constructor threw
    }
    return known ? text : "obj";
  } else {
    return "obj";
  }
}

/// A method's shape: its arguments and its result ("(i4,vec<f8>)->f8").
template <class Args, class Result>
struct CallShape;
template <class... A, class Result>
struct CallShape<std::tuple<A...>, Result> {
  static std::string text() { return "(" + wire_shape_list<A...>() + ")->" + wire_shape<Result>(); }
};

}  // namespace troupe::detail
