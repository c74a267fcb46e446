// RemoteNode, receiving: what each kind of envelope becomes (the Inbound the
// engine delivers in order), and envelopes that cannot be read.
#include "remote_node.hpp"

#include <cereal/details/helpers.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "troupe/detail/stage_probe.hpp"
#include "troupe/runtime.hpp"
#include "core/scheduler.hpp"
#include "wire_error.hpp"


namespace troupe::detail {
namespace {

class FnInbound final : public Inbound {
 public:
  FnInbound(UniqueFunction<void()> fn, UniqueFunction<void()> on_abandon)
      : fn_(std::move(fn)), on_abandon_(std::move(on_abandon)) {}
  void deliver() override { fn_(); }
  /// What runs never reads a block (a refusal, a notice): its answer stands.
  void reject(std::exception_ptr) override { fn_(); }
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
  /// `caller`: whom a call whose blocks came damaged answers (a batch has none).
  CallInbound(Cluster& cluster, NodeId from, std::shared_ptr<ActorCell> cell, std::unique_ptr<Message> msg,
              RemoteCaller caller = {})
      : cluster_(cluster), from_(from), cell_(std::move(cell)), msg_(std::move(msg)), caller_(caller) {}
  void deliver() override {
    cluster_.count_delivered(from_, msg_->weight);  // a batch of calls counts each
    cell_->enqueue(msg_.release());
    TROUPE_STAGE(in_mailbox);
  }
  void reject(std::exception_ptr why) override {
    cluster_.count_delivered(from_, msg_->weight);
    if (caller_.corr != 0) {
      caller_.sink->reply_error(from_, caller_.corr, why);
    } else {
      cell_->core().on_unhandled(cell_->id(), "a tell from another node", why);
    }
  }

 private:
  Cluster& cluster_;
  NodeId from_;
  std::shared_ptr<ActorCell> cell_;
  std::unique_ptr<Message> msg_;
  RemoteCaller caller_;
};

/// An envelope whose segments must arrive before it can be decoded: a copy of
/// its payload and buffers for its segments; decoded at delivery.
class BufferedInbound final : public Inbound {
 public:
  /// Counts as delivered work (a call or a reply) before it is decoded.
  BufferedInbound(Core& core, Cluster& cluster, NodeId from, const Envelope& env,
                  UniqueFunction<void(WireInputArchive&)> decode, UniqueFunction<void(std::exception_ptr)> failed)
      : core_(core),
        cluster_(cluster),
        source_(from),
        sizes_(env.segment_sizes),
        decode_(std::move(decode)),
        failed_(std::move(failed)) {
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
      failed_(connection_lost(source_));
    } catch (...) {
    }
  }
  void reject(std::exception_ptr why) override {
    cluster_.count_delivered(source_);
    failed_(why);
  }

 private:
  Core& core_;
  Cluster& cluster_;
  NodeId source_;
  ByteBuffer payload_;
  std::vector<std::uint64_t> sizes_;
  std::vector<ByteBuffer> buffers_;
  UniqueFunction<void(WireInputArchive&)> decode_;
  UniqueFunction<void(std::exception_ptr)> failed_;
};

/// What a caller is told when even the error meant for it finds no memory:
/// made before anything runs short.
const std::exception_ptr kNoMemoryToDecode =
    std::make_exception_ptr(DecodeError("troupe: no memory to decode the message, nor to say more"));
const std::exception_ptr kNoMemory = std::make_exception_ptr(Error("troupe: the node called ran out of memory"));

/// e made, or kNoMemory (kNoMemoryToDecode) if making it found no memory.
template <class Make>
std::exception_ptr error_or(const std::exception_ptr& fallback, Make&& make) noexcept {
  try {
    return make();
  } catch (...) {
    return fallback;
  }
}

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
  cluster_.count_delivered(source_);
  try {
    WireInputArchive ar(payload_.data(), payload_.size(), sizes_.data(), sizes_.size());
    ar.use_received_segments(buffers_.data());
    DecodingScope scope(&core_);
    decode_(ar);
  } catch (...) {
    // Answered whatever happens: the DecodeError's text needs memory too.
    const auto e = std::current_exception();
    failed_(error_or(kNoMemoryToDecode, [&] { return as_decode_error(e); }));
  }
}

