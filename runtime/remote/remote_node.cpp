#include "remote_node.hpp"

#include <cereal/details/helpers.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

#include "troupe/runtime.hpp"
#include "core/scheduler.hpp"
#include "wire_error.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace troupe::detail {
namespace {

/// Runs a function at delivery (or another if its source is lost first).
class FnInbound final : public Inbound {
 public:
  FnInbound(UniqueFunction<void()> fn, UniqueFunction<void()> on_abandon)
      : fn_(std::move(fn)), on_abandon_(std::move(on_abandon)) {}
  void deliver() override { fn_(); }
  void abandon() noexcept override {
    try {
      if (on_abandon_) on_abandon_();
    } catch (...) {
    }
  }

 private:
  UniqueFunction<void()> fn_;
  UniqueFunction<void()> on_abandon_;
};

std::unique_ptr<Inbound> at_delivery(UniqueFunction<void()> fn, UniqueFunction<void()> on_abandon = nullptr) {
  return std::make_unique<FnInbound>(std::move(fn), std::move(on_abandon));
}

/// A call decoded in place; its segments (if any) land inside its arguments.
class CallInbound final : public Inbound {
 public:
  CallInbound(Cluster& cluster, NodeId from, std::shared_ptr<ActorCell> cell, std::unique_ptr<Message> msg)
      : cluster_(cluster), from_(from), cell_(std::move(cell)), msg_(std::move(msg)) {}
  void deliver() override {
    cluster_.count_delivered(from_);
    cell_->enqueue(msg_.release());
  }

 private:
  Cluster& cluster_;
  NodeId from_;
  std::shared_ptr<ActorCell> cell_;
  std::unique_ptr<Message> msg_;
};

/// An envelope whose segments must arrive before it can be decoded: a copy of
/// its payload and buffers for its segments; decoded at delivery.
class BufferedInbound final : public Inbound {
 public:
  BufferedInbound(Core& core, const Envelope& env, UniqueFunction<void(WireInputArchive&)> decode,
                  UniqueFunction<void(std::exception_ptr)> failed)
      : core_(core), source_(env.source), sizes_(env.segment_sizes), decode_(std::move(decode)), failed_(std::move(failed)) {
    payload_.append(env.payload, env.payload_size);
    buffers_.resize(sizes_.size());
    for (std::size_t i = 0; i < sizes_.size(); ++i) {
      buffers_[i].resize(sizes_[i]);
      segments.push_back({buffers_[i].data(), sizes_[i]});
    }
  }
  void deliver() override;
  void abandon() noexcept override {
    try {
      failed_(std::make_exception_ptr(ConnectionLost(source_)));
    } catch (...) {
    }
  }

 private:
  Core& core_;
  NodeId source_;
  ByteBuffer payload_;
  std::vector<std::uint64_t> sizes_;
  std::vector<ByteBuffer> buffers_;
  UniqueFunction<void(WireInputArchive&)> decode_;
  UniqueFunction<void(std::exception_ptr)> failed_;
};

/// Whatever went wrong while decoding, as a DecodeError for the sender.
std::exception_ptr as_decode_error(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const DecodeError&) {
    return e;
  } catch (const UnknownType&) {
    return e;
  } catch (const std::bad_alloc&) {
    return std::make_exception_ptr(DecodeError("troupe: message too large to decode (allocation failed)"));
  } catch (const std::exception& x) {
    return std::make_exception_ptr(DecodeError(std::string("troupe: undecodable message: ") + x.what()));
  } catch (...) {
    return std::make_exception_ptr(DecodeError("troupe: undecodable message"));
  }
}

void BufferedInbound::deliver() {
  try {
    WireInputArchive ar(payload_.data(), payload_.size(), sizes_.data(), sizes_.size());
    ar.use_received_segments(buffers_.data());
    DecodingScope scope(&core_);
    decode_(ar);
  } catch (...) {
    failed_(as_decode_error(std::current_exception()));
  }
}

void check_complete(const WireInputArchive& ar) {
  if (!ar.complete()) throw DecodeError("troupe: message has bytes or segments its type does not read");
}

class SpawnReply final : public PendingReply {
 public:
  explicit SpawnReply(UniqueFunction<void(ActorId, std::exception_ptr)> done) : done_(std::move(done)) {}
  bool zero_copy() const noexcept override { return true; }
  void decode(WireInputArchive& ar) override { ar(id_); }
  void complete() override { done_(id_, nullptr); }
  void fail(std::exception_ptr e) noexcept override { done_(0, std::move(e)); }

 private:
  UniqueFunction<void(ActorId, std::exception_ptr)> done_;
  ActorId id_ = 0;
};

}  // namespace

