// Wire ids: stable across builds and ranks (hashes of the names TROUPE_REMOTE
// is given, never pointers or typeid names), and two registrations that would
// share an id are reported, not silently merged.
#include <gtest/gtest.h>

#include <algorithm>
#include <unordered_set>
#include <type_traits>
#include <chrono>
#include <bitset>
#include <array>
#include <complex>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "troupe/array.hpp"
#include "troupe/remote.hpp"
#include "troupe/wire/registry.hpp"

using troupe::detail::fnv1a64;
using troupe::detail::WireRegistry;

namespace pinned {

class Pinned {
 public:
  int get() const { return 7; }
  void set(int v) { v_ = v; }

 private:
  int v_ = 0;
};
TROUPE_REMOTE(Pinned, troupe::init<>, &Pinned::get, &Pinned::set);

/// Registered here, and again by hand below.
class Twin {
 public:
  int get() const { return 8; }
};
TROUPE_REMOTE(Twin, troupe::init<>, &Twin::get);

/// Two methods, registered by hand below under one name.
struct Twice {
  int a() { return 1; }
  int b() { return 2; }
};

/// Two unrelated classes, registered by hand below under one wire name.
struct ClashA {
  int a() { return 1; }
};
struct ClashB {
  int b() { return 2; }
};

}  // namespace pinned

TEST(WireRegistry, IdsAreHashesOfTheRegisteredNames) {
  // FNV-1a 64's published test vectors: the hash is the standard one.
  EXPECT_EQ(fnv1a64(""), 14695981039346656037ull);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  // The ids of a registered class and method are fixed numbers, the same in
  // every build of this source and on every rank (computed outside C++).
  const auto* m = WireRegistry::instance().method(fnv1a64("Pinned::get"));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->id, 7309684615214666057ull);
  EXPECT_EQ(m->name, "Pinned::get");
  const auto* c = WireRegistry::instance().cls(fnv1a64("class Pinned"));
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->id, 7717329937214915911ull);
  EXPECT_EQ(m->class_id, c->id);
  EXPECT_NE(WireRegistry::instance().method(fnv1a64("Pinned::set")), nullptr);
  for (const auto& p : WireRegistry::instance().problems()) EXPECT_EQ(p.find("Pinned"), std::string::npos) << p;
}

TEST(WireRegistry, CollisionsAreReported) {
  auto& reg = WireRegistry::instance();
  const auto before = reg.problems().size();
  reg.add_method(troupe::detail::make_method_entry<&pinned::Twice::a, pinned::Twice>(0, "Twice::same"));
  reg.add_method(troupe::detail::make_method_entry<&pinned::Twice::b, pinned::Twice>(0, "Twice::same"));
  const auto problems = reg.problems();
  ASSERT_EQ(problems.size(), before + 1);
  EXPECT_NE(problems[before].find("same wire id"), std::string::npos) << problems[before];
  // The first registration stands; the second is not merged into it.
  const auto* m = reg.method(fnv1a64("Twice::same"));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->tag, (&troupe::detail::method_tag<&pinned::Twice::a, pinned::Twice>));
  EXPECT_EQ(reg.method((&troupe::detail::method_tag<&pinned::Twice::b, pinned::Twice>)), nullptr);
}

TEST(WireRegistry, TwoClassesUnderOneWireNameAreReported) {
  // Two classes (two namespaces' Solver, say) registered under one wire name
  // would share a class id: a spawn of one would build the other.
  auto& reg = WireRegistry::instance();
  const auto before = reg.problems().size();
  using troupe::detail::register_remote;
  register_remote<pinned::ClashA, troupe::init<>>("Clash", "troupe::init<>");
  EXPECT_EQ(reg.problems().size(), before);
  register_remote<pinned::ClashB, troupe::init<>>("Clash", "troupe::init<>");
  const auto problems = reg.problems();
  ASSERT_EQ(problems.size(), before + 1);
  EXPECT_NE(problems[before].find("class 'Clash' has the same wire id as 'Clash'"), std::string::npos)
      << problems[before];
  // The first registration stands; the second class has no entry at all.
  const auto* c = reg.cls(fnv1a64("class Clash"));
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->tag, &troupe::detail::type_tag<pinned::ClashA>);
  EXPECT_EQ(reg.cls(&troupe::detail::type_tag<pinned::ClashB>), nullptr);
}

