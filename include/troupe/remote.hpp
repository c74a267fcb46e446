// TROUPE_REMOTE: makes a class spawnable on other nodes and its methods callable
// across nodes.
//
//   class Counter { public: explicit Counter(int); int add(int); int value() const; ... };
//   TROUPE_REMOTE(Counter, troupe::init<int>, &Counter::add, &Counter::value);
//
// Use it in the namespace of the class (spawn_on finds it by argument-dependent
// lookup), in a header every rank's program includes. Arguments and results are
// serialised with Cereal: standard types work as they are, user types need an
// ordinary serialize() (or save/load), and ActorRef<T> may travel inside them.
// Wire ids are hashes of the class and method names as written here: the same
// on every rank and in every build of the same source. Collisions are reported
// when the Runtime starts.
#pragma once

#include <cereal/types/array.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/vector.hpp>

#include <tuple>
#include <type_traits>
#include <utility>

#include "troupe/actor_ref.hpp"
#include "troupe/runtime.hpp"
#include "troupe/wire/archive.hpp"
#include "troupe/wire/registry.hpp"

namespace troupe {

/// The constructor arguments a remote spawn passes: TROUPE_REMOTE(C, troupe::init<int, std::string>, ...).
template <class... A>
struct init {
  using tuple = std::tuple<std::decay_t<A>...>;
};

namespace detail {

template <class C, class Init>
struct RemoteClass {
  using cls = C;
  using init_tuple = typename Init::tuple;
};
template <class C, class Init, auto... M>
constexpr RemoteClass<C, Init> remote_class_of() {
  return {};
}

/// spawn_on's view of a registered class, found by argument-dependent lookup of
/// the descriptor TROUPE_REMOTE declares next to the class.
template <class T>
struct RemoteInit {
  using descriptor = decltype(troupe_remote_descriptor(static_cast<T*>(nullptr)));
  // Argument-dependent lookup also searches the namespaces of T's bases.
  static_assert(std::is_same_v<typename descriptor::cls, T>,
                "spawn_on: the class is not registered (TROUPE_REMOTE or TROUPE_REMOTE_DECLARE); a registered base "
                "class is not enough");
  using tuple = typename descriptor::init_tuple;
};

/// TROUPE_REMOTE_DEFINE's check: the class was declared remote, with the same init<...> arguments.
template <class C, class Init>
constexpr bool declared_remote(RemoteClass<C, Init>) {
  if constexpr (requires { troupe_remote_descriptor(static_cast<C*>(nullptr)); }) {
    using D = decltype(troupe_remote_descriptor(static_cast<C*>(nullptr)));  // maybe a base class's
    return std::is_same_v<typename D::cls, C> && std::is_same_v<typename D::init_tuple, typename Init::tuple>;
  } else {
    return false;
  }
}

/// Sends an ask's result back to the caller's node; if it is destroyed unused
/// (the coroutine's frame died with its actor), the caller gets ActorExited.
template <class R>
class RemoteReply {
 public:
  RemoteReply(RemoteCaller caller, NodeId node, ActorId actor) : caller_(caller), node_(node), actor_(actor) {}
  RemoteReply(RemoteReply&& o) noexcept : caller_(o.caller_), node_(o.node_), actor_(o.actor_), armed_(o.armed_) {
    o.armed_ = false;
  }
  RemoteReply& operator=(RemoteReply&&) = delete;
  ~RemoteReply() {
    if (!armed_) return;
    try {
      caller_.sink->reply_error(caller_.node, caller_.corr, detail::actor_exited(node_, actor_));
    } catch (...) {
    }
  }
  void operator()(TaskResult<R>&& r) {
    armed_ = false;
    if (r.error) return caller_.sink->reply_error(caller_.node, caller_.corr, r.error);
    if constexpr (std::is_void_v<R>) {
      caller_.sink->reply_bytes(caller_.node, caller_.corr, nullptr, 0);  // what ValueWriter<void> writes
    } else if constexpr (std::is_arithmetic_v<R>) {
      const R v = *r.value;  // its bytes are what the archive writes (see append_numbers)
      caller_.sink->reply_bytes(caller_.node, caller_.corr, &v, sizeof v);
    } else {
      std::unique_ptr<PayloadWriter> writer;
      try {
        writer = std::make_unique<ValueWriter<R>>(std::move(*r.value));
      } catch (...) {  // no memory for it: the caller learns so, rather than the actor's turn
        return caller_.sink->reply_error(caller_.node, caller_.corr, std::current_exception());
      }
      caller_.sink->reply_value(caller_.node, caller_.corr, std::move(writer));
    }
  }