// Futures of a cluster runtime: a blocked thread drives the engine itself, so a
// reply is picked up without waiting for the progress thread.
class RemoteNode::Waiter final : public detail::Waiter {
 public:
  explicit Waiter(RemoteNode& node) : node_(node) {}
  bool wait(StateBase& s, std::optional<Clock::time_point> deadline) override {
    unsigned idle = 0;
    struct Helping {
      Engine& e;
      explicit Helping(Engine& en) : e(en) { e.helper_enter(); }
      ~Helping() { e.helper_leave(); }
    } helping(*node_.engine_);
    while (!s.ready()) {
      if (deadline && Clock::now() >= *deadline) return s.ready();
      if (node_.closed_.load(std::memory_order_acquire)) return s.block(deadline);
      if (node_.engine_->progress()) {
        idle = 0;
        continue;
      }
      ++idle;
      if (idle < 128) {
#if defined(__x86_64__) || defined(__i386__)
        _mm_pause();
#endif
      } else if (idle < 256) {
        std::this_thread::yield();
      } else {
        // Long wait: hand the engine back to the progress thread and sleep.
        node_.engine_->helper_leave();
        auto until = Clock::now() + std::chrono::microseconds(500);
        if (deadline && *deadline < until) until = *deadline;
        s.block(until);
        node_.engine_->helper_enter();
      }
    }
    return true;
  }

 private:
  RemoteNode& node_;
};

namespace {

constexpr int kField = 64;

/// Host and role of this process, in two fixed fields (for MPI_Allgather).
std::vector<char> my_host_and_role(const std::string& role) {
  std::vector<char> mine(2 * kField, '\0');
  gethostname(mine.data(), kField - 1);
  std::snprintf(mine.data() + kField, kField, "%s", role.c_str());
  return mine;
}

struct JoinInfo {
  std::uint64_t total = 0;
  std::vector<NodeId> node_of_rank;  // in the merged communicator
  std::vector<std::string> roles, hosts;
  std::vector<std::uint8_t> alive;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(total, node_of_rank, roles, hosts, alive);
  }
};

void bcast_join_info(JoinInfo& info, MPI_Comm comm, bool root) {
  ByteBuffer buf;
  if (root) {
    WireOutputArchive ar(buf, nullptr);
    ar(info);
  }
  std::uint64_t size = buf.size();
  MPI_Bcast(&size, 1, MPI_UINT64_T, 0, comm);
  buf.resize(size);
  MPI_Bcast(buf.data(), static_cast<int>(size), MPI_BYTE, 0, comm);
  if (!root) {
    WireInputArchive ar(buf.data(), buf.size(), nullptr, 0);
    ar(info);
  }
}

/// Host and role of every rank of comm, gathered.
std::vector<std::pair<std::string, std::string>> gather_hosts(MPI_Comm comm, const std::string& role) {
  int n = 0;
  MPI_Comm_size(comm, &n);
  auto mine = my_host_and_role(role);
  std::vector<char> all(static_cast<std::size_t>(n) * 2 * kField);
  MPI_Allgather(mine.data(), 2 * kField, MPI_CHAR, all.data(), 2 * kField, MPI_CHAR, comm);
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = 0; i < n; ++i) {
    const char* rec = all.data() + static_cast<std::size_t>(i) * 2 * kField;
    out.emplace_back(std::string(rec), std::string(rec + kField));
  }
  return out;
}

}  // namespace

RemoteNode::RemoteNode(Runtime& rt, Core& core, MPI_Comm comm, bool owns_mpi)
    : rt_(rt), core_(core), owns_mpi_(owns_mpi) {
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  if (parent != MPI_COMM_NULL) {
    join_from_parent(parent);
    return;
  }
  engine_ = std::make_unique<Engine>(comm, *this);
  core_.set_node(engine_->self());
  MPI_Comm_dup(comm, &membership_comm_);
  for (NodeId n = 0; n < engine_->nodes(); ++n) membership_nodes_.push_back(n);

  // Who is who: host names and roles, gathered once at start (no rank can be
  // lost yet, so a collective is safe here).
  std::vector<NodeInfo> nodes;
  auto hosts = gather_hosts(engine_->comm(), core_.config().role);
  for (std::size_t i = 0; i < hosts.size(); ++i)
    nodes.push_back(NodeInfo{static_cast<NodeId>(i), hosts[i].second, hosts[i].first, true});
  // One communicator per role: a rank group for the application's collectives.
  std::vector<std::string> roles;
  for (auto& n : nodes) roles.push_back(n.role);
  std::sort(roles.begin(), roles.end());
  roles.erase(std::unique(roles.begin(), roles.end()), roles.end());
  const int color = static_cast<int>(std::lower_bound(roles.begin(), roles.end(), core_.config().role) - roles.begin());
  MPI_Comm_split(comm, color, static_cast<int>(engine_->self()), &role_comm_);
  cluster_ = std::make_unique<Cluster>(core_, *engine_, std::move(nodes));
  cluster_->on_lost([this](NodeId lost) { node_lost(lost); });

  waiter_ = std::make_unique<Waiter>(*this);
  core_.set_waiter(waiter_.get());
  core_.set_remote(this);
  // The progress thread also runs failure detection, every 10 ms.
  engine_->start_progress_thread([this] { cluster_->tick(); }, std::chrono::microseconds(10000),
                                 [this] { start_polling(); });
}

