// The coordinator's side of finish()'s termination protocol: how it judges a
// wave of status reports. Kept apart from Cluster, which moves the messages,
// so that the judgement can be tested on its own (tests/unit/termination_test).
#pragma once

#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "troupe/fwd.hpp"

namespace troupe::detail {

/// What a node reports for a wave.
struct WorkStatus {
  bool in_finish = false;  ///< it called finish()
  bool idle = false;       ///< nothing being handled, nothing waiting to be
  std::uint64_t sent = 0;       ///< work messages it sent to nodes it holds alive
  std::uint64_t delivered = 0;  ///< work messages it handled from nodes it holds alive
  /// The losses it has finished handling (listeners run), as a digest of
  /// their nodes (loss_mark). A loss takes the lost node's counts out of the
  /// sums, so sums taken over different losses do not compare: all must agree
  /// within a wave, and two waves compare only with the same. Which losses,
  /// not how many: a node that took node 1 for lost, and not yet node 3,
  /// sums over other nodes than one that lost node 3 only. A loss under way
  /// (its node already out of the sums, the work its listeners make not yet
  /// counted) does not count yet.
  std::uint64_t lost = 0;
};

/// A lost node's share of WorkStatus::lost, which sums them (wrapping): the
/// same set of losses gives the same digest in any order, and different sets
/// differ but with a chance of 2^-64 or so (splitmix64 of the node's id).
constexpr std::uint64_t loss_mark(NodeId n) noexcept {
  std::uint64_t z = static_cast<std::uint64_t>(n) + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// Counting waves (after Mattern's four-counter method): the work is over once
/// two consecutive complete waves find every live node in finish() and idle,
/// with as much delivered as sent, and the same counts and losses both times.
/// Nothing moved between them, so nothing is in flight and nobody is busy.
class TerminationTally {
 public:
  enum class Verdict {
    incomplete,   ///< a live node has not answered yet
    done,         ///< terminated: tell everyone
    again_now,    ///< balanced once: confirm with another wave at once
    again_later,  ///< not balanced, or not idle: try again after a pause
  };

  /// replies[n]: node n's answer to this wave, if any; alive(n): whether n is
  /// a live node (dead nodes' answers are ignored). replies[self] must be set.
  template <class Alive>
  Verdict judge(const std::vector<std::optional<WorkStatus>>& replies, NodeId self, Alive&& alive) {
    bool ok = true;
    std::uint64_t sent = 0, delivered = 0;
    for (NodeId n = 0; n < replies.size(); ++n) {
      if (!alive(n)) continue;
      const auto& r = replies[n];
      if (!r) return Verdict::incomplete;
      ok = ok && r->in_finish && r->idle && r->lost == replies[self]->lost;
      sent += r->sent;
      delivered += r->delivered;
    }
    if (!ok || sent != delivered) {
      last_balanced_.reset();
      return Verdict::again_later;
    }
    const auto now = std::make_tuple(sent, delivered, replies[self]->lost);
    if (last_balanced_ && *last_balanced_ == now) return Verdict::done;
    last_balanced_ = now;
    return Verdict::again_now;
  }

 private:
  std::optional<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>> last_balanced_;  // sent, delivered, lost
};

}  // namespace troupe::detail
