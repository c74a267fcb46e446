#include "troupe/role.hpp"

#include "troupe/error.hpp"

#include <algorithm>

#include "remote/remote_node.hpp"
#include "troupe/runtime.hpp"

namespace troupe {

Role Runtime::role(const std::string& name) { return Role(*this, name); }

Groups Role::groups() const {
  if (name_.empty() || name_.find_first_of("\x1e\x1f") != std::string::npos)
    throw Error("troupe: role groups need a role name without control characters \\x1e, \\x1f");
  return Groups(rt_->names(), name_);
}

std::vector<NodeId> Role::nodes() const {
  std::vector<NodeId> out;
  for (auto& n : rt_->cluster().nodes())
    if (n.alive && n.role == name_) out.push_back(n.id);
  return out;
}

bool Role::contains(NodeId node) const {
  auto st = rt_->cluster();
  return st.alive(node) && st.node(node).role == name_;
}

MPI_Comm Role::comm() const {
  auto* node = dynamic_cast<detail::RemoteNode*>(rt_->core().remote());
  if (node == nullptr || rt_->config().role != name_) return MPI_COMM_NULL;
  return node->role_comm();
}

MPI_Comm Role::live_comm() const {
  MPI_Comm base = comm();
  if (base == MPI_COMM_NULL) return MPI_COMM_NULL;
  // Ranks of the role communicator are the members in node order (split key),
  // the nodes the job started with only: nodes joined later (higher ids, never
  // reused) are not in it.
  int members = 0;
  MPI_Comm_size(base, &members);
  std::vector<int> live_ranks;
  int rank_in_role = 0;
  for (auto& n : rt_->cluster().nodes()) {
    if (rank_in_role == members) break;
    if (n.role != name_) continue;
    if (n.alive) live_ranks.push_back(rank_in_role);
    ++rank_in_role;
  }
  return detail::comm_of_ranks(base, live_ranks, /*tag=*/0x7e10);
}

}  // namespace troupe
