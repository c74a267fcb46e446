// The wire registry: which classes can be spawned from another node and which
// methods can be called across nodes, under ids that are the same on every rank
// and in every build of the same source (hashes of the names TROUPE_REMOTE was
// given; never pointers or typeid names). Filled at static initialisation.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "troupe/detail/actor_cell.hpp"
#include "troupe/detail/call_message.hpp"
#include "troupe/detail/method_traits.hpp"
#include "troupe/wire/archive.hpp"
#include "troupe/wire/shape.hpp"

namespace troupe::detail {

using WireId = std::uint64_t;

constexpr WireId fnv1a64(std::string_view s) noexcept {
  WireId h = 14695981039346656037ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

/// Serialises a payload; it also owns whatever the payload's segments point
/// into, until the message has left.
class PayloadWriter {
 public:
  virtual ~PayloadWriter() = default;
  virtual void write(WireOutputArchive& ar) const = 0;
};

template <class R>
class ValueWriter final : public PayloadWriter {
 public:
  explicit ValueWriter(Stored<R> v) : value_(std::move(v)) {}
  void write(WireOutputArchive& ar) const override {
    if constexpr (!std::is_void_v<R>) ar(value_);
  }

 private:
  Stored<R> value_;
};

/// Where the result of a call decoded from the wire goes. Its calls do not
/// throw: a reply is owed to a caller who waits for it.
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  virtual void reply_value(NodeId to, std::uint64_t corr, std::unique_ptr<PayloadWriter> value) = 0;
  /// A result of plain numbers, or none: the bytes the archive would write
  /// (append_numbers), sent without a writer object or an archive.
  virtual void reply_bytes(NodeId to, std::uint64_t corr, const void* data, std::size_t size) = 0;
  virtual void reply_error(NodeId to, std::uint64_t corr, std::exception_ptr error) = 0;
};

struct RemoteCaller {
  ReplySink* sink = nullptr;
  NodeId node = 0;
  std::uint64_t corr = 0;  // 0: a tell
};

/// The caller's side of an ask in flight: turns reply bytes into its future.
class PendingReply {
 public:
  virtual ~PendingReply() = default;
  virtual bool zero_copy() const noexcept = 0;
  /// Reads the result (segments, if any, are filled in later).
  virtual void decode(WireInputArchive& ar) = 0;
  /// A result of plain numbers (or none) is read from exactly n bytes at p,
  /// as decode would (the same errors), without an archive; false for other
  /// types (decode them).
  virtual bool decode_bytes(const std::byte* p, std::size_t n) = 0;
  /// The result (and its segments) are complete: fulfil the future.
  virtual void complete() = 0;
  virtual void fail(std::exception_ptr e) noexcept = 0;
};

template <class R>
class TypedReply final : public PendingReply {
 public:
  explicit TypedReply(Promise<R> p) : promise_(std::move(p)) {}
  bool zero_copy() const noexcept override { return zero_copy_safe<Stored<R>>::value; }
  void decode(WireInputArchive& ar) override {
    value_.emplace();
    if constexpr (!std::is_void_v<R>) ar(*value_);
  }
  bool decode_bytes(const std::byte* p, std::size_t n) override {
    if constexpr (std::is_void_v<R>) {
      std::tuple<> none;
      read_numbers(p, n, none);  // nothing may be there
      value_.emplace();
      return true;
    } else if constexpr (std::is_arithmetic_v<R>) {
      std::tuple<R> v;
      read_numbers(p, n, v);
      value_.emplace(std::get<0>(v));
      return true;
    } else {
      return false;
    }
  }
  void complete() override {
    if constexpr (std::is_void_v<R>) {
      promise_.set_value();
    } else {
      promise_.set_value(std::move(*value_));
    }
  }
  void fail(std::exception_ptr e) noexcept override {
    if (promise_.valid()) promise_.set_exception(std::move(e));
  }

