// ClusterState: the nodes of the job as this node sees them.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "troupe/fwd.hpp"

namespace troupe {

struct NodeInfo {
  NodeId id = kInvalidNode;
  std::string role;
  std::string host;
  bool alive = true;
};

class ClusterState {
 public:
  ClusterState() = default;
  explicit ClusterState(std::vector<NodeInfo> nodes) : nodes_(std::move(nodes)) {}

  const std::vector<NodeInfo>& nodes() const& noexcept { return nodes_; }
  /// On a temporary (rt.cluster().nodes()), a copy: a reference would dangle.
  std::vector<NodeInfo> nodes() && { return std::move(nodes_); }
  std::size_t size() const noexcept { return nodes_.size(); }
  const NodeInfo& node(NodeId id) const { return nodes_.at(id); }
  bool alive(NodeId id) const noexcept { return id < nodes_.size() && nodes_[id].alive; }
  std::size_t alive_count() const noexcept {
    std::size_t n = 0;
    for (auto& i : nodes_) n += i.alive ? 1 : 0;
    return n;
  }
  /// Live nodes, sorted by id.
  std::vector<NodeId> alive_nodes() const {
    std::vector<NodeId> out;
    for (auto& i : nodes_)
      if (i.alive) out.push_back(i.id);
    return out;
  }

 private:
  std::vector<NodeInfo> nodes_;
};

}  // namespace troupe
