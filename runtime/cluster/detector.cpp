#include "detector.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

namespace troupe::detail {

FailureDetector::FailureDetector(DetectorSite& cluster, std::chrono::milliseconds period,
                                 std::chrono::milliseconds timeout, std::unique_ptr<PmixProbe> probe)
    : cluster_(cluster),
      period_(period),
      timeout_(timeout),
      next_beat_(Clock::now()),
      watching_(kInvalidNode),
      watch_since_(Clock::now()),
      probe_(std::move(probe)),
      next_probe_(Clock::now()) {}

NodeId FailureDetector::successor() const {
  const NodeId self = cluster_.self();
  const NodeId n = static_cast<NodeId>(cluster_.size());
  for (NodeId k = 1; k < n; ++k) {
    NodeId c = (self + k) % n;
    if (cluster_.alive(c)) return c;
  }
  return self;
}

NodeId FailureDetector::predecessor() const {
  const NodeId self = cluster_.self();
  const NodeId n = static_cast<NodeId>(cluster_.size());
  for (NodeId k = 1; k < n; ++k) {
    NodeId c = (self + n - k) % n;
    if (cluster_.alive(c)) return c;
  }
  return self;
}

void FailureDetector::tick(Clock::time_point now) {
  NodeId beat_to = kInvalidNode, suspect = kInvalidNode;
  Clock::time_point suspect_heard;
  {
    std::lock_guard lk(mu_);
    if (now >= next_beat_) {
      next_beat_ = now + period_;
      beat_to = successor();
    }
    const NodeId p = predecessor();
    if (p != cluster_.self()) {
      if (p != watching_) {  // a new predecessor gets a fresh grace period
        watching_ = p;
        watch_since_ = now;
      }
      suspect_heard = cluster_.last_heard(p);
      if (now - std::max(suspect_heard, watch_since_) > timeout_) suspect = p;
    }
  }
  if (beat_to != kInvalidNode && beat_to != cluster_.self()) cluster_.send_heartbeat(beat_to);
  // Faster evidence: the launcher saw our predecessor's process end. Only the
  // watcher acts on it, so one death starts one broadcast.
  if (probe_ && probe_->available() && now >= next_probe_) {
    next_probe_ = now + std::chrono::milliseconds(50);
    const NodeId p = predecessor();
    for (NodeId dead : probe_->dead_local_nodes()) {
      if (dead == p && cluster_.alive(p)) {
        cluster_.confirm_lost(p, "the launcher reports its process ended");
        return;
      }
    }
  }
  // Last check: something from it waiting to be received means it is alive
  // (we were the slow one). So does a frame of it another thread took since
  // we looked (a thread waiting on a future drives the engine too): taken
  // before heard_pending() took the engine, it shows in last_heard now.
  if (suspect != kInvalidNode && !cluster_.heard_pending(suspect, timeout_) &&
      cluster_.last_heard(suspect) <= suspect_heard)
    cluster_.confirm_lost(suspect, "silent for more than " + std::to_string(timeout_.count()) + " ms");
}

void FailureDetector::on_lost(NodeId n, Clock::time_point now) {
  std::lock_guard lk(mu_);
  if (n == watching_) {
    watching_ = kInvalidNode;  // re-chosen (with grace) on the next tick
    watch_since_ = now;
  }
}

std::vector<NodeId> FailureDetector::tree_children(const std::vector<NodeId>& live, NodeId root, NodeId self) {
  std::vector<NodeId> out;
  const auto m = live.size();
  auto r = std::find(live.begin(), live.end(), root);
  auto s = std::find(live.begin(), live.end(), self);
  if (r == live.end() || s == live.end()) return out;
  const std::size_t ri = static_cast<std::size_t>(r - live.begin());
  const std::size_t si = static_cast<std::size_t>(s - live.begin());
  const std::size_t i = (si + m - ri) % m;  // relative index
  for (std::size_t step = 1; step < m; step <<= 1) {
    if (step <= i) continue;  // children are at distances larger than ours
    if (i + step >= m) break;
    out.push_back(live[(ri + i + step) % m]);
  }
  return out;
}

}  // namespace troupe::detail