/// After a std::bad_alloc while reading env's message: whether memory is short
/// on this rank, rather than the decode having asked for something no message
/// of its size needs (a user type that reserves what a size field of its own
/// says, say): as much as the message itself cannot be had either.
bool memory_is_short(const Envelope& env) noexcept {
  // A call of operator new, not a new-expression, and the pointer handed to
  // an (empty) asm statement: an allocation whose memory is never used may be
  // left out by the compiler (GCC does), and the probe with it.
  try {
    void* room = ::operator new(std::max<std::size_t>(env.payload_size + env.segment_bytes, 4096));
    __asm__ __volatile__("" : : "r"(room) : "memory");
    ::operator delete(room);
    return false;
  } catch (const std::bad_alloc&) {
    return true;
  }
}

/// In a catch block: what the caller of env's message is told, a DecodeError
/// (as_decode_error). But a std::bad_alloc is rethrown if memory is short and
/// the message (inline bytes and blocks) is no larger than kWaitForMemoryUpTo:
/// the engine reads it again later (InboundHandler::on_envelope), for at most
/// memory_patience(); a larger one may never fit. (The archive refuses
/// containers larger than their message before allocating them: a small
/// message's decode needs little, unless a user type asks for more, which
/// memory_is_short tells apart.)
std::exception_ptr decode_failure(const Envelope& env) {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    if (env.payload_size + env.segment_bytes <= kWaitForMemoryUpTo && memory_is_short(env)) throw;
  } catch (...) {
  }
  return as_decode_error(std::current_exception());
}

void check_complete(const WireInputArchive& ar) {
  if (!ar.complete()) throw DecodeError("troupe: message has bytes or segments its type does not read");
}

}  // namespace

/// Calls of one frame to one actor, in order: their payloads copied in, decoded
/// and run one after the other inside one turn of the actor (plain methods
/// only: none of them can suspend the turn).
class CallBatch final : public Message {
 public:
  CallBatch(ReplySink& sink, NodeId from) : sink_(sink), from_(from) {}
  void add(const MethodEntry* m, std::uint64_t corr, const std::byte* payload, std::size_t size) {
    const bool in_line = inline_used_ + size <= kInlineBytes;
    std::size_t offset = 0;
    if (in_line) {
      offset = inline_used_;
      if (size != 0) std::memcpy(inline_bytes_ + inline_used_, payload, size);
      inline_used_ += size;
    } else {
      offset = spill_bytes_.size();
      spill_bytes_.append(payload, size);
    }
    if (count_ == 1) more_.reserve(kFirstSpill);  // a frame of tells brings hundreds
    // Written field by field where it lives (perf: an Entry built on the stack
    // and copied in stalled on store forwarding, 10 % of a receiving rank).
    Entry& e = count_ == 0 ? first_ : more_.emplace_back();
    e.method = m;
    e.corr = corr;
    e.offset = offset;
    e.size = size;
    e.in_line = in_line;
    ++count_;
    weight = static_cast<std::uint32_t>(count_);  // mailbox_size() counts each call
  }
  std::size_t size() const noexcept { return count_; }

  void run(ActorCell& cell) override {
    TROUPE_STAGE(batch_runs);
    for (std::size_t i = 0; i < count_; ++i) {
      if (cell.exited()) return reject_from(cell, i);  // like the rest of a mailbox
      if (i != 0) cell.calls_started(1);  // the first was counted when the batch was taken out
      const Entry& e = entry(i);
      try {
        e.method->run_bytes(bytes_of(e), e.size, RemoteCaller{&sink_, from_, e.corr}, cell);
      } catch (...) {
        fail(cell, e, as_decode_error(std::current_exception()));
      }
    }
  }
  void reject(ActorCell& cell) noexcept override { reject_from(cell, 0); }