TEST(WireRegistry, AMethodOfABaseIsNamedForTheClassItIsRegisteredWith) {
  using troupe::detail::method_wire_names;
  EXPECT_EQ(method_wire_names("Pinned", "troupe::init<int>, &Pinned::get, & Pinned :: set"),
            (std::vector<std::string>{"Pinned::get", "Pinned::set"}));
  EXPECT_EQ(method_wire_names("ns::Meter", "troupe::init<>, &Stats::hit, &ns::Meter::level"),
            (std::vector<std::string>{"ns::Meter::Stats::hit", "ns::Meter::level"}));
  // A class whose name begins another's is not mistaken for it.
  EXPECT_EQ(method_wire_names("Pin", "troupe::init<>, &Pinned::get"), (std::vector<std::string>{"Pin::Pinned::get"}));
  // Registered under a name of its own (TROUPE_REMOTE_AS): the class's
  // written name gives way to it, a base's stays.
  EXPECT_EQ(method_wire_names("fluid::Solver", "troupe::init<>, &Solver::step, &fluid::Solver::kind, &Base::id", "Solver"),
            (std::vector<std::string>{"fluid::Solver::step", "fluid::Solver::kind", "fluid::Solver::Base::id"}));
}

namespace shapes {
enum class Colour : std::uint16_t { red };
struct Reading {  // a member serialize()
  int station = 0;
  std::vector<double> values;
  std::string note;
  template <class A>
  void serialize(A& ar) {
    ar(station, CEREAL_NVP(values), note);
  }
};
class Hidden {  // private, as cereal allows
  friend class cereal::access;
  template <class A>
  void serialize(A& ar) {
    ar(x_);
  }
  std::int64_t x_ = 0;
};
struct Split {  // save and load apart
  float f = 0;
  template <class A>
  void save(A& ar) const {
    ar(f, std::uint8_t{1});
  }
  template <class A>
  void load(A& ar) {
    std::uint8_t ignored = 0;
    ar(f, ignored);
  }
};
struct Free {  // a free serialize(), found by argument-dependent lookup
  bool on = false;
  Reading last;  // a class inside a class
};
template <class A>
void serialize(A& ar, Free& f) {
  ar(f.on, f.last);
}
struct Minimal {  // written as one number
  double kelvin = 0;
  template <class A>
  double save_minimal(const A&) const {
    return kelvin;
  }
  template <class A>
  void load_minimal(const A&, const double& v) {
    kelvin = v;
  }
};
struct Derived : Reading {
  std::uint16_t extra = 0;
  template <class A>
  void serialize(A& ar) {
    ar(cereal::base_class<Reading>(this), extra);
  }
};
struct Big {  // larger than a thread's stack
  std::array<double, 4 << 20> cells{};
  std::int32_t raw[2] = {0, 0};
  template <class A>
  void serialize(A& ar) {
    ar(cells, raw);
  }
};
struct Node {  // holds itself
  int value = 0;
  std::vector<Node> children;
  template <class A>
  void serialize(A& ar) {
    ar(value, children);
  }
};
struct Packed {  // its own count and raw bytes
  std::vector<std::uint32_t> ids;
  template <class A>
  void serialize(A& ar) {
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(ids.size())));
    if (!ids.empty()) ar(cereal::binary_data(ids.data(), ids.size() * sizeof(std::uint32_t)));
  }
};
struct NoDefault {  // cannot be made by default: opaque on its own, read inside a class that holds one
  explicit NoDefault(int v) : v(v) {}
  int v;
  template <class A>
  void serialize(A& ar) {
    ar(v);
  }
};
struct HoldsNoDefault {
  NoDefault inner{3};
  template <class A>
  void serialize(A& ar) {
    ar(inner);
  }
};
struct Versioned {  // its versions may read one another's bytes by design
  int a = 0;
  template <class A>
  void serialize(A& ar, std::uint32_t) {
    ar(a);
  }
};
struct Plain {  // no serialization at all
  int a = 0;
};
struct NotAsked {  // has a serialize(), but did not ask for its fields to be compared
  int a = 0;
  template <class A>
  void serialize(A& ar) {
    ar(a);
  }
};
struct Throws {  // its default constructor throws
  Throws() { throw std::runtime_error("no"); }
  int a = 0;
  template <class A>
  void serialize(A& ar) {
    ar(a);
  }
};
struct Triple {  // a run of one shape
  double x = 0, y = 0, z = 0;
  template <class A>
  void serialize(A& ar) {
    ar(x, y, z);
  }
};
/// Written for troupe's own archives only: instantiated with the shape
/// archive it would not compile. It did not ask, so it never is.
struct WireOnly {
  int a = 0;
  template <class A>
  void serialize(A& ar) {
    static_assert(!std::is_same_v<A, troupe::detail::shape::ShapeArchive>, "never run for a shape");
    ar(a);
  }
};
struct InCereal {  // a free serialize() in namespace cereal, which cereal allows
  std::int16_t a = 0;
  std::string b;
};
}  // namespace shapes

namespace cereal {
template <class A>
void serialize(A& ar, shapes::InCereal& c) {
  ar(c.a, c.b);
}
}  // namespace cereal

#define COMPARED(T) \
  template <>       \
  struct troupe::compare_wire_fields<shapes::T> : std::true_type {}
