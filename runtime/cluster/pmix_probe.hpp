// PmixProbe: faster evidence of death from the launcher. Open MPI's mpirun (and
// Slurm's PMIx plugin) keep a process table; a killed rank shows up there
// within one poll (a query costs ~0.5 ms here), long before a heartbeat
// timeout. Only this host's table is read (PMIX_QUERY_LOCAL_PROC_TABLE), so the
// cost does not grow with the job; ranks on other hosts are left to the
// heartbeat ring, which stays the portable truth. Built only where PMIx is
// found at configure time.
#pragma once

#include <memory>
#include <vector>

#include "troupe/fwd.hpp"

namespace troupe::detail {

class PmixProbe {
 public:
  /// world_ranks[node]: the node's rank in MPI_COMM_WORLD (the launcher's names).
  explicit PmixProbe(std::vector<int> world_ranks);
  ~PmixProbe();
  PmixProbe(const PmixProbe&) = delete;
  PmixProbe& operator=(const PmixProbe&) = delete;

  /// False without PMIx, when the launcher does not answer, or after a failure.
  bool available() const noexcept;
  /// Nodes of this host whose process has terminated, per the launcher.
  std::vector<NodeId> dead_local_nodes();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace troupe::detail
