// HwlocPlacement: pins each scheduler worker to its planned slot.
#pragma once

#include <memory>

#include "../core/scheduler.hpp"
#include "topology.hpp"

namespace troupe::detail {

class HwlocPlacement final : public ThreadPlacement {
 public:
  HwlocPlacement(Topology topo, std::vector<ThreadSlot> plan) : topo_(std::move(topo)), plan_(std::move(plan)) {}
  void on_thread_start(std::size_t slot) noexcept override {
    if (plan_.empty()) return;
    topo_.bind_current_thread(plan_[slot % plan_.size()]);
  }
  const std::vector<ThreadSlot>& plan() const noexcept { return plan_; }

 private:
  Topology topo_;
  std::vector<ThreadSlot> plan_;
};

/// The worker count the config asks for (0: one per allowed PU) and, unless the
/// topology is synthetic, the placement that pins them.
struct PlacementChoice {
  std::size_t threads = 1;
  std::unique_ptr<ThreadPlacement> placement;
};
PlacementChoice choose_placement(const Config& cfg);
/// This process's rank among the ranks of its host, as the launcher says
/// (Open MPI, MPICH's Hydra, Slurm); 0 when none does.
std::size_t local_rank() noexcept;

}  // namespace troupe::detail