COMPARED(Reading);
COMPARED(Hidden);
COMPARED(Split);
COMPARED(Free);
COMPARED(Minimal);
COMPARED(Derived);
COMPARED(Big);
COMPARED(Node);
COMPARED(Packed);
COMPARED(NoDefault);
COMPARED(HoldsNoDefault);
COMPARED(Versioned);
COMPARED(Plain);
COMPARED(Throws);
COMPARED(Triple);
COMPARED(InCereal);
#undef COMPARED

namespace shapes {
/// Registered for its method's shape: a user class among the arguments.
class Station {
 public:
  explicit Station(const Reading&) {}
  int put(const Reading& r, std::optional<Split> s) { return r.station + (s ? 1 : 0); }
  int put_wire_only(WireOnly w) { return w.a; }
};
TROUPE_REMOTE(Station, troupe::init<Reading>, &Station::put, &Station::put_wire_only);
}  // namespace shapes

TEST(WireRegistry, AUserClassThatAsksHasItsFieldsInOrderByTheirTypesInItsShape) {
  using troupe::detail::wire_shape;
  EXPECT_EQ(wire_shape<shapes::Reading>(), "{i4,vec<f8>,str}");
  EXPECT_EQ(wire_shape<shapes::Hidden>(), "{i8}");
  EXPECT_EQ(wire_shape<shapes::Split>(), "{f4,u1}");
  EXPECT_EQ(wire_shape<shapes::Free>(), "{b,{i4,vec<f8>,str}}");
  EXPECT_EQ(wire_shape<shapes::Minimal>(), "{f8}");
  EXPECT_EQ(wire_shape<shapes::Derived>(), "{base{i4,vec<f8>,str},u2}");
  EXPECT_EQ(wire_shape<shapes::Node>(), "{i4,vec<rec>}");
  EXPECT_EQ(wire_shape<shapes::Big>(), "{arr4194304<f8>,arr2<i4>}");  // made on the heap
  EXPECT_EQ(wire_shape<shapes::Packed>(), "{n}");  // what follows the count depends on the instance
  EXPECT_EQ(wire_shape<shapes::Triple>(), "{f8*3}");
  EXPECT_EQ(wire_shape<shapes::InCereal>(), "{i2,str}");
  EXPECT_EQ((wire_shape<std::vector<shapes::Reading>>()), "vec<{i4,vec<f8>,str}>");
  EXPECT_EQ((wire_shape<std::map<int, shapes::Split>>()), "map<i4,{f4,u1}>");
  EXPECT_EQ(wire_shape<shapes::HoldsNoDefault>(), "{{i4}}");
  // Opaque: did not ask, cannot be made by default, serializes by version,
  // has no serialization, or its default constructor throws.
  EXPECT_EQ(wire_shape<shapes::NotAsked>(), "obj");
  EXPECT_EQ(wire_shape<shapes::WireOnly>(), "obj");
  EXPECT_EQ(wire_shape<shapes::NoDefault>(), "obj");
  EXPECT_EQ(wire_shape<std::vector<shapes::NoDefault>>(), "vec<obj>");
  EXPECT_EQ(wire_shape<shapes::Versioned>(), "obj");
  EXPECT_EQ(wire_shape<shapes::Plain>(), "obj");
  EXPECT_EQ(wire_shape<shapes::Throws>(), "obj");
  // A registered method and class carry the shapes of the classes they take.
  EXPECT_EQ(WireRegistry::instance().method(fnv1a64("Station::put"))->shape(), "({i4,vec<f8>,str},opt<{f4,u1}>)->i4");
  EXPECT_EQ(WireRegistry::instance().method(fnv1a64("Station::put_wire_only"))->shape(), "(obj)->i4");
  EXPECT_EQ(WireRegistry::instance().cls(fnv1a64("class Station"))->shape(), "init({i4,vec<f8>,str})");
}

TEST(WireRegistry, MoreStandardTypesHaveShapes) {
  using troupe::detail::wire_shape;
  EXPECT_EQ((wire_shape<std::deque<std::int16_t>>()), "deque<i2>");
  EXPECT_EQ((wire_shape<std::list<std::string>>()), "list<str>");
  EXPECT_EQ((wire_shape<std::variant<int, double>>()), "var<i4,f8>");
  EXPECT_EQ((wire_shape<std::complex<double>>()), "cplx<f8>");
  EXPECT_EQ((wire_shape<std::unique_ptr<float>>()), "ptr<f4>");
  EXPECT_EQ((wire_shape<std::shared_ptr<shapes::Split>>()), "sptr<{f4,u1}>");
  EXPECT_EQ((wire_shape<std::multimap<int, double>>()), "mmap<i4,f8>");
  EXPECT_EQ((wire_shape<std::unordered_multiset<std::uint8_t>>()), "umset<u1>");
  EXPECT_EQ((wire_shape<std::chrono::milliseconds>()), "dur<i8,1/1000>");
  EXPECT_EQ((wire_shape<std::chrono::system_clock::time_point>()), "time<dur<i8,1/1000000000>>");
  EXPECT_EQ((wire_shape<std::bitset<12>>()), "bits12");
  EXPECT_EQ((wire_shape<std::int32_t[4]>()), "arr4<i4>");
}

