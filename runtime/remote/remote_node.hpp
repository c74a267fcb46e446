// RemoteNode: the distributed half of a runtime. Turns tells, asks, spawns,
// stops and monitors of actors on other nodes into envelopes, and envelopes from
// other nodes into messages for local actors, replies and notices.
#pragma once

#include <type_traits>
#include <mpi.h>

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>
#include <unordered_map>

#include "cluster/cluster.hpp"
#include "transport/engine.hpp"
#include "troupe/detail/core.hpp"
#include "troupe/wire/registry.hpp"

namespace troupe::detail {

class CallBatch;  // remote_receive.cpp

/// The argument add_nodes() appends to a new process's command line. A
/// process with an MPI parent joins the parent's cluster only if it carries
/// it: one that another program spawned with MPI_Comm_spawn starts a cluster
/// of its own. Runtime(argc, argv) takes it out of argv.
inline constexpr const char* kJoinerArg = "--troupe-joiner";

/// Whether this process's command line (/proc/self/cmdline) holds kJoinerArg.
bool started_by_add_nodes();

class RemoteNode final : public RemoteLink, public InboundHandler, public ReplySink {
 public:
  /// comm: the communicator whose ranks are the nodes (duplicated). A process
  /// started by add_nodes() (an MPI parent and kJoinerArg) joins the running
  /// job instead.
  RemoteNode(Runtime& rt, Core& core, MPI_Comm comm, bool owns_mpi);
  ~RemoteNode() override;

  Cluster& cluster() noexcept { return *cluster_; }
  /// This node's role communicator (made at start-up with MPI_Comm_split).
  MPI_Comm role_comm() const noexcept { return role_comm_; }
  Engine& engine() noexcept { return *engine_; }

  // RemoteLink
  std::size_t size() const override { return cluster_->size(); }
  void send_call(NodeId node, ActorId actor, std::unique_ptr<CallBase> call) override;
  void send_ask(NodeId node, ActorId actor, CallBase& call) override;
  void send_tell(NodeId node, ActorId actor, const CallBase& call) override;
  void stop(NodeId node, ActorId actor) override;
  std::uint64_t monitor(NodeId node, ActorId actor, MonitorFn fn) override;
  void demonitor(NodeId node, ActorId actor, std::uint64_t token) override;
  void mailbox_size(NodeId node, ActorId actor, Promise<std::size_t> p) override;
  void send_named(NodeId node, const std::string& name, std::unique_ptr<CallBase> call) override;
  void mailbox_size_named(NodeId node, const std::string& name, Promise<std::size_t> p) override;
  void spawn(NodeId node, const TypeTag* type, const void* init,
             UniqueFunction<void(ActorId, std::exception_ptr)> done) override;
  int finish() override;
  void leave() override;
  void finalize() override;
  void flush() override { engine_->flush(); }
  ClusterState cluster_state() const override { return cluster_->state(); }
  bool wait_cluster(const std::function<bool(const ClusterState&)>& pred, Clock::time_point deadline) override {
    return cluster_->wait(pred, deadline);
  }

  // ---- membership changes ----------------------------------------------------
  /// Collective over the live nodes: starts `count` processes of this program
  /// (MPI_Comm_spawn over the live nodes, then MPI_Intercomm_merge) that join
  /// as new nodes; returns their ids.
  std::vector<NodeId> add_nodes(int count, const std::vector<std::string>& args);
  bool joined_later() const noexcept { return joined_; }
  /// A node that joined later: the lowest id of the nodes that joined with it
  /// (they know no more than it does). kInvalidNode otherwise.
  NodeId first_of_batch() const noexcept { return first_of_batch_; }

