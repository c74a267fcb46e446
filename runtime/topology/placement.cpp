#include "placement.hpp"

#include <cstdio>
#include <cstdlib>

namespace troupe::detail {

std::size_t local_rank() noexcept {
  // Open MPI's mpirun, MPICH's Hydra, Slurm's srun.
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    char* end = nullptr;
    const unsigned long r = std::strtoul(v, &end, 10);
    if (end != nullptr && *end == '\0') return static_cast<std::size_t>(r);
  }
  return 0;
}

PlacementChoice choose_placement(const Config& cfg) {
  PlacementChoice out;
  Topology topo = cfg.synthetic_topology.empty() ? Topology::system() : Topology::synthetic(cfg.synthetic_topology);
  const auto allowed = topo.allowed_pus().size();
  out.threads = cfg.threads != 0 ? cfg.threads : std::max<std::size_t>(1, allowed);
  if (cfg.scheduler == SchedulerKind::deterministic) return out;
  // A rank bound to cores of its own starts at its first (the offset wraps
  // within them); ranks that share an allowed set take turns through it.
  auto plan = topo.plan(out.threads, cfg.pinning, local_rank() * out.threads);
  if (const char* v = std::getenv("TROUPE_VERBOSE"); v != nullptr && *v == '1') {
    std::fprintf(stderr, "troupe: %s; %zu worker(s), pinning %s\n", topo.describe().c_str(), out.threads,
                 cfg.pinning == Pinning::none ? "none" : cfg.pinning == Pinning::compact ? "compact" : "scatter");
  }
  // With Pinning::none each worker is bound to the whole allowed set: oneTBB
  // reuses worker threads across arenas, so a thread may still carry another
  // runtime's binding.
  if (!topo.is_synthetic())
    out.placement = std::make_unique<HwlocPlacement>(std::move(topo), std::move(plan));
  return out;
}

}  // namespace troupe::detail
