// RemoteNode, membership: who is who at start-up (host names, roles, role
// communicators), and nodes that join later (Runtime::add_nodes: MPI_Comm_spawn
// over the live nodes, merged into the cluster).
#include "remote_node.hpp"

#include <cereal/details/helpers.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>

#include "troupe/runtime.hpp"
#include "core/scheduler.hpp"
#include "gather_text.hpp"
#include "remote_waiter.hpp"
#include "wire_error.hpp"


namespace troupe::detail {

namespace {

struct JoinInfo {
  std::uint64_t total = 0;
  std::vector<NodeId> node_of_rank;  // in the merged communicator
  std::vector<std::string> roles, hosts;
  std::vector<std::uint8_t> alive;
  std::uint64_t capacity = 0;  // the most nodes the job may hold (the same on every node)
  // The members' failure detector settings, which the newcomers take: a node
  // watched with a shorter timeout than its watcher's own, or watching with
  // one, would call slow ranks lost (or real losses late) at random.
  std::int64_t heartbeat_period_ms = 0;
  std::int64_t heartbeat_timeout_ms = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(total, node_of_rank, roles, hosts, alive, capacity, heartbeat_period_ms, heartbeat_timeout_ms);
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
    WireInputArchive ar(buf.data(), buf.size(), WireInputArchive::InlineBlocks{});
    ar(info);
  }
}

/// Host and role of every rank of comm, gathered (at start-up and when nodes
/// join; no rank can be lost yet), each "host\0role" whole, of any length.
std::vector<std::pair<std::string, std::string>> gather_hosts(MPI_Comm comm, const std::string& role) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::string mine(host);
  mine.push_back('\0');
  mine += role;
  const auto all = allgather_text(comm, mine);
  if (all.empty()) throw Error("troupe: the nodes' host names and roles are too long to gather (over 2 GB together)");
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string_view rec : all) {
    const auto cut = std::min(rec.find('\0'), rec.size());
    out.emplace_back(std::string(rec.substr(0, cut)), std::string(rec.substr(std::min(cut + 1, rec.size()))));
  }
  return out;
}

}  // namespace

bool started_by_add_nodes() {
  std::FILE* f = std::fopen("/proc/self/cmdline", "rb");
  if (f == nullptr) return false;
  std::string all;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) all.append(buf, n);
  std::fclose(f);
  // NUL-separated arguments; the program's name (the first) is not one.
  const std::string_view args(all);
  for (std::size_t at = args.find('\0'); at != std::string_view::npos && at + 1 < args.size();) {
    const std::size_t end = args.find('\0', at + 1);
    if (args.substr(at + 1, end == std::string_view::npos ? std::string_view::npos : end - at - 1) == kJoinerArg)
      return true;
    at = end;
  }
  return false;
}

MPI_Comm comm_of_ranks(MPI_Comm base, const std::vector<int>& ranks, int tag) {
  MPI_Group all = MPI_GROUP_NULL, some = MPI_GROUP_NULL;
  MPI_Comm_group(base, &all);
  MPI_Group_incl(all, static_cast<int>(ranks.size()), ranks.data(), &some);
  MPI_Comm out = MPI_COMM_NULL;
  MPI_Comm_create_group(base, some, tag, &out);
  MPI_Group_free(&some);
  MPI_Group_free(&all);
  return out;
}

RemoteNode::RemoteNode(Runtime& rt, Core& core, MPI_Comm comm, bool owns_mpi)
    : rt_(rt), core_(core), owns_mpi_(owns_mpi) {
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  if (parent != MPI_COMM_NULL && started_by_add_nodes()) {
    join_from_parent(parent);
    return;
  }
  engine_ = std::make_unique<Engine>(comm, *this);
  core_.set_node(engine_->self());
  MPI_Comm_dup(comm, &membership_comm_);
  owned_comms_.push_back(membership_comm_);
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
  note_neighbours(nodes);
  cluster_ = std::make_unique<Cluster>(core_, *engine_, std::move(nodes));
  cluster_->on_lost([this](NodeId lost) { node_lost(lost); });

  start_services();
}