  // ---- diagnostics and tests: hand-made bytes ------------------------------
  /// Asks (calls, spawns, queries) waiting for their reply. For tests.
  std::size_t pending_asks() {
    std::lock_guard lk(pending_mu_);
    return pending_.size();
  }
  /// Sends `payload` as an envelope of the given kind that expects a reply
  /// (version overrides the protocol version byte). The future holds the error
  /// the receiver reports, or completes if it answers at all. coalesce: it
  /// waits in its destination's open frame like a tell, for what follows.
  Future<void> raw_ask(NodeId to, Kind kind, std::uint64_t id, std::uint64_t target, const ByteBuffer& payload,
                       std::uint8_t version = kProtocolVersion, bool coalesce = false);
  /// The same with one block after the envelope, sent whole as one message
  /// but declared as `declared` bytes (more or fewer: a sender that breaks
  /// the protocol).
  Future<void> raw_ask_with_block(NodeId to, Kind kind, std::uint64_t id, std::uint64_t target,
                                  const ByteBuffer& payload, ByteBuffer block, std::size_t declared);
  /// A reply to `corr` whose one block is sent whole but declared as
  /// `declared` bytes (a replier that breaks the protocol).
  void raw_reply_with_block(NodeId to, std::uint64_t corr, const ByteBuffer& payload, ByteBuffer block,
                            std::size_t declared);
  /// A control message of type `id` with `flags` and one block (sent whole,
  /// declared as its size), counted as work if `work`: no sender of ours
  /// gives a control message a block.
  void raw_control_with_block(NodeId to, std::uint64_t id, std::uint32_t flags, const ByteBuffer& payload,
                              ByteBuffer block, bool work);
  /// Sends bytes as a frame, unchecked.
  void raw_frame(NodeId to, const ByteBuffer& bytes);
  /// Sends an envelope with no payload in the given protocol version: an
  /// empty reply_ok to `corr`, an exit_notice of watch `corr` with reason `id`...
  /// With `named`, flagged as addressed by name with those bytes as its payload.
  void raw_envelope_in(NodeId to, Kind kind, std::uint64_t corr, std::uint64_t target, std::uint64_t id,
                       std::uint8_t version, const ByteBuffer* named = nullptr);
  /// monitor() with its request sent in the given protocol version; with
  /// `named`, flagged as addressed by name with those bytes as its payload
  /// (watches go by id only).
  std::uint64_t raw_monitor(NodeId node, ActorId actor, MonitorFn fn, std::uint8_t version,
                            const ByteBuffer* named = nullptr) {
    return monitor_in(node, actor, std::move(fn), version, named);
  }
  /// The correlation id of the latest ask this node sent (or spawn, or raw ask).
  std::uint64_t last_corr() const noexcept { return next_corr_.load(std::memory_order_relaxed) - 1; }

  // InboundHandler
  std::unique_ptr<Inbound> on_envelope(NodeId from, Envelope& env) override;
  void on_bad_envelope(NodeId from, const EnvelopeFault& fault) override;

  // ReplySink
  void reply_value(NodeId to, std::uint64_t corr, std::unique_ptr<PayloadWriter> value) override;
  void reply_bytes(NodeId to, std::uint64_t corr, const void* data, std::size_t size) override;
  void reply_error(NodeId to, std::uint64_t corr, std::exception_ptr error) override;

 private:
  struct Pending {
    NodeId node;
    std::unique_ptr<PendingReply> reply;
  };
  std::uint64_t monitor_in(NodeId node, ActorId actor, MonitorFn fn, std::uint8_t version,
                           const ByteBuffer* named = nullptr);
  /// Ends watch `token` that this node keeps on an actor of node `from`, if
  /// it has one: its MonitorFn runs with `why`.
  void fire_watch(NodeId from, std::uint64_t token, ExitReason why);
  struct Watch {
    NodeId node;
    ActorId actor;
    MonitorFn fn;
  };

