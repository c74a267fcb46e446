// Actors the multi-rank tests spawn on other ranks. Declared here, registered
// once for every test binary in test_actors.cpp (their wire code compiled once).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <deque>
#include <vector>

#include "troupe/remote.hpp"
#include "troupe/troupe.hpp"

namespace tt {

class Counter {
 public:
  explicit Counter(int start) : n_(start) {}
  int add(int k) { return n_ += k; }
  int value() const { return n_; }
  /// A reference result and the last qualifiers: the asker gets a copy.
  const int& current() const& noexcept { return n_; }
  troupe::NodeId where() const { return troupe::runtime().node(); }
  void fail(std::string why) { throw std::invalid_argument(why); }
  int fail_ask(std::string why) { throw std::domain_error(why); }
  int fail_plain(int how) {  // what older code throws
    if (how == 0) throw "bad mesh";
    if (how == 1) throw std::string("bad grid");
    throw how;
  }
  /// Keeps its turn busy for ms milliseconds.
  int hold(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
  }

 private:
  int n_;
};
TROUPE_REMOTE_DECLARE(Counter, troupe::init<int>);

/// Records (sender, sequence) pairs; counts everything it got process-wide.
inline std::atomic<long> g_recorded{0};
class Recorder {
 public:
  void record(int sender, int seq) {
    seen_[sender].push_back(seq);
    g_recorded.fetch_add(1);
  }
  /// True if each sender's sequence is 0, 1, 2, ... with n entries.
  bool in_order(int sender, int n) const {
    auto it = seen_.find(sender);
    if (it == seen_.end()) return n == 0;
    if (static_cast<int>(it->second.size()) != n) return false;
    for (int i = 0; i < n; ++i)
      if (it->second[static_cast<std::size_t>(i)] != i) return false;
    return true;
  }
  std::size_t total() const {
    std::size_t t = 0;
    for (auto& [s, v] : seen_) t += v.size();
    return t;
  }

 private:
  std::map<int, std::vector<int>> seen_;
};
TROUPE_REMOTE_DECLARE(Recorder, troupe::init<>);

/// Checks the order and the contents of messages of the three shapes that leave
/// a node in different ways: small (copied into an open frame), with a large
/// block (its own segment, closing the frame), and large inline (alone).
class Mixed {
 public:
  void take(int sender, int seq, std::vector<double> block, std::string pad) {
    int& next = next_[sender];
    if (seq != next) ++errors_;
    next = seq + 1;
    for (double d : block)
      if (d != seq) {
        ++errors_;
        break;
      }
    for (char c : pad)
      if (c != static_cast<char>('a' + seq % 26)) {
        ++errors_;
        break;
      }
  }
  /// The same sequence, as plain numbers (they take another way out).
  void tick(int sender, int seq) {
    int& next = next_[sender];
    if (seq != next) ++errors_;
    next = seq + 1;
  }
  int received(int sender) const {
    auto it = next_.find(sender);
    return it == next_.end() ? 0 : it->second;
  }
  int errors() const { return errors_; }

 private:
  std::map<int, int> next_;
  int errors_ = 0;
};
TROUPE_REMOTE_DECLARE(Mixed, troupe::init<>);

/// Message seq of sender: every 7th carries a 32 KiB block, every 11th 10 KiB
/// inline, every 3rd is plain numbers only (written in place).
inline void send_mixed(const troupe::ActorRef<Mixed>& to, int sender, int seq) {
  if (seq % 3 == 1) return to.tell<&Mixed::tick>(sender, seq);
  std::vector<double> block;
  std::string pad;
  if (seq % 7 == 3) block.assign(4096, static_cast<double>(seq));
  if (seq % 11 == 5) pad.assign(10 * 1024, static_cast<char>('a' + seq % 26));
  to.tell<&Mixed::take>(sender, seq, std::move(block), std::move(pad));
}

/// Sends mixed messages from its own turns (a scheduler worker, not main).
class Pump {
 public:
  void run(troupe::ActorRef<Mixed> to, int sender, int n) {
    for (int i = 0; i < n; ++i) send_mixed(to, sender, i);
  }
};

/// Asks a Counter it was handed (possibly on a third rank).
class Broker {
 public:
  troupe::Task<int> relay(troupe::ActorRef<Counter> target, int k) {
    int v = co_await target.ask<&Counter::add>(k);
    co_return v;
  }
  troupe::Task<troupe::NodeId> where_is(troupe::ActorRef<Counter> target) {
    co_return co_await target.ask<&Counter::where>();
  }
  troupe::Task<int> relay_failure(troupe::ActorRef<Counter> target, std::string why) {
    co_return co_await target.ask<&Counter::fail_ask>(std::move(why));
  }
};
TROUPE_REMOTE_DECLARE(Broker, troupe::init<>);

/// A constructor that refuses some starts, and refs handed back as results.
class Picky {
 public:
  explicit Picky(int size) : size_(size) {
    if (size < 0) throw std::length_error("troupe test: a negative size");
  }
  int size() const { return size_; }
  /// A Counter made on this node, returned inside the ask's result.
  troupe::ActorRef<Counter> make_counter(int start) { return troupe::runtime().spawn<Counter>(start); }
  /// Refs in a container: this node's Counters and the one it was handed.
  std::vector<troupe::ActorRef<Counter>> gather(troupe::ActorRef<Counter> other, int count) {
    std::vector<troupe::ActorRef<Counter>> out;
    for (int i = 0; i < count; ++i) out.push_back(troupe::runtime().spawn<Counter>(10 * i));
    out.push_back(std::move(other));
    return out;
  }