void RemoteNode::join_from_parent(MPI_Comm parent) {
  joined_ = true;
  MPI_Comm merged = MPI_COMM_NULL;
  MPI_Intercomm_merge(parent, 1, &merged);  // the parents take the low ranks
  JoinInfo info;
  bcast_join_info(info, merged, false);
  int rank = 0;
  MPI_Comm_rank(merged, &rank);
  const NodeId self = info.node_of_rank.at(static_cast<std::size_t>(rank));
  auto hosts = gather_hosts(merged, core_.config().role);
  std::vector<NodeInfo> nodes;
  for (std::size_t i = 0; i < info.total; ++i)
    nodes.push_back(NodeInfo{static_cast<NodeId>(i), i < info.roles.size() ? info.roles[i] : "",
                             i < info.hosts.size() ? info.hosts[i] : "", i < info.alive.size() && info.alive[i] != 0});
  for (std::size_t r = 0; r < info.node_of_rank.size(); ++r) {
    auto& n = nodes[info.node_of_rank[r]];
    n.host = hosts[r].first;
    n.role = hosts[r].second;
    n.alive = true;
  }
  engine_ = std::make_unique<Engine>(merged, *this, self, info.total, info.node_of_rank);
  spawns_.push_back(Spawn{parent, MPI_COMM_NULL});
  core_.set_node(self);
  membership_comm_ = merged;
  membership_nodes_ = info.node_of_rank;
  cluster_ = std::make_unique<Cluster>(core_, *engine_, std::move(nodes));
  cluster_->on_lost([this](NodeId lost) { node_lost(lost); });
  lost_at_last_spawn_ = cluster_->lost_set().size();
  waiter_ = std::make_unique<Waiter>(*this);
  core_.set_waiter(waiter_.get());
  core_.set_remote(this);
  engine_->start_progress_thread([this] { cluster_->tick(); }, std::chrono::microseconds(10000),
                                 [this] { start_polling(); });
}

std::vector<NodeId> RemoteNode::add_nodes(int count, const std::vector<std::string>& args) {
  if (count <= 0) return {};
  std::lock_guard lk(membership_mu_);
  // The live members, in the membership communicator's order.
  std::vector<int> live_ranks;
  std::vector<NodeId> live_nodes;
  for (std::size_t r = 0; r < membership_nodes_.size(); ++r) {
    if (!cluster_->alive(membership_nodes_[r])) continue;
    live_ranks.push_back(static_cast<int>(r));
    live_nodes.push_back(membership_nodes_[r]);
  }
  MPI_Group all_group = MPI_GROUP_NULL, live_group = MPI_GROUP_NULL;
  MPI_Comm_group(membership_comm_, &all_group);
  MPI_Group_incl(all_group, static_cast<int>(live_ranks.size()), live_ranks.data(), &live_group);
  MPI_Comm live = MPI_COMM_NULL;
  // Collective over the live members only: the dead are not asked.
  MPI_Comm_create_group(membership_comm_, live_group, /*tag=*/0x7e20, &live);
  MPI_Group_free(&live_group);
  MPI_Group_free(&all_group);

  char exe[4096] = {};
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) throw Error("troupe: add_nodes cannot find this program's path");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  MPI_Comm inter = MPI_COMM_NULL;
  std::vector<int> errcodes(static_cast<std::size_t>(count));
  const int rc = MPI_Comm_spawn(exe, argv.data(), count, MPI_INFO_NULL, 0, live, &inter, errcodes.data());
  if (rc != MPI_SUCCESS) throw Error("troupe: MPI_Comm_spawn failed");
  MPI_Comm merged = MPI_COMM_NULL;
  MPI_Intercomm_merge(inter, 0, &merged);

  JoinInfo info;
  const auto before = static_cast<NodeId>(cluster_->size());
  info.total = before + static_cast<std::uint64_t>(count);
  info.node_of_rank = live_nodes;
  std::vector<NodeId> fresh;
  for (int i = 0; i < count; ++i) {
    info.node_of_rank.push_back(before + static_cast<NodeId>(i));
    fresh.push_back(before + static_cast<NodeId>(i));
  }
  auto state = cluster_->state();
  for (auto& n : state.nodes()) {
    info.roles.push_back(n.role);
    info.hosts.push_back(n.host);
    info.alive.push_back(n.alive ? 1 : 0);
  }
  int rank = 0;
  MPI_Comm_rank(merged, &rank);
  bcast_join_info(info, merged, rank == 0);
  auto hosts = gather_hosts(merged, core_.config().role);

  std::vector<NodeInfo> all(state.nodes().begin(), state.nodes().end());
  for (std::size_t r = live_nodes.size(); r < info.node_of_rank.size(); ++r)
    all.push_back(NodeInfo{info.node_of_rank[r], hosts[r].second, hosts[r].first, true});
  // The cluster first: once the engine hears the newcomers, their messages
  // find them alive.
  cluster_->add_nodes(all);
  engine_->add_nodes(merged, info.node_of_rank, info.total);
  cluster_->nodes_added(fresh);
  if (live != MPI_COMM_NULL) MPI_Comm_free(&live);
  spawns_.push_back(Spawn{inter, merged});
  lost_at_last_spawn_ = cluster_->lost_set().size();
  membership_comm_ = merged;  // the previous ones stay allocated: MPI may still use them
  membership_nodes_ = info.node_of_rank;
  return fresh;
}

void RemoteNode::start_polling() {
  if (closed_.load(std::memory_order_acquire) || polling_.exchange(true)) return;
  if (closed_.load(std::memory_order_acquire)) {  // closed meanwhile: stop_polling may be waiting
    polling_.store(false, std::memory_order_release);
    return;
  }
  engine_->helper_enter();
  core_.scheduler().post([this, now = Clock::now()] { poll(now); });
}