  /// A draft envelope with its header begun (thread-local storage: no allocation).
  Draft envelope(NodeId to, Kind kind, std::uint64_t corr, std::uint64_t target, std::uint64_t id,
                 std::uint32_t flags = 0);
  /// `owned` holds `call` when it lives on the heap (null for a call on the
  /// caller's stack, whose arguments are plain numbers: nothing points into it
  /// once encoded).
  void send_call_to(NodeId node, ActorId actor, const std::string* name, CallBase& call,
                    std::unique_ptr<CallBase> owned);
  /// The call's wire entry; null if it has none (the caller then learns why).
  const MethodEntry* method_for(const CallBase& call, NodeId node, ActorId actor);
  /// The call's envelope, sealed; null if encoding failed (the caller then learns why).
  Draft encode_call(NodeId node, ActorId actor, const std::string* name, std::uint64_t corr, const MethodEntry& m,
                    const CallBase& call);
  void seal(OutEnvelope& e);
  /// Blocks to `to` are gathered onto huge pages if it reads our pages, except
  /// those the engine stages for it (seal()'s rule).
  void set_gathering(WireOutputArchive& ar, NodeId to) const noexcept {
    ar.gather_blocks_on_huge_pages(engine_->gathers_blocks(to), engine_->stages_blocks(to) ? kStageUpTo : 0);
  }
  /// raw_ask and raw_ask_with_block: an optional block, sent whole, declared as `declared` bytes.
  Future<void> send_raw_ask(NodeId to, Kind kind, std::uint64_t id, std::uint64_t target, const ByteBuffer& payload,
                            std::uint8_t version, bool coalesce, std::shared_ptr<ByteBuffer> block,
                            std::size_t declared);
  /// The raw senders' envelope, sealed: `payload`, then `block` if any, never
  /// staged, declared as `declared` bytes but sent whole.
  Draft raw_envelope(NodeId to, Kind kind, std::uint64_t corr, std::uint64_t target, std::uint64_t id,
                     std::uint32_t flags, const ByteBuffer& payload, std::shared_ptr<ByteBuffer> block,
                     std::size_t declared);
  void post(Draft e);
  /// Posts what make() builds for the ask expecting reply corr; whatever
  /// throws on the way fails that ask instead of leaving its entry behind.
  template <class Make>
  void send_expected(std::uint64_t corr, Make&& make);
  /// Registers an ask's reply handler, unless the node is already lost.
  std::uint64_t expect(NodeId node, std::unique_ptr<PendingReply> reply);
  /// The reply handler of ask `corr`, if it is pending and (unless `from` is
  /// kInvalidNode) was sent to `from`: nobody else may end it.
  std::unique_ptr<PendingReply> take(std::uint64_t corr, NodeId from = kInvalidNode);
  using PendingNode = std::unordered_map<std::uint64_t, Pending>::node_type;
  /// on_reply's take(), under the engine lock: the table's node is kept, so
  /// that put_back() returns the reply to its place without allocating (when
  /// memory runs out), or it goes to reply_node_.
  PendingNode take_node(std::uint64_t corr, NodeId from);
  /// The node ask `corr` went to, if it is pending; kInvalidNode otherwise.
  NodeId asked_of(std::uint64_t corr);
  void put_back(PendingNode n) noexcept;
  /// The last reply's node, kept for the next ask without a lock of its own
  /// (it is on_reply's, under the engine lock): take_node hands it to the
  /// spares under the lock it takes anyway.
  PendingNode reply_node_;
  void node_lost(NodeId n);
  void send_exit_notice(NodeId watcher, ActorId actor, std::uint64_t token, ExitReason why);
  /// Runs `send`, which makes and posts what node `to` waits for (a reply,
  /// an exit notice): if it finds no memory, again every millisecond while
  /// `to` lives, for memory_patience() at most; then the message is given up,
  /// said on stderr. Never throws: it runs at the end of actors' turns and
  /// in deliveries, where nobody could take the exception.
  template <class Send>
  void send_owed(const char* what, NodeId to, std::uint64_t corr, Send&& send) noexcept;
  /// Runs `make` (what a delivery must do before it can answer node `to`: post
  /// a spawn's constructor, add a watch), again every millisecond while it
  /// throws std::bad_alloc and `to` lives, for memory_patience() at most. True
  /// once it ran whole; false if it never did. Other exceptions pass.
  template <class Make>
  bool retry_while_short(NodeId to, Make&& make) {
    return retry_while_short(
        to, [](void* m) { (*static_cast<std::remove_reference_t<Make>*>(m))(); },
        const_cast<void*>(static_cast<const void*>(&make)));
  }
  bool retry_while_short(NodeId to, void (*run)(void*), void* make);