 private:
  RemoteCaller caller_;
  NodeId node_;
  ActorId actor_;
  bool armed_ = true;
};

/// Runs a call that came from another node: a tell's error is reported as
/// unhandled, an ask's result or error goes back to the caller.
template <auto M, class C>
void run_remote_call(ActorCell& cell, typename Method<M>::Args& args, RemoteCaller caller) {
  using R = typename Method<M>::Result;
  if (caller.corr == 0) {
    invoke_call<M, C>(cell, args, [core = &cell.core(), id = cell.id()](TaskResult<R>&& r) {
      if (r.error) report_unhandled(*core, id, method_tag<M, C>.debug_name, r.error);
    });
    return;
  }
  invoke_call<M, C>(cell, args, RemoteReply<R>(caller, cell.node(), cell.id()));
}

/// A call decoded from the wire, queued to its target actor (of class C).
template <auto M, class C>
class RemoteCall final : public Message {
 public:
  using Traits = Method<M>;
  using R = typename Traits::Result;
  explicit RemoteCall(RemoteCaller caller) : caller_(caller) {}
  RemoteCall(const RemoteCall&) = delete;
  RemoteCall& operator=(const RemoteCall&) = delete;
  /// Large vector arguments the method left whole (it took them by reference)
  /// are kept for the next received vector (troupe/detail/vector_recycler.hpp).
  ~RemoteCall() override { recycle_arguments(args); }

  void run(ActorCell& cell) override { run_remote_call<M, C>(cell, args, caller_); }
  void reject(ActorCell& cell) noexcept override {
    if (caller_.corr == 0) return;
    try {
      caller_.sink->reply_error(caller_.node, caller_.corr, detail::actor_exited(cell.node(), cell.id()));
    } catch (...) {
    }
  }

  typename Traits::Args args;

 private:
  RemoteCaller caller_;
};

/// The entry of method M of actor class C (M may belong to a base of C).
template <auto M, class C>
MethodEntry make_method_entry(WireId class_id, std::string name) {
  using Traits = Method<M>;
  static_assert(!args_hold_views<typename Traits::Args>::value,
                "troupe: an actor method must not take std::string_view or std::span: the message would point into "
                "the sender's memory when the actor runs; take std::string or std::vector (by value or const&)");
  MethodEntry e;
  e.id = fnv1a64(name);
  e.class_id = class_id;
  e.name = std::move(name);
  e.shape_of = &CallShape<typename Traits::Args, typename Traits::Result>::text;
  e.tag = &method_tag<M, C>;
  e.cls = &type_tag<C>;
  e.args_zero_copy = zero_copy_safe<typename Traits::Args>::value;
  e.encode_args = [](const CallBase& call, WireOutputArchive& ar) {
    save_args(ar, static_cast<const CallMessage<M, C>&>(call).args);
  };
  if constexpr (all_arithmetic<typename Traits::Args>::value) {
    e.encode_numbers = [](const CallBase& call, ByteBuffer& out) {
      append_numbers(out, static_cast<const CallMessage<M, C>&>(call).args);
    };
  }
  e.decode_call = [](WireInputArchive& ar, RemoteCaller caller) -> std::unique_ptr<Message> {
    auto msg = std::make_unique<RemoteCall<M, C>>(caller);
    load_args(ar, msg->args);
    return msg;
  };
  using Ret = typename Traits::Return;
  e.plain = !is_task<Ret>::value && !is_future<Ret>::value;
  e.run_bytes = [](const std::byte* p, std::size_t n, RemoteCaller caller, ActorCell& cell) {
    typename Traits::Args args;
    if constexpr (all_arithmetic<typename Traits::Args>::value) {
      read_numbers(p, n, args);
    } else {
      WireInputArchive ar(p, n, nullptr, 0);
      DecodingScope scope(&cell.core());
      load_args(ar, args);
      if (!ar.complete()) throw DecodeError("troupe: message has bytes or segments its type does not read");
    }
    run_remote_call<M, C>(cell, args, caller);
  };
  e.take_reply = [](CallBase& call) -> std::unique_ptr<PendingReply> {
    auto& c = static_cast<CallMessage<M, C>&>(call);
    if (!c.promise) return nullptr;
    auto reply = std::make_unique<TypedReply<typename Traits::Result>>(std::move(*c.promise));
    c.promise.reset();
    return reply;
  };
  return e;
}

template <class C, class Tuple>
class TypedSpawn final : public SpawnJob {
 public:
  ActorId spawn(Runtime& rt) override {
    return std::apply([&](auto&... a) { return rt.spawn<C>(std::move(a)...).id(); }, args);
  }
  Tuple args;
};

template <class C, class Init>
ClassEntry make_class_entry(std::string name) {
  using Tuple = typename Init::tuple;
  ClassEntry e;
  e.id = fnv1a64("class " + name);
  e.name = std::move(name);
  e.shape_of = [] { return "init" + wire_shape<Tuple>(); };
  e.tag = &type_tag<C>;
  e.init_zero_copy = zero_copy_safe<Tuple>::value;
  e.encode_init = [](const void* init, WireOutputArchive& ar) { ar(*static_cast<const Tuple*>(init)); };
  e.decode_init = [](WireInputArchive& ar) -> std::unique_ptr<SpawnJob> {
    auto job = std::make_unique<TypedSpawn<C, Tuple>>();
    ar(job->args);
    return job;
  };
  return e;
}

template <class C, class Init, auto... M>
bool register_remote(const char* class_name, const char* registration_text, const char* written_as = "") {
  static_assert((std::is_base_of_v<typename Method<M>::Class, C> && ...),
                "TROUPE_REMOTE: every method must be a member of the class (or of a base)");
  static_assert([]<class... A>(std::tuple<A...>*) { return std::is_constructible_v<C, A&&...>; }(
                    static_cast<typename Init::tuple*>(nullptr)),
                "TROUPE_REMOTE: the class has no constructor taking the init<...> arguments");
  auto& reg = WireRegistry::instance();
  auto cls = make_class_entry<C, Init>(class_name);
  [[maybe_unused]] const auto class_id = cls.id;  // unused by a class without methods
  reg.add_class(std::move(cls));
  auto names = method_wire_names(class_name, registration_text, written_as);
  std::size_t i = 0;
  (reg.add_method(make_method_entry<M, C>(class_id, i < names.size() ? names[i++] : std::string("?"))), ...);
  return true;
}

}  // namespace detail
}  // namespace troupe