void RemoteNode::poll(Clock::time_point last_activity) {
  constexpr auto kQuietSpell = std::chrono::microseconds(200);
  if (!closed_.load(std::memory_order_acquire)) {
    // Poll for a while in this task (rescheduling it for every poll would keep
    // waking the arena's other workers), then yield the worker.
    auto now = Clock::now();
    const auto slice_end = now + std::chrono::microseconds(50);
    while (now < slice_end && now - last_activity < kQuietSpell) {
      InlineTurns turns;
      if (engine_->progress()) last_activity = now;
      turns.run(core_.config().batch);
      now = Clock::now();
    }
    if (now - last_activity < kQuietSpell) {
      // Behind whatever turns that progress just queued (FIFO), then again.
      core_.scheduler().post([this, last_activity] { poll(last_activity); });
      return;
    }
  }
  engine_->helper_leave();
  polling_.store(false, std::memory_order_release);
}

void RemoteNode::stop_polling() noexcept {
  closed_.store(true, std::memory_order_release);
  while (polling_.load(std::memory_order_acquire)) std::this_thread::yield();
}

RemoteNode::~RemoteNode() {
  stop_polling();
  engine_->stop_progress_thread();
  core_.set_remote(nullptr);
  core_.set_waiter(nullptr);
  finalize();
}

// ---- sending ----------------------------------------------------------------

std::unique_ptr<OutEnvelope> RemoteNode::envelope(NodeId to, Kind kind, std::uint64_t corr, std::uint64_t target,
                                                  std::uint64_t id, std::uint32_t flags) {
  auto e = std::make_unique<OutEnvelope>();
  e->dest = to;
  e->work = counts_as_work(kind);
  EnvelopeWriter w(e->bytes);
  w.begin(kind, engine_->self(), corr, target, id, core_.clock().now().raw, flags);
  return e;
}

void RemoteNode::seal(OutEnvelope& e) {
  std::vector<std::uint64_t> sizes;
  sizes.reserve(e.segments.size());
  for (auto& s : e.segments) sizes.push_back(s.size);
  // begin() wrote the header right after the engine's frame slot.
  EnvelopeWriter w(e.bytes);
  w.begin_at(kFrameSlot);
  w.finish(sizes.data(), static_cast<std::uint32_t>(sizes.size()));
}

void RemoteNode::post(std::unique_ptr<OutEnvelope> e) {
  if (closed_.load(std::memory_order_acquire)) return;
  if (!cluster_->alive(e->dest)) return;
  if (e->work) cluster_->count_sent(e->dest);
  // Tells coalesce; everything someone may be waiting for leaves at once.
  const bool urgent = !(e->kind_tell);
  engine_->send(e.release(), urgent);
}

std::uint64_t RemoteNode::expect(NodeId node, std::unique_ptr<PendingReply> reply) {
  {
    std::lock_guard lk(pending_mu_);
    if (cluster_->alive(node)) {
      const auto corr = next_corr_.fetch_add(1, std::memory_order_relaxed);
      pending_.emplace(corr, Pending{node, std::move(reply)});
      return corr;
    }
  }
  // Failed outside the lock: the failure may run continuations that ask again.
  reply->fail(std::make_exception_ptr(ConnectionLost(node)));
  return 0;
}

std::unique_ptr<PendingReply> RemoteNode::take(std::uint64_t corr) {
  std::lock_guard lk(pending_mu_);
  auto it = pending_.find(corr);
  if (it == pending_.end()) return nullptr;
  auto r = std::move(it->second.reply);
  pending_.erase(it);
  return r;
}

void RemoteNode::send_call(NodeId node, ActorId actor, std::unique_ptr<CallBase> call) {
  send_call_to(node, actor, nullptr, std::move(call));
}

void RemoteNode::send_named(NodeId node, const std::string& name, std::unique_ptr<CallBase> call) {
  send_call_to(node, 0, &name, std::move(call));
}

void RemoteNode::send_call_to(NodeId node, ActorId actor, const std::string* name, std::unique_ptr<CallBase> call) {
  const MethodEntry* m = WireRegistry::instance().method(call->tag);
  if (m == nullptr) {
    auto e = std::make_exception_ptr(UnknownType(std::string("troupe: ") + call->tag->debug_name +
                                                 " is not registered with TROUPE_REMOTE; it cannot be called on node " +
                                                 std::to_string(node)));
    if (call->is_ask()) return call->fail(e);
    return core_.on_unhandled(actor, call->tag->debug_name, e);
  }
  if (closed_.load()) return call->fail(std::make_exception_ptr(Error("troupe: the runtime has finished")));
  std::uint64_t corr = 0;
  if (call->is_ask()) {
    corr = expect(node, m->take_reply(*call));
    if (corr == 0) return;  // node lost: already failed
  } else if (!cluster_->alive(node)) {
    return;  // a tell to a lost node is dropped, like one to an exited actor
  }
  auto e = envelope(node, Kind::call, corr, actor, m->id, name != nullptr ? kFlagNamed : 0);
  e->kind_tell = corr == 0;
  try {
    WireOutputArchive ar(e->bytes, &e->segments);
    if (name != nullptr) ar(*name);
    m->encode_args(*call, ar);
  } catch (...) {
    auto err = std::current_exception();
    if (corr != 0) {
      if (auto r = take(corr)) r->fail(err);
    } else {
      core_.on_unhandled(actor, m->name.c_str(), err);
    }
    return;
  }
  seal(*e);
  if (!e->segments.empty()) e->keep = std::shared_ptr<CallBase>(std::move(call));  // segments point into its arguments
  post(std::move(e));
}

