// Runtime configuration.
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <string>

#include "troupe/fwd.hpp"

namespace troupe {

/// How worker threads are pinned inside the cpuset the process was given.
enum class Pinning {
  none,     ///< no binding: the OS places threads (inside the process cpuset)
  compact,  ///< fill cores in topology order: neighbours share caches and NUMA nodes
  scatter,  ///< spread over packages and NUMA nodes first, then cores
};

enum class SchedulerKind {
  threads,        ///< oneTBB work-stealing arena (production)
  deterministic,  ///< one thread, explicit order, virtual time (tests); see troupe/testing.hpp
};

struct Config {
  // ---- scheduler -------------------------------------------------------------
  /// Worker threads; 0 means --troupe-threads=N, else TROUPE_THREADS, else one
  /// per processing unit of the process cpuset.
  std::size_t threads = 0;
  Pinning pinning = Pinning::compact;
  /// Messages an actor handles per turn before it yields its thread.
  std::size_t batch = 64;
  SchedulerKind scheduler = SchedulerKind::threads;
  /// Plan the pinning for this hwloc synthetic topology instead of the machine
  /// (for tests and what-if studies; threads are then not bound).
  std::string synthetic_topology;

  /// Called when a tell fails and nobody waits for its result: its method
  /// threw, or a tell from another node could not be read or named a method or
  /// class this build does not know. (A tell to an exited actor is dropped, on
  /// any node.) Default: one line on stderr. The actor keeps running.
  std::function<void(ActorId actor, const char* method, std::exception_ptr error)> on_unhandled;

  // ---- memory ----------------------------------------------------------------
  /// Keep the memory of freed large blocks (128 KiB to 32 MiB) in the
  /// allocator's heap, mapped, instead of handing it back to the kernel: the
  /// next large allocation (a received std::vector, say) then reuses warm
  /// pages instead of faulting in and zero-filling fresh ones. Process-wide
  /// (glibc's mmap threshold is set to 32 MiB and its trim threshold to 1 GiB),
  /// so a rank's resident memory stays near its peak, as with most HPC
  /// allocators. Set before MPI_Init when the runtime initialises MPI, so that
  /// an MPI library that tunes malloc for itself has the last word; with
  /// adopt(comm), after it: set this to false if your MPI library tunes malloc.
  /// TROUPE_KEEP_FREED_MEMORY=0 in the environment, or false here, leaves
  /// malloc's settings alone. No effect with other allocators or under
  /// sanitizers.
  bool keep_freed_memory = true;
  /// A std::vector of numbers of 1 MiB or more that arrives as an argument
  /// from another node, and that its method took by reference (const&, &, or
  /// && left alone) and left whole, is kept after the call, up to this many
  /// bytes per process in all (when full, the vectors kept longest ago make
  /// room). The next vector of that element type and a similar size that
  /// arrives is made from a kept one: memory mapped already, and no zero fill
  /// up to the kept vector's old size, before MPI writes into it; it may have
  /// up to a quarter more capacity than it needs. 0 keeps none;
  /// TROUPE_RECYCLED_VECTORS_MB in the environment wins over this. A method that
  /// takes its vector by value owns it, and nothing is kept. Process-wide:
  /// the last runtime made sets it; a runtime that shuts down frees what is
  /// kept, and nothing is kept again until another runtime is made.
  std::size_t recycled_vector_bytes = std::size_t{256} << 20;
  /// Off by default (an experiment: measured gains, but not in every run).
  /// When on, a block of 16 KiB to 2 MiB of memory the program allocated (a
  /// std::vector's or a string's data, a troupe::Array under 1 MiB) sent to a
  /// node on the same host is copied, 1 MiB at a time, into the engine's
  /// staging buffers and sent from there while the receiver reads the piece
  /// before: MPI's shared-memory single copy reads the program's malloc pages
  /// at about half the speed it reads a hot staging buffer (1 MiB vectors:
  /// 6.9-8.2 against 5.8-7.5 GB/s in most rounds, slower in some; see
  /// docs/benchmarks.md before turning it on). Larger
  /// blocks, and Array blocks of 1 MiB or more (on huge pages), leave from
  /// their own memory. Even when on, it stays off where the MPI library is told to keep off
  /// shared memory (OMPI_MCA_btl without vader or sm, MPICH's
  /// MPIR_CVAR_NOLOCAL or MPIR_CVAR_CH3_NOLOCAL), when Open MPI's single copy
  /// is turned off, or when malloc already puts blocks on huge pages
  /// (glibc.malloc.hugetlb in GLIBC_TUNABLES). TROUPE_STAGE_BLOCKS=0 or 1 in
  /// the environment wins over all of that.
  bool stage_blocks = false;

  // ---- cluster ---------------------------------------------------------------
  /// This node's role. --troupe-role=NAME on the command line wins, then the
  /// TROUPE_ROLE environment variable, then this; "default" if none is set.
  std::string role;
  /// Failure detection: heartbeat period and the silence after which a watched
  /// node is declared lost.
  std::chrono::milliseconds heartbeat_period{100};
  std::chrono::milliseconds heartbeat_timeout{600};
  /// Poll the launcher's process table (PMIx) for faster failure evidence.
  bool use_pmix = true;
};

}  // namespace troupe