void RemoteNode::join_from_parent(MPI_Comm parent) {
  joined_ = true;
  MPI_Comm merged = MPI_COMM_NULL;
  MPI_Intercomm_merge(parent, 1, &merged);  // the parents take the low ranks
  JoinInfo info;
  bcast_join_info(info, merged, false);
  if (info.heartbeat_period_ms > 0 && info.heartbeat_timeout_ms > 0)
    core_.adopt_heartbeat(std::chrono::milliseconds(info.heartbeat_period_ms),
                          std::chrono::milliseconds(info.heartbeat_timeout_ms));
  int rank = 0;
  MPI_Comm_rank(merged, &rank);
  const NodeId self = info.node_of_rank.at(static_cast<std::size_t>(rank));
  int parents = 0;  // they take the merged communicator's low ranks; the batch the rest
  MPI_Comm_remote_size(parent, &parents);
  for (std::size_t r = static_cast<std::size_t>(parents); r < info.node_of_rank.size(); ++r)
    first_of_batch_ = std::min(first_of_batch_, info.node_of_rank[r]);
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
  engine_ = std::make_unique<Engine>(merged, *this, self, info.total, info.node_of_rank, info.capacity);
  core_.set_node(self);
  membership_comm_ = merged;
  owned_comms_.push_back(merged);
  membership_nodes_ = info.node_of_rank;
  note_neighbours(nodes);
  cluster_ = std::make_unique<Cluster>(core_, *engine_, std::move(nodes), info.capacity);
  cluster_->on_lost([this](NodeId lost) { node_lost(lost); });
  spawns_.push_back(Spawn{parent, MPI_COMM_NULL, cluster_->lost_set().size()});
  start_services();
}

void RemoteNode::note_neighbours(const std::vector<NodeInfo>& nodes) {
  const bool stage = stage_blocks_wanted(core_.config().stage_blocks);
  const bool gather = huge_pages_wanted() && gather_blocks_wanted();
  const NodeId self = engine_->self();
  const auto me = std::find_if(nodes.begin(), nodes.end(), [&](const NodeInfo& n) { return n.id == self; });
  if (me == nodes.end()) return;
  for (const auto& n : nodes) {
    if (n.id == self) continue;
    const bool neighbour = !me->host.empty() && n.host == me->host;
    engine_->set_gather_blocks(n.id, gather && neighbour);
    engine_->set_stage_blocks(n.id, stage && neighbour);
  }
}

std::vector<NodeId> RemoteNode::add_nodes(int count, const std::vector<std::string>& args) {
  if (count <= 0) return {};
  std::lock_guard lk(membership_mu_);
  if (closed_.load(std::memory_order_acquire)) throw Error("troupe: add_nodes() after finish()");
  // Refused before anything collective, by every member alike (they agree on
  // the size and the capacity): spawned first, the newcomers would find no
  // room on some members and join on others.
  if (cluster_->size() + static_cast<std::size_t>(count) > cluster_->capacity())
    throw Error("troupe: add_nodes(" + std::to_string(count) + "): this job has room for " +
                std::to_string(cluster_->capacity() - cluster_->size()) + " more nodes");
  // The live members, in the membership communicator's order.
  std::vector<int> live_ranks;
  std::vector<NodeId> live_nodes;
  for (std::size_t r = 0; r < membership_nodes_.size(); ++r) {
    if (!cluster_->alive(membership_nodes_[r])) continue;
    live_ranks.push_back(static_cast<int>(r));
    live_nodes.push_back(membership_nodes_[r]);
  }
  // Collective over the live members only: the dead are not asked.
  MPI_Comm live = comm_of_ranks(membership_comm_, live_ranks, /*tag=*/0x7e20);
  struct FreedAtTheEnd {  // whatever happens below
    MPI_Comm& comm;
    ~FreedAtTheEnd() {
      if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
    }
  } live_freed{live};

  char exe[4096] = {};
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) throw Error("troupe: add_nodes cannot find this program's path");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(const_cast<char*>(kJoinerArg));  // join us (not: start a cluster of your own)
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
  info.capacity = cluster_->capacity();
  info.heartbeat_period_ms = core_.config().heartbeat_period.count();
  info.heartbeat_timeout_ms = core_.config().heartbeat_timeout.count();
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
  // The engine's collective step first (it waits for every member and the
  // newcomers); then the cluster, so that once the engine hears the newcomers
  // their messages find them alive; then the engine, at once. What is sent
  // to them in between (counted as work: the cluster says they are alive)
  // waits in the engine until then.
  // Room for the engine's step is made before the cluster's: once the
  // cluster counts the newcomers alive, what is sent to them waits in the
  // engine for its join, which must then not fail.
  MPI_Comm dup = Engine::duplicate_for_nodes(merged);
  std::vector<NodeId> ranks = info.node_of_rank;
  engine_->reserve_join(info.total);
  cluster_->add_nodes(all);
  note_neighbours(all);
  engine_->add_nodes(dup, std::move(ranks), info.total);
  cluster_->nodes_added(fresh);
  spawns_.push_back(Spawn{inter, merged, cluster_->lost_set().size()});
  membership_comm_ = merged;  // the previous ones stay allocated: MPI may still use them
  membership_nodes_ = info.node_of_rank;
  return fresh;
}

}  // namespace troupe::detail