  std::unique_ptr<Inbound> on_call(NodeId from, Envelope& env);
  void on_frame_done() noexcept override;
  void on_unreadable(NodeId) noexcept override { open_batch_ = nullptr; }
  // Consecutive plain calls of one frame to one actor, from one node, share a
  // mailbox message (CallBatch): one allocation, one enqueue and one turn for
  // all of them. Under the engine lock; the batch belongs to the engine's record
  // of its first call, which is not delivered before the frame ends. Anything
  // else read, and the end of the frame, close it.
  CallBatch* open_batch_ = nullptr;
  ActorId open_target_ = 0;
  NodeId open_from_ = 0;
  const TypeTag* open_type_ = nullptr;
  // The method of the last call read, reused by the next calls of the same
  // frame (a frame often holds many calls of one method). Under the engine
  // lock. (The target actor is looked up every time: a cached reference could
  // be the last one to an exited actor and free it under the engine lock.)
  const MethodEntry* frame_method_ = nullptr;
  // The latest clock of the frame being read, merged into this node's clock
  // once, when the frame is done: before anything of it is delivered, which
  // is all causality needs (one atomic update a frame instead of one an
  // envelope: perf put merge at 7 % of a receiving rank). Under the engine lock.
  std::uint64_t frame_clock_ = 0;
  std::unique_ptr<Inbound> on_reply(NodeId from, Envelope& env);
  /// What delivers a reply to `reply`'s ask. Takes `reply` only once nothing
  /// more can throw: a std::bad_alloc leaves it where it was.
  std::unique_ptr<Inbound> reply_inbound(NodeId from, Envelope& env, std::unique_ptr<PendingReply>& reply);
  /// Fails an ask at delivery (in order), or with ConnectionLost if its node
  /// is lost first. Takes `reply` only if it returns.
  std::unique_ptr<Inbound> failed_reply(NodeId from, std::unique_ptr<PendingReply>& reply, std::exception_ptr err);
  std::unique_ptr<Inbound> on_spawn(NodeId from, Envelope& env);
  std::unique_ptr<Inbound> on_notice(NodeId from, Envelope& env);

  Runtime& rt_;
  Core& core_;
  bool owns_mpi_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Cluster> cluster_;
  MPI_Comm role_comm_ = MPI_COMM_NULL;
  // Membership changes: a communicator holding exactly the members as of the
  // last change, and the node of each of its ranks.
  MPI_Comm membership_comm_ = MPI_COMM_NULL;
  std::vector<NodeId> membership_nodes_;
  // Communicators made here besides the engine's and the spawns': the
  // start's membership duplicate (or a joiner's merged one). Freed at
  // finalize(), with role_comm_, so that an application that adopted MPI
  // gets it back as it lent it.
  std::vector<MPI_Comm> owned_comms_;
  bool joined_ = false;
  NodeId first_of_batch_ = kInvalidNode;
  struct Spawn {
    MPI_Comm inter;   // the spawn's intercommunicator (the parent's, in a joiner)
    MPI_Comm merged;  // its merged intracommunicator
    // Nodes known lost when it was made: any loss after that may be one of
    // its members (a node joined by an earlier spawn, say), and then it
    // cannot be disconnected (collective over its members).
    std::size_t lost_at = 0;
  };
  std::vector<Spawn> spawns_;
  std::mutex membership_mu_;
  void join_from_parent(MPI_Comm parent);
  /// Marks the nodes on this node's host: blocks to them are gathered onto
  /// huge pages (Engine::set_gather_blocks), or staged if configured
  /// (set_stage_blocks; staging takes blocks up to 2 MiB, gathering larger ones).
  void note_neighbours(const std::vector<NodeInfo>& nodes);
  /// Once the cluster exists: futures drive the engine, the core routes remote
  /// calls here, the progress thread (and failure detection) starts.
  void start_services();
  std::atomic<bool> closed_{false};
  bool finalized_ = false;

  std::mutex pending_mu_;
  std::unordered_map<std::uint64_t, Pending> pending_;
  /// Nodes of answered asks, reused by the next ones: an ask and its reply
  /// allocate no table node (a few in hand; more asks in flight allocate).
  static constexpr std::size_t kSparePending = 8;
  std::array<std::unordered_map<std::uint64_t, Pending>::node_type, kSparePending> spare_pending_;
  std::size_t spare_count_ = 0;
  std::atomic<std::uint64_t> next_corr_{1};

  std::mutex watch_mu_;
  std::unordered_map<std::uint64_t, Watch> watches_;                               // I watch remote actors
  std::map<std::pair<NodeId, std::uint64_t>, std::pair<ActorId, std::uint64_t>> watched_;  // remote nodes watch mine

  class Waiter;
  std::unique_ptr<Waiter> waiter_;

  // While traffic flows, polling runs as a task on the scheduler's workers, so
  // a message and the actor turn it causes run on one thread, without waking
  // another; after a quiet spell the progress thread takes over again.
  void start_polling();
  void poll(Clock::time_point last_activity);
  void stop_polling() noexcept;
  std::atomic<bool> polling_{false};
};

/// A new communicator of the given ranks of base, made by them alone
/// (MPI_Comm_create_group: collective over those ranks only, so ranks left out,
/// such as lost ones, are never waited for).
MPI_Comm comm_of_ranks(MPI_Comm base, const std::vector<int>& ranks, int tag);

}  // namespace troupe::detail