 private:
  struct Entry {
    const MethodEntry* method;
    std::uint64_t corr;
    std::size_t offset, size;
    bool in_line;
  };
  // A lone call (an ask, say) allocates nothing beyond the batch itself.
  static constexpr std::size_t kInlineBytes = 64;
  static constexpr std::size_t kFirstSpill = 32;

  const Entry& entry(std::size_t i) const noexcept { return i == 0 ? first_ : more_[i - 1]; }
  const std::byte* bytes_of(const Entry& e) const noexcept {
    return e.in_line ? inline_bytes_ + e.offset : spill_bytes_.data() + e.offset;
  }
  void fail(ActorCell& cell, const Entry& e, std::exception_ptr err) noexcept {
    try {
      if (e.corr != 0) {
        sink_.reply_error(from_, e.corr, err);
      } else {
        cell.core().on_unhandled(cell.id(), "a tell from another node", err);
      }
    } catch (...) {
    }
  }
  void reject_from(ActorCell& cell, std::size_t first) noexcept {
    if (count_ > std::max<std::size_t>(first, 1)) cell.calls_started(count_ - std::max<std::size_t>(first, 1));
    for (std::size_t i = first; i < count_; ++i)
      if (entry(i).corr != 0) {
        try {
          sink_.reply_error(from_, entry(i).corr, actor_exited(cell.node(), cell.id()));
        } catch (...) {
        }
      }
  }

  ReplySink& sink_;
  NodeId from_;
  std::size_t count_ = 0;
  Entry first_{};
  std::vector<Entry> more_;
  std::size_t inline_used_ = 0;
  std::byte inline_bytes_[kInlineBytes];
  ByteBuffer spill_bytes_;
};

namespace {

/// A reply decoded in place: completes its ask at delivery (one object, where
/// a general delivery record with two closures and a shared owner took four).
class ReplyInbound final : public Inbound {
 public:
  ReplyInbound(Cluster& cluster, NodeId from) : cluster_(cluster), from_(from) {}
  void set_reply(std::unique_ptr<PendingReply> reply) noexcept { reply_ = std::move(reply); }
  void deliver() override {
    cluster_.count_delivered(from_);
    reply_->complete();
  }
  void abandon() noexcept override { reply_->fail(connection_lost(from_)); }
  void reject(std::exception_ptr why) override {
    cluster_.count_delivered(from_);
    reply_->fail(why);
  }

 private:
  Cluster& cluster_;
  NodeId from_;
  std::unique_ptr<PendingReply> reply_;
};

}  // namespace

// ---- receiving --------------------------------------------------------------

