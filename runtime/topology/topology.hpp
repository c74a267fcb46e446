// Topology: the machine (or an hwloc synthetic description of one) and the plan
// that places worker threads on it. The only code in troupe that sees hwloc.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "troupe/config.hpp"

namespace troupe::detail {

/// Where one worker thread goes.
struct ThreadSlot {
  std::vector<unsigned> pus;  ///< OS indices of the processing units it may run on
  int numa = -1;              ///< OS index of its NUMA node (-1: none/unknown)
  int package = -1;           ///< logical index of its package
};

class Topology {
 public:
  /// This machine, restricted to the cpuset the calling thread is bound to (what
  /// mpirun or Slurm gave the process).
  static Topology system();
  /// An hwloc synthetic topology such as "pack:2 numa:2 core:8 pu:2"; every PU allowed.
  static Topology synthetic(const std::string& description);

  Topology(Topology&&) noexcept;
  Topology& operator=(Topology&&) noexcept;
  ~Topology();

  bool is_synthetic() const noexcept;
  std::size_t packages() const;
  std::size_t numa_nodes() const;
  std::size_t cores() const;
  std::size_t pus() const;

  /// PUs (OS indices) threads may use, in topology order.
  std::vector<unsigned> allowed_pus() const;
  /// Narrows the allowed PUs, as a launcher's binding would.
  void restrict_to(const std::vector<unsigned>& pus);

  /// Places n threads. compact: consecutive cores in topology order; scatter:
  /// round robin over packages, then NUMA nodes, then cores. Each thread gets a
  /// whole core while there are enough cores, else a single PU. none: every
  /// thread gets the whole allowed set. The plan starts `first` places into
  /// that order (wrapping): ranks of one host that share an allowed set (a
  /// launcher that bound them to a socket, or not at all) each start where
  /// the ranks before them left off, instead of all on the first cores.
  std::vector<ThreadSlot> plan(std::size_t n, Pinning policy, std::size_t first = 0) const;

  /// Binds the calling thread to the slot's PUs (and, on multi-NUMA machines,
  /// its memory to the slot's node). False on synthetic topologies or failure.
  bool bind_current_thread(const ThreadSlot& slot) const;
  /// PUs the calling thread is bound to right now.
  std::vector<unsigned> current_thread_binding() const;

  std::string describe() const;

 private:
  struct Impl;
  explicit Topology(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

std::vector<unsigned> parse_cpu_list(const std::string& list);  // "0-3,8" -> {0,1,2,3,8}

}  // namespace troupe::detail