void RemoteNode::stop(NodeId node, ActorId actor) {
  auto e = envelope(node, Kind::stop, 0, actor, 0);
  seal(*e);
  post(std::move(e));
}

std::uint64_t RemoteNode::monitor(NodeId node, ActorId actor, MonitorFn fn) {
  const auto token = next_corr_.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lk(watch_mu_);
    if (cluster_->alive(node)) {
      watches_.emplace(token, Watch{node, actor, std::move(fn)});
      fn = nullptr;
    }
  }
  if (fn) {  // already lost
    ExitInfo info{node, actor, ExitReason::node_lost};
    core_.post([fn = std::move(fn), info]() mutable { fn(info); });
    return token;
  }
  auto e = envelope(node, Kind::monitor, token, actor, 0);
  seal(*e);
  post(std::move(e));
  return token;
}

void RemoteNode::demonitor(NodeId node, ActorId actor, std::uint64_t token) {
  {
    std::lock_guard lk(watch_mu_);
    if (watches_.erase(token) == 0) return;
  }
  auto e = envelope(node, Kind::demonitor, token, actor, 0);
  seal(*e);
  post(std::move(e));
}

void RemoteNode::mailbox_size(NodeId node, ActorId actor, Promise<std::size_t> p) {
  const auto corr = expect(node, std::make_unique<TypedReply<std::size_t>>(std::move(p)));
  if (corr == 0) return;
  auto e = envelope(node, Kind::mailbox, corr, actor, 0);
  seal(*e);
  post(std::move(e));
}

void RemoteNode::mailbox_size_named(NodeId node, const std::string& name, Promise<std::size_t> p) {
  const auto corr = expect(node, std::make_unique<TypedReply<std::size_t>>(std::move(p)));
  if (corr == 0) return;
  auto e = envelope(node, Kind::mailbox, corr, 0, 0, kFlagNamed);
  {
    WireOutputArchive ar(e->bytes, nullptr);
    ar(name);
  }
  seal(*e);
  post(std::move(e));
}

void RemoteNode::spawn(NodeId node, const TypeTag* type, const void* init,
                       UniqueFunction<void(ActorId, std::exception_ptr)> done) {
  const ClassEntry* c = WireRegistry::instance().cls(type);
  if (c == nullptr)
    return done(0, std::make_exception_ptr(UnknownType(std::string("troupe: class ") + type->debug_name +
                                                       " is not registered with TROUPE_REMOTE")));
  if (node >= cluster_->size())
    return done(0, std::make_exception_ptr(Error("troupe: spawn_on: no node " + std::to_string(node))));
  const auto corr = expect(node, std::make_unique<SpawnReply>(std::move(done)));
  if (corr == 0) return;
  auto e = envelope(node, Kind::spawn, corr, 0, c->id);
  try {
    WireOutputArchive ar(e->bytes, nullptr);  // init lives on the caller's stack: copy it all
    c->encode_init(init, ar);
  } catch (...) {
    if (auto r = take(corr)) r->fail(std::current_exception());
    return;
  }
  seal(*e);
  post(std::move(e));
}

void RemoteNode::reply_value(NodeId to, std::uint64_t corr, std::unique_ptr<PayloadWriter> value) {
  auto e = envelope(to, Kind::reply_ok, corr, 0, 0);
  try {
    WireOutputArchive ar(e->bytes, &e->segments);
    value->write(ar);
  } catch (...) {
    return reply_error(to, corr, std::current_exception());
  }
  seal(*e);
  if (!e->segments.empty()) e->keep = std::shared_ptr<PayloadWriter>(std::move(value));
  post(std::move(e));
}

void RemoteNode::reply_error(NodeId to, std::uint64_t corr, std::exception_ptr error) {
  auto w = WireError::from(std::move(error), engine_->self());
  auto e = envelope(to, Kind::reply_error, corr, 0, 0);
  {
    WireOutputArchive ar(e->bytes, nullptr);
    ar(w);
  }
  seal(*e);
  post(std::move(e));
}

void RemoteNode::send_exit_notice(NodeId watcher, ActorId actor, std::uint64_t token, ExitReason why) {
  auto e = envelope(watcher, Kind::exit_notice, token, actor, static_cast<std::uint64_t>(why));
  seal(*e);
  post(std::move(e));
}

namespace {
/// Accepts any reply payload: raw asks only care whether an error came back.
class AnyReply final : public PendingReply {
 public:
  explicit AnyReply(Promise<void> p) : p_(std::move(p)) {}
  bool zero_copy() const noexcept override { return true; }
  void decode(WireInputArchive& ar) override {
    std::vector<std::byte> skip(ar.remaining());
    if (!skip.empty()) ar.loadBinary(skip.data(), skip.size());
  }
  void complete() override { p_.set_value(); }
  void fail(std::exception_ptr e) noexcept override {
    if (p_.valid()) p_.set_exception(std::move(e));
  }