 private:
  Promise<R> promise_;
  std::optional<Stored<R>> value_;
};

struct MethodEntry {
  WireId id = 0;
  WireId class_id = 0;
  std::string name;
  /// wire_shape of its arguments and result (compared across nodes): made
  /// when asked for, since a user class's shape default-makes one of it
  /// (registration runs during static initialisation).
  std::string (*shape_of)() = nullptr;
  std::string shape() const { return shape_of != nullptr ? shape_of() : std::string(); }
  const MethodTag* tag = nullptr;
  const TypeTag* cls = nullptr;
  bool args_zero_copy = false;
  void (*encode_args)(const CallBase& call, WireOutputArchive& ar) = nullptr;
  /// Only when the arguments are plain numbers: appends them to out, the bytes
  /// encode_args writes, without an archive (cannot throw but for memory).
  void (*encode_numbers)(const CallBase& call, ByteBuffer& out) = nullptr;
  std::unique_ptr<Message> (*decode_call)(WireInputArchive& ar, RemoteCaller caller) = nullptr;
  /// Plain methods (they return neither Task nor Future) run to completion at
  /// once: the receiver may decode and run them inside its actor's turn, many
  /// per mailbox message. run_bytes decodes the arguments from the payload
  /// [p, p + n) and runs the method; it throws only if they cannot be decoded,
  /// before the method runs. The method's own errors go to the caller.
  bool plain = false;
  void (*run_bytes)(const std::byte* p, std::size_t n, RemoteCaller caller, ActorCell& cell) = nullptr;
  std::unique_ptr<PendingReply> (*take_reply)(CallBase& call) = nullptr;
};

/// A decoded spawn request, run on the target node.
class SpawnJob {
 public:
  virtual ~SpawnJob() = default;
  virtual ActorId spawn(Runtime& rt) = 0;
};

struct ClassEntry {
  WireId id = 0;
  std::string name;
  /// "init" and the wire_shape of its init<...> arguments (compared across nodes), as MethodEntry's.
  std::string (*shape_of)() = nullptr;
  std::string shape() const { return shape_of != nullptr ? shape_of() : std::string(); }
  const TypeTag* tag = nullptr;
  bool init_zero_copy = false;
  void (*encode_init)(const void* init, WireOutputArchive& ar) = nullptr;
  std::unique_ptr<SpawnJob> (*decode_init)(WireInputArchive& ar) = nullptr;
};

class WireRegistry {
 public:
  /// The one registry of the process (method tags cache entries of it).
  static WireRegistry& instance();
  WireRegistry(const WireRegistry&) = delete;
  WireRegistry& operator=(const WireRegistry&) = delete;

  void add_class(ClassEntry e);
  void add_method(MethodEntry e);
  const MethodEntry* method(WireId id) const;
  const MethodEntry* method(const MethodTag* tag) const;
  const ClassEntry* cls(WireId id) const;
  const ClassEntry* cls(const TypeTag* tag) const;
  /// Collisions and other registration mistakes, found at start-up.
  std::vector<std::string> problems() const;
  /// One line per class and method ("class|method <id> <name> <shape>"), in
  /// id order: what nodes compare when a cluster runtime starts.
  std::vector<std::string> table() const;
  /// Called when a cluster runtime starts: from then on lookups take no lock
  /// (registration happens during static initialisation, before main). A
  /// registration under way (a library loaded meanwhile) ends first; later
  /// ones are refused.
  void freeze();

 private:
  WireRegistry() = default;
  mutable std::mutex mu_;
  std::unordered_map<WireId, MethodEntry> methods_;
  std::unordered_map<const MethodTag*, WireId> method_tags_;
  std::unordered_map<WireId, ClassEntry> classes_;
  std::unordered_map<const TypeTag*, WireId> class_tags_;
  std::vector<std::string> problems_;
  std::atomic<bool> frozen_{false};
};

/// "troupe::init<int, double>, &Counter::add, &Counter :: value" -> {"Counter::add", "Counter::value"}
std::vector<std::string> split_method_names(std::string_view registration_text);

/// The names TROUPE_REMOTE(class_name, registration_text) gives its methods,
/// which their wire ids hash: as written ("Counter::add"), except that a
/// method written with another class's name (a base's, "Stats::hit"
/// registered for class Service) is named for the class it is registered
/// with too ("Service::Stats::hit"), so that the same base method registered
/// for two classes is two methods. `written_as`: the class's name as the
/// methods are written when it is registered under another
/// (TROUPE_REMOTE_AS(Solver, "fluid::Solver", ...): "&Solver::step" is
/// "fluid::Solver::step").
std::vector<std::string> method_wire_names(std::string_view class_name, std::string_view registration_text,
                                           std::string_view written_as = {});

}  // namespace troupe::detail