 private:
  int size_;
};
TROUPE_REMOTE_DECLARE(Picky, troupe::init<int>);

/// Two classes of one name in two namespaces, each registered under a wire
/// name of its own.
namespace fluid {
class Solver {
 public:
  explicit Solver(int cells) : cells_(cells) {}
  int step(int k) { return cells_ += k; }
  std::string kind() const { return "fluid"; }

 private:
  int cells_;
};
TROUPE_REMOTE_DECLARE(Solver, troupe::init<int>);
}  // namespace fluid
namespace solid {
class Solver {
 public:
  explicit Solver(std::string material) : material_(std::move(material)) {}
  std::string kind() const { return "solid " + material_; }

 private:
  std::string material_;
};
TROUPE_REMOTE_DECLARE(Solver, troupe::init<std::string>);
}  // namespace solid

/// A coroutine method that waits for ever (until its actor stops).
class Stuck {
 public:
  troupe::Task<int> hang() { co_return co_await gate_.get_future(); }
  /// Never answers either (each call waits on a promise of its own): its
  /// asker expects a vector.
  troupe::Task<std::vector<double>> hang_vector() {
    vector_gates_.emplace_back();
    co_return co_await vector_gates_.back().get_future();
  }
  int ping() { return 1; }
  void release(int v) { gate_.set_value(v); }

 private:
  troupe::Promise<int> gate_;
  std::deque<troupe::Promise<std::vector<double>>> vector_gates_;  // elements never move
};
TROUPE_REMOTE_DECLARE(Stuck, troupe::init<>);

/// Classes whose remote methods belong to their bases: Stats sits at an
/// offset inside both (after a vptr, and after another base), and its hit()
/// is registered for two classes.
struct Stats {
  long hits = 0;
  long hit() { return ++hits; }
};
struct Named {
  int ident_ = 7;
  int ident() const { return ident_; }
};
class Meter : public Named, public Stats {
 public:
  virtual ~Meter() = default;
};
TROUPE_REMOTE_DECLARE(Meter, troupe::init<>);
class Gauge : public Stats {
 public:
  virtual ~Gauge() = default;
  int level() const { return 3; }
};
TROUPE_REMOTE_DECLARE(Gauge, troupe::init<>);

/// A result with more large blocks than one message may carry, all from one
/// static buffer (it costs no memory).
struct ManyBlocks {
  static constexpr std::size_t kBlocks = (std::size_t{1} << 16) + 1;
  template <class Archive>
  void save(Archive& ar) const {
    static const std::vector<char> block(16 * 1024, 'x');
    for (std::size_t i = 0; i < kBlocks; ++i) ar(cereal::binary_data(block.data(), block.size()));
  }
  template <class Archive>
  void load(Archive& ar) {
    std::vector<char> block(16 * 1024);
    for (std::size_t i = 0; i < kBlocks; ++i) ar(cereal::binary_data(block.data(), block.size()));
  }
};
class Sprawl {
 public:
  ManyBlocks many() { return {}; }
  int ping() { return 1; }
};
TROUPE_REMOTE_DECLARE(Sprawl, troupe::init<>);

/// Reads its node's hybrid logical clock while handling a message.
class ClockReader {
 public:
  std::uint64_t stamp() { return troupe::runtime().clock().now().raw; }
};
TROUPE_REMOTE_DECLARE(ClockReader, troupe::init<>);

/// A user type: travels by its own serialize(), its vector as a block of its
/// own once it is large.
struct Sample {
  std::string name;
  std::vector<double> data;
  std::map<std::string, int> tags;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, data, tags);
  }
  bool operator==(const Sample&) const = default;
};