std::unique_ptr<Inbound> RemoteNode::on_envelope(NodeId from, Envelope& env) {
  frame_clock_ = std::max(frame_clock_, env.clock);  // merged in on_frame_done, before any delivery
  if (env.kind != Kind::call) open_batch_ = nullptr;  // order: nothing joins a batch across it
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
      const bool work = (env.flags & kFlagWork) != 0;
      if (!env.segment_sizes.empty()) {
        // No control message of ours has blocks (the engine drains them).
        // Counted if its sender counted it, or finish() would wait forever.
        return at_delivery([this, from, type = env.id, work] {
          std::fprintf(stderr, "troupe: node %u: dropping a control message (type %llu) from node %u: it has blocks\n",
                       engine_->self(), static_cast<unsigned long long>(type), from);
          if (work) cluster_->count_delivered(from);
        });
      }
      auto payload = std::make_shared<ByteBuffer>();
      payload->append(env.payload, env.payload_size);
      return at_delivery([this, from, payload, type = env.id, work] {
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
  // An unknown kind from a newer build: tell its sender if it asks (kFlagAsk;
  // its number may be anything else), count it if it was work.
  auto err = std::make_exception_ptr(UnknownType("troupe: unknown envelope kind " +
                                                 std::to_string(static_cast<int>(env.kind))));
  const bool asks = (env.flags & kFlagAsk) != 0;
  return at_delivery([this, from, corr = asks ? env.corr : 0, work = counts_as_work(env.kind), err] {
    if (work) cluster_->count_delivered(from);
    if (corr != 0) reply_error(from, corr, err);
  });
}

std::unique_ptr<Inbound> RemoteNode::on_call(NodeId from, Envelope& env) {
  TROUPE_STAGE(on_call);
  const auto corr = env.corr;
  // `keep`, the actor found, is let go of at delivery, outside the engine
  // lock: it may be the last reference (the actor exited meanwhile), and a
  // cell that goes destroys its queued messages, whose promises may run
  // continuations.
  auto refuse = [&](std::exception_ptr e, std::shared_ptr<ActorCell> keep = nullptr) {
    return at_delivery([this, from, corr, target = env.target, e, keep = std::move(keep)] {
      cluster_->count_delivered(from);
      if (corr != 0) {
        reply_error(from, corr, e);
      } else if (e) {
        core_.on_unhandled(target, "a tell from another node", e);
      }
    });
  };
  const MethodEntry* m = frame_method_ != nullptr && frame_method_->id == env.id ? frame_method_
                                                                                 : WireRegistry::instance().method(env.id);
  const bool batchable = m != nullptr && m->plain && env.segment_sizes.empty() && !(env.flags & kFlagNamed);
  if (batchable && open_batch_ != nullptr && open_target_ == env.target && open_from_ == from && m->cls == open_type_) {
    // The next call of a run to one actor: joins its batch (the engine keeps
    // this envelope's place with an empty record).
    frame_method_ = m;
    open_batch_->add(m, corr, env.payload, env.payload_size);
    return nullptr;
  }
  open_batch_ = nullptr;
  if (m == nullptr)
    return refuse(std::make_exception_ptr(UnknownType("troupe: node " + std::to_string(engine_->self()) +
                                                      " does not know method id " + std::to_string(env.id) +
                                                      " (not registered with TROUPE_REMOTE in its build?)")));
  std::shared_ptr<ActorCell> cell;
  if (env.flags & kFlagNamed) {
    // The payload starts with the name; the arguments follow it.
    std::string name;
    try {
      WireInputArchive ar(env.payload, env.payload_size, WireInputArchive::InlineBlocks{});  // (never a block)
      ar(name);
      env.payload += ar.position();
      env.payload_size -= ar.position();
    } catch (...) {
      return refuse(decode_failure(env));
    }
    cell = core_.find_local(name);
    if (!cell)
      return refuse(std::make_exception_ptr(NameNotFound("troupe: no actor is registered as '" + name + "' on node " +
                                                         std::to_string(engine_->self()))));
  } else {
    cell = core_.find_cell(env.target);
    TROUPE_STAGE(actor_found);
    // A tell to an exited actor is dropped, as a local one is (ActorRef::tell);
    // an ask learns why.
    if (!cell) return refuse(corr != 0 ? std::make_exception_ptr(ActorExited(engine_->self(), env.target)) : nullptr);
  }
  frame_method_ = m;
  if (cell->type() != m->cls) {
    auto e = std::make_exception_ptr(UnknownType("troupe: " + m->name + " called on an actor of class " +
                                                 cell->type()->debug_name));
    return refuse(std::move(e), std::move(cell));  // e made first: arguments are made in no set order
  }
  const RemoteCaller caller{this, from, corr};
  if (batchable) {
    auto batch = std::make_unique<CallBatch>(*this, from);
    batch->add(m, corr, env.payload, env.payload_size);
    CallBatch* open = batch.get();
    auto in = std::make_unique<CallInbound>(*cluster_, from, std::move(cell), std::move(batch));
    // Open only once its record owns it: if that allocation throws, the
    // batch is gone and must not be joined.
    open_batch_ = open;
    open_target_ = env.target;
    open_from_ = from;
    open_type_ = m->cls;
    TROUPE_STAGE(inbound_made);
    return in;
  }
  if (env.segment_sizes.empty() || m->args_zero_copy) {
    try {
      WireInputArchive ar(env.payload, env.payload_size, env.segment_sizes.data(), env.segment_sizes.size());
      DecodingScope scope(&core_);
      auto msg = m->decode_call(ar, caller);
      check_complete(ar);
      auto in = std::make_unique<CallInbound>(*cluster_, from, std::move(cell), std::move(msg), caller);
      in->segments = std::move(ar.destinations());
      return in;
    } catch (...) {
      auto e = decode_failure(env);
      return refuse(std::move(e), std::move(cell));
    }
  }
  try {
    return std::make_unique<BufferedInbound>(
        core_, *cluster_, from, env,
        [m, cell, caller](WireInputArchive& ar) {
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
  } catch (const std::bad_alloc&) {
    auto e = decode_failure(env);
    return refuse(std::move(e), std::move(cell));
  }
}

void RemoteNode::on_frame_done() noexcept {
  if (frame_clock_ != 0) core_.clock().merge(HlcTimestamp{std::exchange(frame_clock_, 0)});
  frame_method_ = nullptr;
  open_batch_ = nullptr;
}

std::unique_ptr<Inbound> RemoteNode::failed_reply(NodeId from, std::unique_ptr<PendingReply>& reply,
                                                  std::exception_ptr err) {
  auto r = std::make_shared<std::unique_ptr<PendingReply>>();
  auto in = at_delivery(
      [this, from, r, err] {
        cluster_->count_delivered(from);
        (*r)->fail(err);
      },
      [r, from] { (*r)->fail(connection_lost(from)); });
  *r = std::move(reply);  // nothing throws past the allocations
  return in;
}

std::unique_ptr<Inbound> RemoteNode::on_reply(NodeId from, Envelope& env) {
  TROUPE_STAGE(on_reply);
  auto node = take_node(env.corr, from);
  if (node.empty()) {
    // Late (the node was declared lost meanwhile), or not from the node the
    // ask went to (a faulty peer): that ask is left alone.
    const NodeId asked = asked_of(env.corr);
    if (asked != kInvalidNode)
      std::fprintf(stderr, "troupe: node %u: a reply from node %u to an ask sent to node %u was ignored\n",
                   engine_->self(), from, asked);
    return at_delivery([this, from] { cluster_->count_delivered(from); });
  }
  try {
    auto in = reply_inbound(from, env, node.mapped().reply);
    reply_node_ = std::move(node);  // to the spares at the next reply's take_node: one lock a reply
    return in;
  } catch (const std::bad_alloc&) {
    // The reply was not taken: back to its place, and the engine reads the
    // envelope again later (InboundHandler::on_envelope).
    put_back(std::move(node));
    throw;
  }
}

std::unique_ptr<Inbound> RemoteNode::reply_inbound(NodeId from, Envelope& env, std::unique_ptr<PendingReply>& reply) {
  if (env.kind == Kind::reply_ok && (env.segment_sizes.empty() || reply->zero_copy())) {
    // The common case: decoded now, into the ask's own result. (Decoded
    // again if memory runs out below and the envelope is read again.)
    auto in = std::make_unique<ReplyInbound>(*cluster_, from);
    try {
      // Plain numbers, or nothing, are read without an archive.
      if (env.segment_sizes.empty() && reply->decode_bytes(env.payload, env.payload_size)) {
        in->set_reply(std::move(reply));
        return in;
      }
      WireInputArchive ar(env.payload, env.payload_size, env.segment_sizes.data(), env.segment_sizes.size());
      DecodingScope scope(&core_);
      reply->decode(ar);
      check_complete(ar);
      in->segments = std::move(ar.destinations());
      in->set_reply(std::move(reply));
      return in;
    } catch (...) {
      return failed_reply(from, reply, decode_failure(env));
    }
  }
  if (env.kind == Kind::reply_error) {
    std::exception_ptr err;
    try {
      WireInputArchive ar(env.payload, env.payload_size, WireInputArchive::InlineBlocks{});
      WireError w;
      ar(w);
      err = w.to_exception(from);
    } catch (...) {
      err = decode_failure(env);
    }
    return failed_reply(from, reply, err);
  }
  // A reply whose blocks must arrive before it can be decoded.
  auto r = std::make_shared<std::unique_ptr<PendingReply>>();
  std::unique_ptr<Inbound> in;
  try {
    in = std::make_unique<BufferedInbound>(
        core_, *cluster_, from, env,
        [r](WireInputArchive& ar) {
          (*r)->decode(ar);
          check_complete(ar);
          (*r)->complete();
        },
        [r](std::exception_ptr e) { (*r)->fail(e); });
  } catch (const std::bad_alloc&) {
    return failed_reply(from, reply, decode_failure(env));
  }
  *r = std::move(reply);
  return in;
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
    WireInputArchive ar(env.payload, env.payload_size, WireInputArchive::InlineBlocks{});
    if (!env.segment_sizes.empty()) throw DecodeError("troupe: spawn arguments never carry segments");
    DecodingScope scope(&core_);
    job = c->decode_init(ar);
    check_complete(ar);
  } catch (...) {
    return refuse(decode_failure(env));
  }
  return at_delivery([this, from, corr, job] {
    cluster_->count_delivered(from);
    // The constructor runs on a worker, not on the engine. The asker is
    // answered even if that task finds no memory (a retry while it is short)
    // or the runtime is going.
    bool posted = false;
    if (!retry_while_short(from, [&] {
          posted = core_.post([this, from, corr, job] {
            try {
              const ActorId id = job->spawn(rt_);
              reply_bytes(from, corr, &id, sizeof id);  // what ValueWriter<ActorId> writes
            } catch (...) {
              reply_error(from, corr, std::current_exception());
            }
          });
        })) {
      return reply_error(from, corr, kNoMemory);
    }
    if (!posted)
      reply_error(from, corr, error_or(kNoMemory, [&] {
                    return std::make_exception_ptr(Error("troupe: node " + std::to_string(engine_->self()) +
                                                         " is shutting down: no actor spawned"));
                  }));
  });
}

std::unique_ptr<Inbound> RemoteNode::on_notice(NodeId from, Envelope& env) {
  const auto kind = env.kind;
  const auto target = env.target;
  const auto corr = env.corr;
  const auto id = env.id;
  std::string name;
  // Only a mailbox query is an ask: the correlation id of any other notice
  // is a watch's token (a monitor's, the watcher's; an exit notice's, ours),
  // and an error reply to it would end whichever ask of that number its
  // receiver has. Watches go by id only: a named one, readable or not, ends
  // with the unknown reason, as an unreadable notice does.
  auto end_watch = [this, from, kind, target, corr] {
    if (corr == 0) return;
    if (kind == Kind::monitor) send_exit_notice(from, target, corr, ExitReason::unknown);
    if (kind == Kind::exit_notice) fire_watch(from, corr, ExitReason::unknown);
  };
  if (env.flags & kFlagNamed) {
    try {
      WireInputArchive ar(env.payload, env.payload_size, WireInputArchive::InlineBlocks{});
      ar(name);
    } catch (...) {
      auto err = decode_failure(env);
      return at_delivery([this, from, kind, corr, err, end_watch] {
        cluster_->count_delivered(from);
        if (kind == Kind::mailbox && corr != 0) return reply_error(from, corr, err);
        end_watch();
      });
    }
  }
  return at_delivery([this, from, kind, target, corr, id, name = std::move(name), end_watch] {
    cluster_->count_delivered(from);
    if (!name.empty() && kind != Kind::demonitor) {  // (a watch's end goes by its token alone)
      if (kind == Kind::monitor || kind == Kind::exit_notice) return end_watch();
      if (kind == Kind::mailbox) {
        auto cell = core_.find_local(name);
        if (!cell)
          return reply_error(from, corr, error_or(kNoMemory, [&] {
                               return std::make_exception_ptr(NameNotFound("troupe: no actor is registered as '" +
                                                                           name + "' on node " +
                                                                           std::to_string(engine_->self())));
                             }));
        const std::size_t n = cell->mailbox_size();
        reply_bytes(from, corr, &n, sizeof n);  // what ValueWriter<std::size_t> writes
      }
      return;
    }
    switch (kind) {
      case Kind::stop:
        if (auto cell = core_.find_cell(target)) {
          // Short of memory, tried again for the patience, whether or not its
          // sender still lives (nobody waits for an answer); one that never
          // finds memory is said, not lost in silence.
          if (!retry_while_short_of_memory([&] { cell->request_stop(); },
                                           [&] { return !closed_.load(std::memory_order_acquire); }))
            std::fprintf(stderr, "troupe: node %u: node %u's stop of actor %llu was given up (no memory)\n",
                         engine_->self(), from, static_cast<unsigned long long>(target));
        }
        break;
      case Kind::mailbox: {
        auto cell = core_.find_cell(target);
        if (!cell)
          return reply_error(from, corr, error_or(kNoMemory, [&] {
                               return std::make_exception_ptr(ActorExited(engine_->self(), target));
                             }));
        const std::size_t n = cell->mailbox_size();
        reply_bytes(from, corr, &n, sizeof n);
        break;
      }
      case Kind::monitor: {
        auto cell = core_.find_cell(target);
        if (!cell) return send_exit_notice(from, target, corr, ExitReason::stopped);
        const bool added = retry_while_short(from, [&] {
          std::lock_guard lk(watch_mu_);
          // A watcher lost since it asked: node_lost() has swept its watches
          // (under this lock, after it left the live set); none is added back.
          if (!cluster_->alive(from)) return;
          // Its place first, then the watch: if either finds no memory, neither is left.
          auto [at, fresh] = watched_.try_emplace({from, corr}, target, 0);
          try {
            at->second.second = cell->add_monitor([this, from, target, corr](const ExitInfo& info) {
              {
                std::lock_guard lk2(watch_mu_);
                watched_.erase({from, corr});
              }
              send_exit_notice(from, target, corr, info.reason);
            });
          } catch (...) {
            if (fresh) watched_.erase(at);
            throw;
          }
        });
        // Never added (no memory for long): the watch ends, as an unreadable
        // one does, rather than never.
        if (!added && cluster_->alive(from)) send_exit_notice(from, target, corr, ExitReason::unknown);
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
      case Kind::exit_notice:
        fire_watch(from, corr, id <= static_cast<std::uint64_t>(ExitReason::unknown) ? static_cast<ExitReason>(id)
                                                                                      : ExitReason::unknown);
        break;
      default:
        break;
    }
  });
}

void RemoteNode::on_bad_envelope(NodeId from, const EnvelopeFault& fault) {
  std::fprintf(stderr, "troupe: node %u: bad envelope from node %u: %s\n", engine_->self(), from, fault.what.c_str());
  if (!fault.have_prefix) return;
  // The sender counted it as work: count it too, or finish() would wait forever.
  if (counts_as_work(fault.kind) || (fault.flags & kFlagWork) != 0) cluster_->count_delivered(from);
  const bool replies = fault.kind == Kind::reply_ok || fault.kind == Kind::reply_error;
  const bool asks = asks_for_reply(fault.kind) || ((fault.flags & kFlagAsk) != 0 && !replies);
  if (asks && fault.corr != 0) reply_error(from, fault.corr, std::make_exception_ptr(DecodeError(fault.what)));
  // A reply that cannot be read (another protocol version, say) still ends
  // its ask: with the reason, rather than never.
  if (replies && fault.corr != 0)
    if (auto r = take(fault.corr, from)) r->fail(std::make_exception_ptr(DecodeError(fault.what)));
  // Nor does a monitor wait for ever on a notice, or on a watch request, that
  // cannot be read: it ends with an unknown reason.
  if (fault.kind == Kind::exit_notice && fault.corr != 0) fire_watch(from, fault.corr, ExitReason::unknown);
  if (fault.kind == Kind::monitor && fault.corr != 0) send_exit_notice(from, 0, fault.corr, ExitReason::unknown);
}

}  // namespace troupe::detail