TEST(WireRegistry, ShapesNameTheWireBytesTheSameWayFromEveryCompiler) {
  using troupe::detail::wire_shape;
  EXPECT_EQ(wire_shape<int>(), "i4");
  EXPECT_EQ(wire_shape<const std::uint64_t&>(), "u8");
  EXPECT_EQ(wire_shape<double>(), "f8");
  EXPECT_EQ(wire_shape<bool>(), "b");
  EXPECT_EQ(wire_shape<char>(), "c");
  EXPECT_EQ(wire_shape<shapes::Colour>(), "e2");
  EXPECT_EQ(wire_shape<void>(), "-");
  EXPECT_EQ(wire_shape<std::string>(), "str");
  EXPECT_EQ(wire_shape<std::vector<std::vector<float>>>(), "vec<vec<f4>>");
  EXPECT_EQ((wire_shape<std::array<std::int8_t, 3>>()), "arr3<i1>");
  EXPECT_EQ((wire_shape<std::pair<int, std::string>>()), "(i4,str)");
  EXPECT_EQ((wire_shape<std::tuple<>>()), "()");
  EXPECT_EQ((wire_shape<std::map<std::string, std::optional<double>>>()), "map<str,opt<f8>>");
  EXPECT_EQ(wire_shape<troupe::ActorRef<pinned::Pinned>>(), "ref");
  EXPECT_EQ(wire_shape<troupe::Array<double>>(), "Array<f8>");
  // A registered method and class carry theirs; table() lists them in id order.
  EXPECT_EQ(WireRegistry::instance().method(fnv1a64("Pinned::set"))->shape(), "(i4)->-");
  EXPECT_EQ(WireRegistry::instance().method(fnv1a64("Pinned::get"))->shape(), "()->i4");
  EXPECT_EQ(WireRegistry::instance().cls(fnv1a64("class Pinned"))->shape(), "init()");
  const auto table = WireRegistry::instance().table();
  EXPECT_NE(std::find(table.begin(), table.end(), "method 7309684615214666057 Pinned::get ()->i4"), table.end());
  EXPECT_NE(std::find(table.begin(), table.end(), "class 7717329937214915911 Pinned init()"), table.end());
}

namespace spaced {
struct Solver {
  int step() { return 1; }
};
}  // namespace spaced

TEST(WireRegistry, AWireNameWithWhiteSpaceIsRefused) {
  // The nodes compare their tables as space-separated fields at start-up.
  auto& reg = WireRegistry::instance();
  const auto before = reg.problems().size();
  troupe::detail::register_remote<spaced::Solver, troupe::init<>, &spaced::Solver::step>("my Solver",
                                                                                          "troupe::init<>, &Solver::step");
  const auto problems = reg.problems();
  ASSERT_GE(problems.size(), before + 1);
  EXPECT_NE(problems[before].find("'my Solver' has white space"), std::string::npos) << problems[before];
  EXPECT_EQ(reg.cls(fnv1a64("class my Solver")), nullptr);
}

// TROUPE_REMOTE in one file and TROUPE_REMOTE_DEFINE(_AS) in another both
// register their class: alike, the second adds nothing; under another name
// (or other arguments), it is reported, not dropped by the order of static
// initialisation.
TEST(WireRegistry, OneClassRegisteredTwiceIsReportedUnlessAlike) {
  auto& reg = WireRegistry::instance();
  const auto before = reg.problems().size();
  using troupe::detail::register_remote;
  register_remote<pinned::Twin, troupe::init<>, &pinned::Twin::get>("Twin", "troupe::init<>, &Twin::get");
  EXPECT_EQ(reg.problems().size(), before);
  register_remote<pinned::Twin, troupe::init<>, &pinned::Twin::get>("Twin2", "troupe::init<>, &Twin::get");
  const auto problems = reg.problems();
  ASSERT_EQ(problems.size(), before + 2);  // the class and its method
  EXPECT_NE(problems[before].find("one class registered twice, as 'Twin' init() and as 'Twin2' init()"),
            std::string::npos)
      << problems[before];
  EXPECT_NE(problems[before + 1].find("one method registered twice, as 'Twin::get'"), std::string::npos)
      << problems[before + 1];
  EXPECT_EQ(reg.cls(fnv1a64("class Twin2")), nullptr);
  EXPECT_EQ(reg.method(fnv1a64("Twin::get"))->name, "Twin::get");
}
