#include "remote_node.hpp"

#include <cereal/details/helpers.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

#include "troupe/detail/stage_probe.hpp"
#include "troupe/runtime.hpp"
#include "core/scheduler.hpp"
#include "remote_waiter.hpp"
#include "take_out.hpp"
#include "wire_error.hpp"


namespace troupe::detail {
namespace {

class SpawnReply final : public PendingReply {
 public:
  explicit SpawnReply(UniqueFunction<void(ActorId, std::exception_ptr)> done) : done_(std::move(done)) {}
  bool zero_copy() const noexcept override { return true; }
  void decode(WireInputArchive& ar) override { ar(id_); }
  bool decode_bytes(const std::byte* p, std::size_t n) override {
    std::tuple<ActorId> id;
    read_numbers(p, n, id);
    id_ = std::get<0>(id);
    return true;
  }
  void complete() override { done_(id_, nullptr); }
  void fail(std::exception_ptr e) noexcept override { done_(0, std::move(e)); }

 private:
  UniqueFunction<void(ActorId, std::exception_ptr)> done_;
  ActorId id_ = 0;
};

}  // namespace


void RemoteNode::start_services() {
  waiter_ = std::make_unique<Waiter>(*this);
  core_.set_waiter(waiter_.get());
  core_.set_remote(this);
  // The progress thread also runs failure detection, every 10 ms.
  engine_->start_progress_thread([this] { cluster_->tick(); }, std::chrono::microseconds(10000),
                                 [this] { start_polling(); });
}

void RemoteNode::start_polling() {
  if (closed_.load(std::memory_order_acquire) || polling_.exchange(true)) return;
  if (closed_.load(std::memory_order_acquire)) {  // closed meanwhile: stop_polling may be waiting
    polling_.store(false, std::memory_order_release);
    return;
  }
  engine_->helper_enter();
  bool posted = false;
  try {
    posted = core_.scheduler().post([this, now = Clock::now()] { poll(now); });
  } catch (...) {
    // No memory for the task: the progress thread goes on polling alone.
  }
  if (!posted) {
    // Or the scheduler was shut down (a runtime going without finish()).
    engine_->helper_stop();
    polling_.store(false, std::memory_order_release);
  }
}

void RemoteNode::poll(Clock::time_point last_activity) {
  constexpr auto kQuietSpell = std::chrono::microseconds(200);
  // Whatever happens here (no memory, say), polling ends or goes on: never
  // left marked as going on, which stop_polling() would wait for.
  try {
    if (!closed_.load(std::memory_order_acquire)) {
      // Poll for a while in this task (rescheduling it for every poll would
      // keep waking the arena's other workers), then yield the worker.
      // The clock is read after activity and every 8th idle round only: an
      // idle round is little more than one MPI probe, and reading the clock
      // every round took 12 % of the polling rank's cycles (perf, round-trip
      // benchmark).
      auto now = Clock::now();
      const auto slice_end = now + std::chrono::microseconds(50);
      unsigned idle = 0;
      while (now < slice_end && now - last_activity < kQuietSpell) {
        InlineTurns turns;
        const bool did = engine_->helper_progress();
        turns.run(core_.config().batch);
        if (!did && (++idle & 7u) != 0) continue;
        now = Clock::now();
        if (did) last_activity = now;
      }
      // Behind whatever turns that progress just queued (FIFO), then again
      // (unless the scheduler is being shut down, or there is no memory for
      // the task: the progress thread goes on polling alone).
      if (now - last_activity < kQuietSpell && core_.scheduler().post([this, last_activity] { poll(last_activity); }))
        return;
    }
  } catch (...) {
  }
  engine_->helper_stop();
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

Draft RemoteNode::envelope(NodeId to, Kind kind, std::uint64_t corr, std::uint64_t target, std::uint64_t id,
                           std::uint32_t flags) {
  auto e = take_draft(to);
  e->work = counts_as_work(kind);
  if (corr != 0 && asks_for_reply(kind)) flags |= kFlagAsk;
  EnvelopeWriter w(e->bytes);
  w.begin(kind, engine_->self(), corr, target, id, core_.clock().now().raw, flags);
  return e;
}

void RemoteNode::seal(OutEnvelope& e) {
  std::vector<std::uint64_t> sizes;
  sizes.reserve(e.segments.size());
  const bool stage = !e.segments.empty() && engine_->stages_blocks(e.dest);
  for (auto& s : e.segments) {
    s.staged = stage && !s.huge_pages && s.size <= kStageUpTo;
    sizes.push_back(s.size | (s.staged ? kSegmentPieced : 0));
  }
  // begin() wrote the header right after the engine's frame slot.
  EnvelopeWriter w(e.bytes);
  w.begin_at(kFrameSlot);
  w.finish(sizes.data(), static_cast<std::uint32_t>(sizes.size()));
}

void RemoteNode::post(Draft e) {
  TROUPE_STAGE(post);
  if (closed_.load(std::memory_order_acquire)) return;
  if (!cluster_->alive(e->dest)) return;
  const bool work = e->work;
  const NodeId dest = e->dest;
  if (work) cluster_->count_sent(dest);
  // Tells coalesce; everything someone may be waiting for leaves at once.
  const bool urgent = !(e->kind_tell);
  try {
    engine_->send(std::move(e), urgent);
  } catch (...) {
    // Out of memory before it was queued (past that, nothing is thrown): it
    // was never sent, so finish() must not wait for its delivery.
    if (work) cluster_->uncount_sent(dest);
    throw;
  }
}

std::uint64_t RemoteNode::expect(NodeId node, std::unique_ptr<PendingReply> reply) {
  bool closed = false;
  {
    std::lock_guard lk(pending_mu_);
    closed = closed_.load(std::memory_order_acquire);
    if (!closed && cluster_->alive(node)) {
      // Room for one more entry than this one: a reply that runs out of
      // memory puts its entry back (put_back) without making the table grow.
      if (static_cast<double>(pending_.size() + 2) >
          static_cast<double>(pending_.bucket_count()) * pending_.max_load_factor())
        pending_.reserve(pending_.size() + 2);
      const auto corr = next_corr_.fetch_add(1, std::memory_order_relaxed);
      if (spare_count_ == 0) {
        pending_.emplace(corr, Pending{node, std::move(reply)});
      } else {
        auto n = std::move(spare_pending_[--spare_count_]);
        n.key() = corr;
        n.mapped() = Pending{node, std::move(reply)};
        pending_.insert(std::move(n));
      }
      return corr;
    }
  }
  // Failed outside the lock: the failure may run continuations that ask again.
  if (closed) {
    reply->fail(std::make_exception_ptr(Error("troupe: the runtime has finished")));
  } else {
    reply->fail(connection_lost(node));
  }
  return 0;
}

std::unique_ptr<PendingReply> RemoteNode::take(std::uint64_t corr, NodeId from) {
  std::lock_guard lk(pending_mu_);
  auto it = pending_.find(corr);
  if (it == pending_.end() || (from != kInvalidNode && it->second.node != from)) return nullptr;
  auto n = pending_.extract(it);
  auto r = std::move(n.mapped().reply);
  if (spare_count_ < kSparePending) spare_pending_[spare_count_++] = std::move(n);
  return r;
}

RemoteNode::PendingNode RemoteNode::take_node(std::uint64_t corr, NodeId from) {
  std::lock_guard lk(pending_mu_);
  if (!reply_node_.empty() && spare_count_ < kSparePending) spare_pending_[spare_count_++] = std::move(reply_node_);
  auto it = pending_.find(corr);
  if (it == pending_.end() || it->second.node != from) return {};
  return pending_.extract(it);
}

NodeId RemoteNode::asked_of(std::uint64_t corr) {
  std::lock_guard lk(pending_mu_);
  auto it = pending_.find(corr);
  return it == pending_.end() ? kInvalidNode : it->second.node;
}

void RemoteNode::put_back(PendingNode n) noexcept {
  // No allocation: the node is the table's own, and expect() keeps room for
  // one entry more than the table holds (asks made meanwhile included), so
  // the table does not grow; only one node is out at a time (on_reply runs
  // under the engine lock). No sweep of the table can have missed it
  // meanwhile: declaring a node lost takes the engine lock (Engine::mark_lost)
  // before its sweep, and finalize() sweeps after Engine::shut(), which takes
  // it too (once no reply can be read any more).
  std::lock_guard lk(pending_mu_);
  pending_.insert(std::move(n));
}


void RemoteNode::send_call(NodeId node, ActorId actor, std::unique_ptr<CallBase> call) {
  CallBase& c = *call;
  send_call_to(node, actor, nullptr, c, std::move(call));
}

void RemoteNode::send_ask(NodeId node, ActorId actor, CallBase& call) {
  send_call_to(node, actor, nullptr, call, nullptr);
}

void RemoteNode::send_named(NodeId node, const std::string& name, std::unique_ptr<CallBase> call) {
  CallBase& c = *call;
  send_call_to(node, 0, &name, c, std::move(call));
}

void RemoteNode::send_tell(NodeId node, ActorId actor, const CallBase& call) {
  const MethodEntry* m = method_for(call, node, actor);
  if (m == nullptr || closed_.load(std::memory_order_acquire) || !cluster_->alive(node)) return;  // dropped, like a tell to an exited actor
  if (m->encode_numbers == nullptr) {  // not plain numbers after all: the general way
    Draft e = encode_call(node, actor, nullptr, 0, *m, call);
    if (e) post(std::move(e));
    return;
  }
  // Plain numbers: written straight into the destination's open frame.
  cluster_->count_sent(node);
  try {
    engine_->send_in_place(node, [&](ByteBuffer& out) {
      EnvelopeWriter w(out);
      w.begin(Kind::call, engine_->self(), 0, actor, m->id, core_.clock().now().raw, 0);
      m->encode_numbers(call, out);
      w.finish(nullptr, 0);
    });
  } catch (...) {  // out of memory: the tell is lost, and said so
    cluster_->uncount_sent(node);
    core_.on_unhandled(actor, m->name.c_str(), std::current_exception());
  }
}

void RemoteNode::send_call_to(NodeId node, ActorId actor, const std::string* name, CallBase& call,
                              std::unique_ptr<CallBase> owned) {
  const MethodEntry* m = method_for(call, node, actor);
  if (m == nullptr) return;
  if (closed_.load()) return call.fail(std::make_exception_ptr(Error("troupe: the runtime has finished")));
  std::uint64_t corr = 0;
  if (call.is_ask()) {
    corr = expect(node, m->take_reply(call));
    if (corr == 0) return;  // node lost: already failed
  } else if (!cluster_->alive(node)) {
    return;  // a tell to a lost node is dropped, like one to an exited actor
  }
  try {
    Draft e = encode_call(node, actor, name, corr, *m, call);
    if (!e) return;
    if (!e->segments.empty()) {
      // Segments point into the call's arguments: the envelope keeps the call.
      // A call on the caller's stack has plain numbers and never has any.
      if (!owned) throw Error("troupe: internal error: a call made on the stack has blocks to send");
      e->keep.push_back(std::shared_ptr<CallBase>(std::move(owned)));
    }
    post(std::move(e));
  } catch (...) {
    // Out of memory on the way to the engine: an ask fails with it (the
    // envelope may still have left; a reply to a forgotten ask is dropped).
    if (corr == 0) throw;
    if (auto r = take(corr)) r->fail(std::current_exception());
  }
}

const MethodEntry* RemoteNode::method_for(const CallBase& call, NodeId node, ActorId actor) {
  if (const MethodEntry* m = WireRegistry::instance().method(call.tag)) return m;
  auto e = std::make_exception_ptr(UnknownType(std::string("troupe: ") + call.tag->debug_name +
                                               " is not registered with TROUPE_REMOTE; it cannot be called on node " +
                                               std::to_string(node)));
  if (call.is_ask()) {
    const_cast<CallBase&>(call).fail(e);  // fail() only settles the call's promise
  } else {
    core_.on_unhandled(actor, call.tag->debug_name, e);
  }
  return nullptr;
}

Draft RemoteNode::encode_call(NodeId node, ActorId actor, const std::string* name, std::uint64_t corr,
                              const MethodEntry& m, const CallBase& call) {
  auto e = envelope(node, Kind::call, corr, actor, m.id, name != nullptr ? kFlagNamed : 0);
  e->kind_tell = corr == 0;
  try {
    if (name == nullptr && m.encode_numbers != nullptr) {
      m.encode_numbers(call, e->bytes);  // plain numbers: the same bytes, without an archive
    } else {
      if (name != nullptr) {
        WireOutputArchive inline_ar(e->bytes, nullptr);  // inline, however long: read before any block
        inline_ar(*name);
      }
      WireOutputArchive ar(e->bytes, &e->segments);
      set_gathering(ar, node);
      m.encode_args(call, ar);
    }
    seal(*e);
  } catch (...) {
    auto err = std::current_exception();
    if (corr != 0) {
      if (auto r = take(corr)) r->fail(err);
    } else {
      core_.on_unhandled(actor, m.name.c_str(), err);
    }
    return nullptr;
  }
  return e;
}

void RemoteNode::stop(NodeId node, ActorId actor) {
  auto e = envelope(node, Kind::stop, 0, actor, 0);
  seal(*e);
  post(std::move(e));
}

std::uint64_t RemoteNode::monitor(NodeId node, ActorId actor, MonitorFn fn) {
  return monitor_in(node, actor, std::move(fn), kProtocolVersion);
}

std::uint64_t RemoteNode::monitor_in(NodeId node, ActorId actor, MonitorFn fn, std::uint8_t version,
                                     const ByteBuffer* named) {
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
    core_.fire_monitor(std::move(fn), info);
    return token;
  }
  try {
    auto e = envelope(node, Kind::monitor, token, actor, 0, named != nullptr ? kFlagNamed : 0);
    if (named != nullptr) e->bytes.append(named->data(), named->size());  // (tests)
    seal(*e);
    if (version != kProtocolVersion) std::memcpy(e->bytes.data() + kFrameSlot + 2, &version, 1);  // tests
    post(std::move(e));
  } catch (...) {
    // Not sent: the caller gets the exception, and no watch stays behind.
    std::lock_guard lk(watch_mu_);
    watches_.erase(token);
    throw;
  }
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

template <class Make>
void RemoteNode::send_expected(std::uint64_t corr, Make&& make) {
  try {
    post(make());
  } catch (...) {
    // Out of memory, or a message too large, on the way to the engine: the
    // caller's future fails with it (a reply to a forgotten ask is dropped).
    if (auto r = take(corr)) r->fail(std::current_exception());
  }
}

void RemoteNode::mailbox_size(NodeId node, ActorId actor, Promise<std::size_t> p) {
  const auto corr = expect(node, std::make_unique<TypedReply<std::size_t>>(std::move(p)));
  if (corr == 0) return;
  send_expected(corr, [&] {
    auto e = envelope(node, Kind::mailbox, corr, actor, 0);
    seal(*e);
    return e;
  });
}

void RemoteNode::mailbox_size_named(NodeId node, const std::string& name, Promise<std::size_t> p) {
  const auto corr = expect(node, std::make_unique<TypedReply<std::size_t>>(std::move(p)));
  if (corr == 0) return;
  send_expected(corr, [&] {
    auto e = envelope(node, Kind::mailbox, corr, 0, 0, kFlagNamed);
    {
      WireOutputArchive ar(e->bytes, nullptr);
      ar(name);
    }
    seal(*e);
    return e;
  });
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
  send_expected(corr, [&] {
    auto e = envelope(node, Kind::spawn, corr, 0, c->id);
    {
      WireOutputArchive ar(e->bytes, nullptr);  // init lives on the caller's stack: copy it all
      c->encode_init(init, ar);
    }
    seal(*e);
    return e;
  });
}

bool RemoteNode::retry_while_short(NodeId to, void (*run)(void*), void* make) {
  // (A failed run did nothing: post() queues all or nothing.) Not once nobody waits any more.
  return retry_while_short_of_memory([&] { run(make); },
                                     [&] { return !closed_.load(std::memory_order_acquire) && cluster_->alive(to); });
}

template <class Send>
void RemoteNode::send_owed(const char* what, NodeId to, std::uint64_t corr, Send&& send) noexcept {
  const char* why = "no memory";
  try {
    if (retry_while_short(to, send)) return;
    if (closed_.load(std::memory_order_acquire) || !cluster_->alive(to)) return;  // nobody waits for it any more
  } catch (...) {
    why = "it could not be made";  // (post() throws nothing but bad_alloc)
  }
  std::fprintf(stderr, "troupe: node %u: %s %llu to node %u was given up (%s)\n", engine_->self(), what,
               static_cast<unsigned long long>(corr), to, why);
}

void RemoteNode::reply_value(NodeId to, std::uint64_t corr, std::unique_ptr<PayloadWriter> value) {
  std::shared_ptr<PayloadWriter> writer;  // kept by an envelope whose blocks point into it
  std::exception_ptr refused;
  send_owed("the reply to ask", to, corr, [&] {
    if (!writer) writer = std::move(value);  // (value unchanged if this throws)
    auto e = envelope(to, Kind::reply_ok, corr, 0, 0);
    try {
      WireOutputArchive ar(e->bytes, &e->segments);
      set_gathering(ar, to);
      writer->write(ar);
      seal(*e);  // may refuse it: too large, or too many blocks
    } catch (...) {
      refused = std::current_exception();  // the caller learns why
      return;
    }
    if (!e->segments.empty()) e->keep.push_back(writer);
    post(std::move(e));
  });
  if (refused) reply_error(to, corr, std::move(refused));
}

void RemoteNode::reply_bytes(NodeId to, std::uint64_t corr, const void* data, std::size_t size) {
  TROUPE_STAGE(reply_begin);
  send_owed("the reply to ask", to, corr, [&] {
    auto e = envelope(to, Kind::reply_ok, corr, 0, 0);
    if (size != 0) e->bytes.append(data, size);
    seal(*e);
    post(std::move(e));
  });
}

void RemoteNode::reply_error(NodeId to, std::uint64_t corr, std::exception_ptr error) {
  send_owed("the error reply to ask", to, corr, [&] {
    auto w = WireError::from(error, engine_->self());
    auto e = envelope(to, Kind::reply_error, corr, 0, 0);
    {
      WireOutputArchive ar(e->bytes, nullptr);
      ar(w);
    }
    seal(*e);
    post(std::move(e));
  });
}

void RemoteNode::send_exit_notice(NodeId watcher, ActorId actor, std::uint64_t token, ExitReason why) {
  send_owed("the exit notice of watch", watcher, token, [&] {
    auto e = envelope(watcher, Kind::exit_notice, token, actor, static_cast<std::uint64_t>(why));
    seal(*e);
    post(std::move(e));
  });
}

void RemoteNode::fire_watch(NodeId from, std::uint64_t token, ExitReason why) {
  Watch w{};
  {
    std::lock_guard lk(watch_mu_);
    auto it = watches_.find(token);
    if (it == watches_.end() || it->second.node != from) return;  // ended already, or not that node's to end
    w = std::move(it->second);
    watches_.erase(it);
  }
  core_.fire_monitor(std::move(w.fn), ExitInfo{w.node, w.actor, why});
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
  bool decode_bytes(const std::byte*, std::size_t) override { return true; }  // whatever is there
  void complete() override { p_.set_value(); }
  void fail(std::exception_ptr e) noexcept override {
    if (p_.valid()) p_.set_exception(std::move(e));
  }

 private:
  Promise<void> p_;
};
}  // namespace

Future<void> RemoteNode::raw_ask(NodeId to, Kind kind, std::uint64_t id, std::uint64_t target,
                                 const ByteBuffer& payload, std::uint8_t version, bool coalesce) {
  return send_raw_ask(to, kind, id, target, payload, version, coalesce, nullptr, 0);
}

Future<void> RemoteNode::raw_ask_with_block(NodeId to, Kind kind, std::uint64_t id, std::uint64_t target,
                                            const ByteBuffer& payload, ByteBuffer block, std::size_t declared) {
  return send_raw_ask(to, kind, id, target, payload, kProtocolVersion, false,
                      std::make_shared<ByteBuffer>(std::move(block)), declared);
}

Draft RemoteNode::raw_envelope(NodeId to, Kind kind, std::uint64_t corr, std::uint64_t target, std::uint64_t id,
                               std::uint32_t flags, const ByteBuffer& payload, std::shared_ptr<ByteBuffer> block,
                               std::size_t declared) {
  auto e = envelope(to, kind, corr, target, id, flags);
  e->bytes.append(payload.data(), payload.size());
  if (block) {
    // Never staged (as if on huge pages): it leaves whole, as one message cut short.
    e->segments.push_back({block->data(), declared, /*huge_pages=*/true});
    e->keep.push_back(block);
  }
  seal(*e);  // declares `declared` bytes
  if (block) e->segments.back().size = block->size();  // and sends them all
  return e;
}

Future<void> RemoteNode::send_raw_ask(NodeId to, Kind kind, std::uint64_t id, std::uint64_t target,
                                      const ByteBuffer& payload, std::uint8_t version, bool coalesce,
                                      std::shared_ptr<ByteBuffer> block, std::size_t declared) {
  Promise<void> p(core_.waiter());
  auto f = p.get_future();
  const auto corr = expect(to, std::make_unique<AnyReply>(std::move(p)));
  if (corr == 0) return f;
  auto e = raw_envelope(to, kind, corr, target, id, kFlagAsk, payload, std::move(block), declared);
  std::memcpy(e->bytes.data() + kFrameSlot + 2, &version, 1);  // the version byte
  e->kind_tell = coalesce;
  post(std::move(e));
  return f;
}

void RemoteNode::raw_reply_with_block(NodeId to, std::uint64_t corr, const ByteBuffer& payload, ByteBuffer block,
                                      std::size_t declared) {
  post(raw_envelope(to, Kind::reply_ok, corr, 0, 0, 0, payload, std::make_shared<ByteBuffer>(std::move(block)),
                    declared));
}

void RemoteNode::raw_control_with_block(NodeId to, std::uint64_t id, std::uint32_t flags, const ByteBuffer& payload,
                                        ByteBuffer block, bool work) {
  const std::size_t size = block.size();
  auto e = raw_envelope(to, Kind::control, 0, 0, id, flags, payload, std::make_shared<ByteBuffer>(std::move(block)),
                        size);
  e->work = work;
  post(std::move(e));
}

void RemoteNode::raw_envelope_in(NodeId to, Kind kind, std::uint64_t corr, std::uint64_t target, std::uint64_t id,
                                 std::uint8_t version, const ByteBuffer* named) {
  auto e = envelope(to, kind, corr, target, id, named != nullptr ? kFlagNamed : 0);
  if (named != nullptr) e->bytes.append(named->data(), named->size());
  seal(*e);
  std::memcpy(e->bytes.data() + kFrameSlot + 2, &version, 1);  // the version byte
  post(std::move(e));
}

void RemoteNode::raw_frame(NodeId to, const ByteBuffer& bytes) {
  auto e = take_draft(to);
  e->work = false;
  e->bytes.append(bytes.data(), bytes.size());
  post(std::move(e));
}

// ---- loss and shutdown ----------------------------------------------------

void RemoteNode::node_lost(NodeId n) {
  // Failed outside the locks: a failure may run continuations that ask again
  // (of another node; none is added for n, which left the live set first).
  const auto lost = connection_lost(n);
  take_out(pending_mu_, pending_, [n](const auto& e) { return e.second.node == n; },
           [&](auto& nh) { nh.mapped().reply->fail(lost); });
  take_out(watch_mu_, watches_, [n](const auto& e) { return e.second.node == n; }, [&](auto& nh) {
    auto& w = nh.mapped();
    core_.fire_monitor(std::move(w.fn), ExitInfo{w.node, w.actor, ExitReason::node_lost});
  });
  take_out(watch_mu_, watched_, [n](const auto& e) { return e.first.first == n; }, [&](auto& nh) {
    const auto [actor, token] = nh.mapped();
    if (auto cell = core_.find_cell(actor)) cell->remove_monitor(token);
  });
}

int RemoteNode::finish() {
  cluster_->finish();
  stop_polling();
  engine_->stop_progress_thread();
  return 0;
}

void RemoteNode::leave() {
  // Its last messages (what the ending actors sent) go before the notice: per
  // pair of nodes, everything arrives in order.
  if (finalized_) return;
  try {
    cluster_->leave(std::chrono::seconds(1));
  } catch (...) {
    // No memory for the notices: the others find this node lost by its silence.
  }
}

void RemoteNode::finalize() {
  if (finalized_) return;
  finalized_ = true;
  stop_polling();  // from here on, a new ask fails at once (expect)
  // Asks still waiting (made while the actors were ending, or of a method
  // that never answers) end, not never: now, and again once no reply can be
  // read any more (after shut(), which waits for a reader inside the engine,
  // whose reply may be on its way back to the table: put_back).
  auto fail_the_rest = [this] {
    std::vector<std::unique_ptr<PendingReply>> left;
    {
      std::lock_guard lk(pending_mu_);
      for (auto& [corr, p] : pending_) left.push_back(std::move(p.reply));
      pending_.clear();
    }
    for (auto& r : left)
      if (r) r->fail(std::make_exception_ptr(Error("troupe: the runtime finished before the reply came")));
  };
  fail_the_rest();
  engine_->stop_progress_thread();
  int done = 0;
  MPI_Finalized(&done);
  if (!done) {
    std::lock_guard lk(membership_mu_);  // an add_nodes() under way ends first; later ones fail
    // No thread calls MPI through the engine from here on: one waiting on a
    // future, or sending, finishes its call first (before MPI_Finalize, and
    // before an application that adopted MPI goes on with it).
    engine_->shut();
    // The communicators troupe made are freed (but the engine's first, see
    // Engine::release_joined_comms). Processes joined by add_nodes stay
    // connected until theirs are: free the merged ones, disconnect the spawn
    // intercommunicators (collective over their members, so only while none
    // of them was lost).
    engine_->release_joined_comms();
    // A node that left without finish() is lost to the others, who skip the
    // disconnect: so does it.
    const std::size_t lost = cluster_->lost_set().size();
    for (auto& sp : spawns_) {
      if (sp.merged != MPI_COMM_NULL) MPI_Comm_free(&sp.merged);
      if (!cluster_->left() && lost == sp.lost_at && sp.inter != MPI_COMM_NULL) MPI_Comm_disconnect(&sp.inter);
    }
    for (auto& c : owned_comms_)
      if (c != MPI_COMM_NULL) MPI_Comm_free(&c);
    owned_comms_.clear();
    membership_comm_ = MPI_COMM_NULL;
    if (role_comm_ != MPI_COMM_NULL) MPI_Comm_free(&role_comm_);
  }
  fail_the_rest();
  if (owns_mpi_) {
    int done = 0;
    MPI_Finalized(&done);
    if (done) return;
    // MPICH's MPI_Finalize waits for every rank, the dead included, and has no
    // switch to skip that (Open MPI's fence is skipped, see runtime_mpi.cpp):
    // after a loss, survivors leave MPI without it, and so does a node that
    // left without finish() (lost to the others).
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    const bool mpich = std::string(version, static_cast<std::size_t>(len)).find("MPICH") != std::string::npos;
    if (mpich && (cluster_->left() || !cluster_->lost_set().empty())) return;
    MPI_Finalize();
  }
}

}  // namespace troupe::detail