 private:
  Promise<void> p_;
};
}  // namespace

Future<void> RemoteNode::raw_ask(NodeId to, Kind kind, std::uint64_t id, std::uint64_t target,
                                 const ByteBuffer& payload, std::uint8_t version) {
  Promise<void> p(waiter_.get());
  auto f = p.get_future();
  const auto corr = expect(to, std::make_unique<AnyReply>(std::move(p)));
  if (corr == 0) return f;
  auto e = envelope(to, kind, corr, target, id);
  e->bytes.append(payload.data(), payload.size());
  seal(*e);
  std::memcpy(e->bytes.data() + kFrameSlot + 2, &version, 1);  // the version byte
  post(std::move(e));
  return f;
}

void RemoteNode::raw_frame(NodeId to, const ByteBuffer& bytes) {
  auto e = std::make_unique<OutEnvelope>();
  e->dest = to;
  e->work = false;
  e->bytes.append(bytes.data(), bytes.size());
  post(std::move(e));
}

// ---- receiving --------------------------------------------------------------

std::unique_ptr<Inbound> RemoteNode::on_envelope(NodeId from, Envelope& env) {
  core_.clock().merge(HlcTimestamp{env.clock});
  switch (env.kind) {
    case Kind::call: return on_call(from, env);
    case Kind::reply_ok:
    case Kind::reply_error: return on_reply(from, env);
    case Kind::spawn: return on_spawn(from, env);
    case Kind::stop:
    case Kind::monitor:
    case Kind::demonitor:
    case Kind::exit_notice:
    case Kind::mailbox: return on_notice(from, env);
    case Kind::control: {
      if (!env.segment_sizes.empty()) return nullptr;
      auto payload = std::make_shared<ByteBuffer>();
      payload->append(env.payload, env.payload_size);
      return at_delivery([this, from, payload, type = env.id, work = (env.flags & kFlagWork) != 0] {
        if (work) cluster_->count_delivered(from);
        try {
          cluster_->on_control_bytes(from, type, payload);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "troupe: node %u: bad control message from node %u: %s\n", engine_->self(), from,
                       e.what());
        }
      });
    }
  }
  // An unknown kind from a newer build: tell an asker, count it if it was work.
  auto err = std::make_exception_ptr(UnknownType("troupe: unknown envelope kind " +
                                                 std::to_string(static_cast<int>(env.kind))));
  return at_delivery([this, from, corr = env.corr, work = counts_as_work(env.kind), err] {
    if (work) cluster_->count_delivered(from);
    if (corr != 0) reply_error(from, corr, err);
  });
}

std::unique_ptr<Inbound> RemoteNode::on_call(NodeId from, Envelope& env) {
  const auto corr = env.corr;
  auto refuse = [&](std::exception_ptr e) {
    return at_delivery([this, from, corr, target = env.target, e] {
      cluster_->count_delivered(from);
      if (corr != 0) {
        reply_error(from, corr, e);
      } else {
        core_.on_unhandled(target, "a tell from another node", e);
      }
    });
  };
  const MethodEntry* m = WireRegistry::instance().method(env.id);
  if (m == nullptr)
    return refuse(std::make_exception_ptr(UnknownType("troupe: node " + std::to_string(engine_->self()) +
                                                      " does not know method id " + std::to_string(env.id) +
                                                      " (not registered with TROUPE_REMOTE in its build?)")));
  std::shared_ptr<ActorCell> cell;
  if (env.flags & kFlagNamed) {
    // The payload starts with the name; the arguments follow it.
    std::string name;
    try {
      WireInputArchive ar(env.payload, env.payload_size, nullptr, 0);
      ar(name);
      env.payload += ar.position();
      env.payload_size -= ar.position();
    } catch (...) {
      return refuse(as_decode_error(std::current_exception()));
    }
    cell = core_.find_local(name);
    if (!cell)
      return refuse(std::make_exception_ptr(NameNotFound("troupe: no actor is registered as '" + name + "' on node " +
                                                         std::to_string(engine_->self()))));
  } else {
    cell = core_.find_cell(env.target);
    if (!cell) return refuse(std::make_exception_ptr(ActorExited(engine_->self(), env.target)));
  }
  if (cell->type() != m->cls)
    return refuse(std::make_exception_ptr(UnknownType("troupe: " + m->name + " called on an actor of class " +
                                                      cell->type()->debug_name)));
  const RemoteCaller caller{this, from, corr};
  if (env.segment_sizes.empty() || m->args_zero_copy) {
    try {
      WireInputArchive ar(env.payload, env.payload_size, env.segment_sizes.data(), env.segment_sizes.size());
      DecodingScope scope(&core_);
      auto msg = m->decode_call(ar, caller);
      check_complete(ar);
      auto in = std::make_unique<CallInbound>(*cluster_, from, std::move(cell), std::move(msg));
      in->segments = std::move(ar.destinations());
      return in;
    } catch (...) {
      return refuse(as_decode_error(std::current_exception()));
    }
  }
  return std::make_unique<BufferedInbound>(
      core_, env,
      [this, m, cell, caller, from](WireInputArchive& ar) {
        cluster_->count_delivered(from);
        auto msg = m->decode_call(ar, caller);
        check_complete(ar);
        cell->enqueue(msg.release());
      },
      [this, from, corr, target = env.target](std::exception_ptr e) {
        if (corr != 0) {
          reply_error(from, corr, e);
        } else {
          core_.on_unhandled(target, "a tell from another node", e);
        }
      });
}