/// Passes hop(k) on round a ring of Relays (one per node, in the ring each
/// message carries) until k is 0; counts the chains that end, process-wide.
inline std::atomic<long> g_chains_ended{0};
class Relay {
 public:
  void hop(int k, std::vector<troupe::ActorRef<Relay>> ring, std::size_t at) {
    if (k == 0) {
      g_chains_ended.fetch_add(1);
      return;
    }
    const std::size_t next = (at + 1) % ring.size();
    const auto to = ring[next];
    to.tell<&Relay::hop>(k - 1, std::move(ring), next);
  }
};
TROUPE_REMOTE_DECLARE(Relay, troupe::init<>);

/// Large payloads both ways.
class Bulk {
 public:
  std::vector<double> scale(std::vector<double> v, double f) {
    for (auto& x : v) x *= f;
    return v;
  }
  troupe::Array<double> scale_array(troupe::Array<double> a, double f) {
    for (auto& x : a) x *= f;
    return a;
  }
  double sum(const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s;
  }
  /// Owns its vector (by value) and keeps it.
  std::size_t own(std::vector<double> v) {
    kept_.swap(v);
    return kept_.size();
  }
  /// Takes its vector away (nothing is left to keep).
  std::size_t keep(std::vector<double>&& v) {
    kept_ = std::move(v);
    return kept_.size();
  }
  /// The sum of the vector own() or keep() took.
  double kept_sum() const {
    double s = 0;
    for (double x : kept_) s += x;
    return s;
  }
  /// This node's count of received vectors kept after their call, and of
  /// received vectors made from a kept one.
  std::pair<std::uint64_t, std::uint64_t> recycled() const {
    const auto s = troupe::detail::recycle_stats();
    return {s.kept, s.reused};
  }
  /// A user type and a vector of them, back as they came, the names marked.
  Sample echo(Sample s) {
    s.name += " back";
    return s;
  }
  std::vector<Sample> echo_all(std::vector<Sample> all) {
    for (auto& s : all) s.name += " back";
    return all;
  }
  std::string shout(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
  }
  /// Records a checksum of each block it is told, in the order told.
  void fold(std::uint64_t tag, std::vector<double> v) { folded_.emplace_back(tag, checksum(v.data(), v.size())); }
  void fold_array(std::uint64_t tag, troupe::Array<double> a) { folded_.emplace_back(tag, checksum(a.data(), a.size())); }
  void fold_text(std::uint64_t tag, std::string s) { folded_.emplace_back(tag, text_checksum(s)); }
  std::vector<std::pair<std::uint64_t, double>> folded() const { return folded_; }
  /// Position-sensitive: a block that lands shifted or mixed up sums differently.
  static double checksum(const double* p, std::size_t n) {
    double c = static_cast<double>(n);
    for (std::size_t i = 0; i < n; ++i) c += p[i] * static_cast<double>(i % 7 + 1);
    return c;
  }
  static double text_checksum(const std::string& s) {
    double c = static_cast<double>(s.size());
    for (std::size_t i = 0; i < s.size(); ++i)
      c += static_cast<double>(static_cast<unsigned char>(s[i])) * static_cast<double>(i % 13 + 1);
    return c;
  }
  // A type that is not zero-copy safe (decoded after its segments arrive).
  std::map<std::string, std::vector<double>> double_all(std::map<std::string, std::vector<double>> m) {
    for (auto& [k, v] : m)
      for (auto& x : v) x *= 2;
    return m;
  }

 private:
  std::vector<double> kept_;
  std::vector<std::pair<std::uint64_t, double>> folded_;
};
// Made from a vector (spawn arguments travel inline, whatever their size).
class Holder {
 public:
  explicit Holder(std::vector<double> v, std::string label) : v_(std::move(v)), label_(std::move(label)) {}
  double sum() const {
    double s = 0;
    for (double x : v_) s += x;
    return s;
  }
  std::size_t label_size() const { return label_.size(); }

 private:
  std::vector<double> v_;
  std::string label_;
};
TROUPE_REMOTE_DECLARE(Holder, troupe::init<std::vector<double>, std::string>);

TROUPE_REMOTE_DECLARE(Bulk, troupe::init<>);

}  // namespace tt