#define TROUPE_DETAIL_CAT2(a, b) a##b
#define TROUPE_DETAIL_CAT(a, b) TROUPE_DETAIL_CAT2(a, b)

// Looked up, never called. With a body: a class in an unnamed namespace would
// otherwise warn of a function declared and never defined.
#define TROUPE_DETAIL_REMOTE_DESCRIPTOR(Class, ...)                                                      \
  [[maybe_unused]] inline auto troupe_remote_descriptor(Class*)                                          \
      ->decltype(::troupe::detail::remote_class_of<Class, __VA_ARGS__>()) {                              \
    return {};                                                                                           \
  }

#define TROUPE_DETAIL_REMOTE_REGISTER(Linkage, Class, WireName, WrittenAs, ...)                        \
  [[maybe_unused]] Linkage const bool TROUPE_DETAIL_CAT(troupe_remote_registered_, Class) =            \
      ::troupe::detail::register_remote<Class, __VA_ARGS__>(WireName, #__VA_ARGS__, WrittenAs)

#define TROUPE_DETAIL_REMOTE_DEFINE(Class, WireName, WrittenAs, ...)                                   \
  static_assert(::troupe::detail::declared_remote(::troupe::detail::remote_class_of<Class, __VA_ARGS__>()),   \
                "TROUPE_REMOTE_DEFINE: declare the class with TROUPE_REMOTE_DECLARE(Class, troupe::init<...>) "  \
                "next to it, with the same init<...> as here");                                     \
  TROUPE_DETAIL_REMOTE_REGISTER(, Class, WireName, WrittenAs, __VA_ARGS__)

/// TROUPE_REMOTE(Class, troupe::init<CtorArgs...>, &Class::method...);
/// in the class's namespace. Its wire ids hash the names as written.
/// Every translation unit that sees it compiles the class's wire code; for a
/// class many files use, split it: TROUPE_REMOTE_DECLARE in the header and
/// TROUPE_REMOTE_DEFINE in one source file.
#define TROUPE_REMOTE(Class, ...)                  \
  TROUPE_DETAIL_REMOTE_DESCRIPTOR(Class, __VA_ARGS__) \
  TROUPE_DETAIL_REMOTE_REGISTER(inline, Class, #Class, "", __VA_ARGS__)

/// TROUPE_REMOTE_AS(Class, "wire name", troupe::init<...>, &Class::method...);
/// the same under a name of its own ("fluid::Solver", its methods
/// "fluid::Solver::step"): for classes of one name in two namespaces.
#define TROUPE_REMOTE_AS(Class, WireName, ...)     \
  TROUPE_DETAIL_REMOTE_DESCRIPTOR(Class, __VA_ARGS__) \
  TROUPE_DETAIL_REMOTE_REGISTER(inline, Class, WireName, #Class, __VA_ARGS__)

/// TROUPE_REMOTE_DECLARE(Class, troupe::init<CtorArgs...>); next to the class,
/// in its header: what spawn_on, tell and ask need. The class's wire code is
/// compiled where TROUPE_REMOTE_DEFINE is, in one source file of the program
/// (linked in as an object, not from a static archive, whose unreferenced
/// members the linker leaves out).
#define TROUPE_REMOTE_DECLARE(Class, ...)              \
  TROUPE_DETAIL_REMOTE_DESCRIPTOR(Class, __VA_ARGS__) \
  static_assert(true, "TROUPE_REMOTE_DECLARE takes a semicolon")

/// TROUPE_REMOTE_DEFINE(Class, troupe::init<CtorArgs...>, &Class::method...);
/// in one source file, in the class's namespace: registers it as TROUPE_REMOTE
/// does. Its init<...> must be the declared one (checked at compile time).
#define TROUPE_REMOTE_DEFINE(Class, ...) TROUPE_DETAIL_REMOTE_DEFINE(Class, #Class, "", __VA_ARGS__)

/// TROUPE_REMOTE_DEFINE_AS(Class, "wire name", troupe::init<...>, &Class::method...);
/// TROUPE_REMOTE_DEFINE under a wire name of its own, as TROUPE_REMOTE_AS.
#define TROUPE_REMOTE_DEFINE_AS(Class, WireName, ...) TROUPE_DETAIL_REMOTE_DEFINE(Class, WireName, #Class, __VA_ARGS__)