std::unique_ptr<Inbound> RemoteNode::on_reply(NodeId from, Envelope& env) {
  auto reply = take(env.corr);
  if (!reply) {  // late (the node was declared lost meanwhile) or bogus
    return at_delivery([this, from] { cluster_->count_delivered(from); });
  }
  std::shared_ptr<PendingReply> r(std::move(reply));
  if (env.kind == Kind::reply_error) {
    std::exception_ptr err;
    try {
      WireInputArchive ar(env.payload, env.payload_size, nullptr, 0);
      WireError w;
      ar(w);
      err = w.to_exception(from);
    } catch (...) {
      err = as_decode_error(std::current_exception());
    }
    return at_delivery(
        [this, from, r, err] {
          cluster_->count_delivered(from);
          r->fail(err);
        },
        [r, from] { r->fail(std::make_exception_ptr(ConnectionLost(from))); });
  }
  if (env.segment_sizes.empty() || r->zero_copy()) {
    try {
      WireInputArchive ar(env.payload, env.payload_size, env.segment_sizes.data(), env.segment_sizes.size());
      DecodingScope scope(&core_);
      r->decode(ar);
      check_complete(ar);
      auto in = at_delivery(
          [this, from, r] {
            cluster_->count_delivered(from);
            r->complete();
          },
          [r, from] { r->fail(std::make_exception_ptr(ConnectionLost(from))); });
      in->segments = std::move(ar.destinations());
      return in;
    } catch (...) {
      auto err = as_decode_error(std::current_exception());
      return at_delivery(
          [this, from, r, err] {
            cluster_->count_delivered(from);
            r->fail(err);
          },
          [r, from] { r->fail(std::make_exception_ptr(ConnectionLost(from))); });
    }
  }
  return std::make_unique<BufferedInbound>(
      core_, env,
      [this, from, r](WireInputArchive& ar) {
        cluster_->count_delivered(from);
        r->decode(ar);
        check_complete(ar);
        r->complete();
      },
      [r](std::exception_ptr e) { r->fail(e); });
}

std::unique_ptr<Inbound> RemoteNode::on_spawn(NodeId from, Envelope& env) {
  const auto corr = env.corr;
  auto refuse = [&](std::exception_ptr e) {
    return at_delivery([this, from, corr, e] {
      cluster_->count_delivered(from);
      reply_error(from, corr, e);
    });
  };
  const ClassEntry* c = WireRegistry::instance().cls(env.id);
  if (c == nullptr)
    return refuse(std::make_exception_ptr(UnknownType("troupe: node " + std::to_string(engine_->self()) +
                                                      " does not know class id " + std::to_string(env.id) +
                                                      " (not registered with TROUPE_REMOTE in its build?)")));
  std::shared_ptr<SpawnJob> job;
  try {
    WireInputArchive ar(env.payload, env.payload_size, nullptr, 0);
    if (!env.segment_sizes.empty()) throw DecodeError("troupe: spawn arguments never carry segments");
    DecodingScope scope(&core_);
    job = c->decode_init(ar);
    check_complete(ar);
  } catch (...) {
    return refuse(as_decode_error(std::current_exception()));
  }
  return at_delivery([this, from, corr, job] {
    cluster_->count_delivered(from);
    // The constructor runs on a worker, not on the engine.
    core_.post([this, from, corr, job] {
      try {
        const ActorId id = job->spawn(rt_);
        reply_value(from, corr, std::make_unique<ValueWriter<ActorId>>(id));
      } catch (...) {
        reply_error(from, corr, std::current_exception());
      }
    });
  });
}

