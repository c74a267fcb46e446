// FailureDetector: the heartbeat ring. Every node sends a heartbeat to its
// successor among the live nodes each period, and watches its predecessor: if
// nothing at all arrives from it within the timeout, the predecessor is
// declared lost. Per node that is one message sent and one received per
// period, whatever the size of the job. When the watched node is lost the
// detector watches the next live predecessor, after a fresh grace period.
//
// Failure news then spreads along a binomial tree rooted at the detecting node
// (O(log n) hops), and every heartbeat carries the sender's lost set, so a node
// the tree missed still learns it from its ring neighbour: all survivors end
// with the same lost set, and a node declared lost stays lost.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cluster/pmix_probe.hpp"
#include "troupe/fwd.hpp"

namespace troupe::detail {

/// What the detector reads of its cluster and asks of it (Cluster is one); an
/// interface, so that a test can play the cluster and its timing exactly.
class DetectorSite {
 public:
  virtual NodeId self() const noexcept = 0;
  virtual std::size_t size() const noexcept = 0;
  virtual bool alive(NodeId n) const noexcept = 0;
  /// When anything last came from n.
  virtual std::chrono::steady_clock::time_point last_heard(NodeId n) const = 0;
  /// Whether something from n waits to be received (a frame still coming
  /// counts for `patience`): n is alive, and this node was the slow one.
  virtual bool heard_pending(NodeId n, std::chrono::milliseconds patience) = 0;
  virtual void send_heartbeat(NodeId to) = 0;
  /// n is dead: declare it and spread the news (why: for the log).
  virtual void confirm_lost(NodeId n, const std::string& why) = 0;

 protected:
  ~DetectorSite() = default;
};

class FailureDetector {
 public:
  using Clock = std::chrono::steady_clock;
  /// probe: the launcher's process table, if available (may be null).
  FailureDetector(DetectorSite& cluster, std::chrono::milliseconds period, std::chrono::milliseconds timeout,
                  std::unique_ptr<PmixProbe> probe);

  /// Called every few milliseconds from the progress thread.
  void tick(Clock::time_point now);
  /// The cluster learnt that n is lost (from us or from news).
  void on_lost(NodeId n, Clock::time_point now);

  std::chrono::milliseconds period() const noexcept { return period_; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }

  /// The children of `self` in the binomial tree over `live` rooted at `root`.
  static std::vector<NodeId> tree_children(const std::vector<NodeId>& live, NodeId root, NodeId self);

 private:
  NodeId successor() const;
  NodeId predecessor() const;

  DetectorSite& cluster_;
  std::chrono::milliseconds period_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  Clock::time_point next_beat_;
  NodeId watching_;
  Clock::time_point watch_since_;  // grace: the predecessor is judged from here
  std::unique_ptr<PmixProbe> probe_;
  Clock::time_point next_probe_;
};

}  // namespace troupe::detail