std::unique_ptr<Inbound> RemoteNode::on_notice(NodeId from, Envelope& env) {
  const auto kind = env.kind;
  const auto target = env.target;
  const auto corr = env.corr;
  const auto id = env.id;
  std::string name;
  if (env.flags & kFlagNamed) {
    try {
      WireInputArchive ar(env.payload, env.payload_size, nullptr, 0);
      ar(name);
    } catch (...) {
      auto err = as_decode_error(std::current_exception());
      return at_delivery([this, from, corr, err] {
        cluster_->count_delivered(from);
        if (corr != 0) reply_error(from, corr, err);
      });
    }
  }
  return at_delivery([this, from, kind, target, corr, id, name = std::move(name)] {
    cluster_->count_delivered(from);
    if (!name.empty()) {
      if (kind == Kind::mailbox) {
        auto cell = core_.find_local(name);
        if (!cell)
          return reply_error(from, corr,
                             std::make_exception_ptr(NameNotFound("troupe: no actor is registered as '" + name +
                                                                  "' on node " + std::to_string(engine_->self()))));
        reply_value(from, corr, std::make_unique<ValueWriter<std::size_t>>(cell->mailbox_size()));
      }
      return;
    }
    switch (kind) {
      case Kind::stop:
        if (auto cell = core_.find_cell(target)) cell->request_stop();
        break;
      case Kind::mailbox: {
        auto cell = core_.find_cell(target);
        if (!cell) return reply_error(from, corr, std::make_exception_ptr(ActorExited(engine_->self(), target)));
        reply_value(from, corr, std::make_unique<ValueWriter<std::size_t>>(cell->mailbox_size()));
        break;
      }
      case Kind::monitor: {
        auto cell = core_.find_cell(target);
        if (!cell) return send_exit_notice(from, target, corr, ExitReason::stopped);
        std::lock_guard lk(watch_mu_);
        const auto local = cell->add_monitor([this, from, target, corr](const ExitInfo& info) {
          {
            std::lock_guard lk2(watch_mu_);
            watched_.erase({from, corr});
          }
          send_exit_notice(from, target, corr, info.reason);
        });
        watched_[{from, corr}] = {target, local};
        break;
      }
      case Kind::demonitor: {
        std::pair<ActorId, std::uint64_t> w{0, 0};
        {
          std::lock_guard lk(watch_mu_);
          auto it = watched_.find({from, corr});
          if (it == watched_.end()) break;
          w = it->second;
          watched_.erase(it);
        }
        if (auto cell = core_.find_cell(w.first)) cell->remove_monitor(w.second);
        break;
      }
      case Kind::exit_notice: {
        MonitorFn fn;
        {
          std::lock_guard lk(watch_mu_);
          auto it = watches_.find(corr);
          if (it == watches_.end()) break;
          fn = std::move(it->second.fn);
          watches_.erase(it);
        }
        ExitInfo info{from, target, static_cast<ExitReason>(id)};
        core_.post([fn = std::move(fn), info]() mutable { fn(info); });
        break;
      }
      default:
        break;
    }
  });
}

void RemoteNode::on_bad_envelope(NodeId from, const EnvelopeFault& fault) {
  std::fprintf(stderr, "troupe: node %u: bad envelope from node %u: %s\n", engine_->self(), from, fault.what.c_str());
  if (!fault.have_prefix) return;
  // The sender counted it as work: count it too, or finish() would wait forever.
  if (counts_as_work(fault.kind)) cluster_->count_delivered(from);
  const bool asks = fault.kind == Kind::call || fault.kind == Kind::spawn || fault.kind == Kind::mailbox;
  if (asks && fault.corr != 0) reply_error(from, fault.corr, std::make_exception_ptr(DecodeError(fault.what)));
}

// ---- loss and shutdown ----------------------------------------------------

void RemoteNode::node_lost(NodeId n) {
  std::vector<std::unique_ptr<PendingReply>> failed;
  {
    std::lock_guard lk(pending_mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.node == n) {
        failed.push_back(std::move(it->second.reply));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& r : failed) r->fail(std::make_exception_ptr(ConnectionLost(n)));
  std::vector<Watch> fired;
  std::vector<std::pair<ActorId, std::uint64_t>> unwatch;
  {
    std::lock_guard lk(watch_mu_);
    for (auto it = watches_.begin(); it != watches_.end();) {
      if (it->second.node == n) {
        fired.push_back(std::move(it->second));
        it = watches_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = watched_.begin(); it != watched_.end();) {
      if (it->first.first == n) {
        unwatch.push_back(it->second);
        it = watched_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& w : fired) {
    ExitInfo info{w.node, w.actor, ExitReason::node_lost};
    core_.post([fn = std::move(w.fn), info]() mutable { fn(info); });
  }
  for (auto& [actor, token] : unwatch)
    if (auto cell = core_.find_cell(actor)) cell->remove_monitor(token);
}

int RemoteNode::finish() {
  cluster_->finish();
  stop_polling();
  engine_->stop_progress_thread();
  return 0;
}

void RemoteNode::finalize() {
  if (finalized_) return;
  finalized_ = true;
  stop_polling();
  engine_->stop_progress_thread();
  // Processes joined by add_nodes stay connected until their communicators
  // are released: free the merged ones, disconnect the spawn intercommunicators
  // (collective over their members, so only while none of them was lost).
  {
    int done = 0;
    MPI_Finalized(&done);
    if (!done && !spawns_.empty()) {
      engine_->release_joined_comms();
      const bool intact = cluster_->lost_set().size() == lost_at_last_spawn_;
      for (auto& sp : spawns_) {
        if (sp.merged != MPI_COMM_NULL) MPI_Comm_free(&sp.merged);
        if (intact && sp.inter != MPI_COMM_NULL) MPI_Comm_disconnect(&sp.inter);
      }
    }
  }
  if (owns_mpi_) {
    int done = 0;
    MPI_Finalized(&done);
    if (done) return;
    // MPICH's MPI_Finalize waits for every rank, the dead included, and has no
    // switch to skip that (Open MPI's fence is skipped, see runtime_mpi.cpp):
    // after a loss, survivors leave MPI without it.
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    const bool mpich = std::string(version, static_cast<std::size_t>(len)).find("MPICH") != std::string::npos;
    if (mpich && cluster_->lost_set().size() > 0) return;
    MPI_Finalize();
  }
}

}  // namespace troupe::detail
