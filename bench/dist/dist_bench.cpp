// Distributed benchmarks, each beside its raw-MPI baseline measured in the same
// run (same processes, same MPI, before troupe's runtime starts):
//   rtt   remote ask round trip, 8 bytes      vs MPI_Send/MPI_Recv ping-pong
//   rate  one-way rate of small tells         vs a windowed MPI_Isend stream
//   bw    std::vector<double>, 1 KiB..64 MiB  vs windowed MPI_Isend of the same bytes
//   idle  CPU each rank burns while nothing happens, and while rank 0 waits
//         1 s in get() for a reply (an idle rank must not spin)
// Rank 0 drives, rank 1 answers. Output: one JSON object per line on rank 0.
//   mpirun -np 2 dist_bench [--quick] [--label NAME]
#include <mpi.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "troupe/detail/fresh_memory.hpp"
#include "troupe/mpi.hpp"
#include "troupe/remote.hpp"
#include "troupe/troupe.hpp"

namespace bench {

class Sink {
 public:
  std::uint64_t echo(std::uint64_t x) { return x; }
  void take(std::uint64_t x) { last_ += x; ++count_; }
  void take_vec(std::vector<double> v) {
    bytes_ += v.size() * sizeof(double);
    ++count_;
  }
  void take_array(troupe::Array<double> a) {
    bytes_ += a.size() * sizeof(double);
    ++count_;
  }
  std::uint64_t count() const { return count_; }
  /// Answers after ms milliseconds (its worker sleeps: the idle benchmark).
  std::uint64_t pause(std::uint64_t ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
  }

 private:
  std::uint64_t last_ = 0, count_ = 0, bytes_ = 0;
};
TROUPE_REMOTE(Sink, troupe::init<>, &Sink::echo, &Sink::take, &Sink::take_vec, &Sink::take_array, &Sink::count,
              &Sink::pause);

}  // namespace bench

namespace {

using Clock = std::chrono::steady_clock;
double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

int rank = 0;
bool quick = false;
std::string label = "default";
std::string only;        // rtt, rate or bw: run just that one
std::size_t min_bytes = 1024, max_bytes = 64u << 20;
bool want(const char* what) { return only.empty() || only == what; }

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

/// Waits for a nonblocking MPI call with sleeps: a rank blocked in MPI_Barrier
/// busy-polls, and would take a core from the other rank's benchmark (the idle
/// benchmark's rank 1 waits there while rank 0 runs all the others).
void wait_politely(MPI_Request& req) {
  int done = 0;
  while (MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void emit(const char* bench, const char* what, double troupe_v, double mpi_v, const char* unit, const std::string& extra = "") {
  if (rank != 0) return;
  std::printf("{\"bench\":\"%s\",\"transport\":\"%s\",\"case\":\"%s\",\"troupe\":%.6g,\"mpi\":%.6g,\"unit\":\"%s\"%s}\n",
              bench, label.c_str(), what, troupe_v, mpi_v, unit, extra.c_str());
  std::fflush(stdout);
}

// ---- raw MPI baselines (run before troupe starts) -------------------------

double mpi_rtt_us(MPI_Comm comm, int iters) {
  std::uint64_t x = 0;
  std::vector<double> samples;
  for (int rep = 0; rep < 5; ++rep) {
    MPI_Barrier(comm);
    auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) {
      if (rank == 0) {
        MPI_Send(&x, 1, MPI_UINT64_T, 1, 1, comm);
        MPI_Recv(&x, 1, MPI_UINT64_T, 1, 1, comm, MPI_STATUS_IGNORE);
      } else if (rank == 1) {
        MPI_Recv(&x, 1, MPI_UINT64_T, 0, 1, comm, MPI_STATUS_IGNORE);
        MPI_Send(&x, 1, MPI_UINT64_T, 0, 1, comm);
      }
    }
    samples.push_back(secs(Clock::now() - t0) / iters * 1e6);
  }
  return median(samples);
}

// osu_mbw_mr style: windows of nonblocking sends, one ack per window.
// Buffers::one: every message leaves from and lands in one buffer (the OSU
// way: at 1-4 MiB both stay in cache). Buffers::distinct: the sender sends each
// message from a buffer of its own, as troupe's benchmark must (tells move
// their data), and the receiver cycles through one buffer per window slot, as
// troupe's pooled Arrays do: the same memory traffic as troupe's run.
// Buffers::distinct_huge: the same on transparent huge pages, which troupe
// asks for when it maps a block of 1 MiB or more
// (include/troupe/detail/fresh_memory.hpp); measured from that size on.
enum class Buffers { one, distinct, distinct_huge };

struct FreeDeleter {
  void operator()(char* p) const noexcept { std::free(p); }
};
using RawBuffer = std::unique_ptr<char[], FreeDeleter>;

RawBuffer raw_buffer(std::size_t bytes, bool huge) {
  constexpr std::size_t kHuge = 2u << 20;
  const std::size_t align = huge ? kHuge : 64;
  const std::size_t size = (std::max<std::size_t>(bytes, 1) + align - 1) / align * align;
  RawBuffer b(static_cast<char*>(std::aligned_alloc(align, size)));
  if (!b) throw std::bad_alloc();
  if (huge) ::madvise(b.get(), size, MADV_HUGEPAGE);
  std::memset(b.get(), 1, size);
  return b;
}

double mpi_stream(MPI_Comm comm, std::size_t bytes, int window, int windows, Buffers kind = Buffers::one) {
  const bool distinct = kind != Buffers::one;
  const std::size_t total = static_cast<std::size_t>(window) * static_cast<std::size_t>(windows);
  const std::size_t sources = distinct && rank == 0 ? total : 1;
  const std::size_t sinks = distinct && rank == 1 ? static_cast<std::size_t>(window) : 1;
  std::vector<RawBuffer> bufs;
  for (std::size_t i = 0; i < std::max(sources, sinks); ++i)
    bufs.push_back(raw_buffer(bytes, kind == Buffers::distinct_huge));
  std::vector<MPI_Request> reqs(static_cast<std::size_t>(window));
  char ack = 0;
  std::vector<double> samples;
  for (int rep = 0; rep < 3; ++rep) {
    MPI_Barrier(comm);
    auto t0 = Clock::now();
    std::size_t k = 0;
    for (int w = 0; w < windows; ++w) {
      if (rank == 0) {
        for (int i = 0; i < window; ++i, ++k)
          MPI_Isend(bufs[k % bufs.size()].get(), static_cast<int>(bytes), MPI_BYTE, 1, 2, comm,
                    &reqs[static_cast<std::size_t>(i)]);
        MPI_Waitall(window, reqs.data(), MPI_STATUSES_IGNORE);
        MPI_Recv(&ack, 1, MPI_BYTE, 1, 3, comm, MPI_STATUS_IGNORE);
      } else if (rank == 1) {
        for (int i = 0; i < window; ++i)
          MPI_Irecv(bufs[static_cast<std::size_t>(i) % bufs.size()].get(), static_cast<int>(bytes), MPI_BYTE, 0, 2,
                    comm, &reqs[static_cast<std::size_t>(i)]);
        MPI_Waitall(window, reqs.data(), MPI_STATUSES_IGNORE);
        MPI_Send(&ack, 1, MPI_BYTE, 0, 3, comm);
      }
    }
    samples.push_back(secs(Clock::now() - t0));
  }
  return median(samples);  // seconds for windows*window messages
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--label") == 0 && i + 1 < argc) label = argv[++i];
    if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
    if (std::strcmp(argv[i], "--min") == 0 && i + 1 < argc) min_bytes = std::stoul(argv[++i]);
    if (std::strcmp(argv[i], "--max") == 0 && i + 1 < argc) max_bytes = std::stoul(argv[++i]);
  }
  MPI_Comm raw;
  MPI_Comm_dup(MPI_COMM_WORLD, &raw);

  // Baselines first, with nothing else running.
  const int rtt_iters = quick ? 2000 : 20000;
  const double raw_rtt = want("rtt") ? mpi_rtt_us(raw, rtt_iters) : 0;
  const int rate_msgs = quick ? 100000 : 1000000;
  const int rate_window = 64;
  const double raw_rate = want("rate") ? rate_msgs / mpi_stream(raw, 8, rate_window, rate_msgs / rate_window) : 0;
  std::vector<std::size_t> sizes;
  if (want("bw"))
    for (std::size_t s = min_bytes; s <= max_bytes; s *= 4) sizes.push_back(s);
  std::vector<double> raw_bw;
  auto bw_shape = [&](std::size_t bytes) {
    const int window = bytes >= (1u << 20) ? 4 : 32;
    const std::size_t target = quick ? (64u << 20) : (512u << 20);  // bytes per measurement
    const int windows = static_cast<int>(std::max<std::size_t>(2, target / (bytes * static_cast<std::size_t>(window))));
    return std::make_pair(window, windows);
  };
  std::vector<double> raw_bw_distinct, raw_bw_huge;
  for (auto s : sizes) {
    auto [window, windows] = bw_shape(s);
    raw_bw.push_back(static_cast<double>(s) * window * windows / mpi_stream(raw, s, window, windows) / 1e6);
    raw_bw_distinct.push_back(static_cast<double>(s) * window * windows /
                              mpi_stream(raw, s, window, windows, Buffers::distinct) / 1e6);
    // Only where troupe maps blocks on huge pages (each buffer takes whole ones).
    raw_bw_huge.push_back(s < troupe::detail::kFreshMemoryFrom
                              ? 0.0
                              : static_cast<double>(s) * window * windows /
                                    mpi_stream(raw, s, window, windows, Buffers::distinct_huge) / 1e6);
  }
  MPI_Barrier(MPI_COMM_WORLD);

  {
    troupe::Runtime rt(troupe::adopt(MPI_COMM_WORLD));
    troupe::ActorId sink_id = 0;
    if (rt.node() == 1) sink_id = rt.spawn<bench::Sink>().id();
    MPI_Bcast(&sink_id, sizeof(sink_id), MPI_BYTE, 1, MPI_COMM_WORLD);  // tests-and-benchmarks only
    if (rt.node() == 0) {
      troupe::ActorRef<bench::Sink> sink(&rt.core(), 1, sink_id);
      // rtt
      if (want("rtt")) {
      for (int i = 0; i < 1000; ++i) sink.ask<&bench::Sink::echo>(std::uint64_t(i)).get();
      std::vector<double> samples;
      for (int rep = 0; rep < 5; ++rep) {
        auto t0 = Clock::now();
        for (int i = 0; i < rtt_iters; ++i) sink.ask<&bench::Sink::echo>(std::uint64_t(i)).get();
        samples.push_back(secs(Clock::now() - t0) / rtt_iters * 1e6);
      }
      const double rtt = median(samples);
      emit("rtt", "ask 8 B", rtt, raw_rtt, "us", ",\"goal\":\"<= 1.5x mpi\",\"ratio\":" + std::to_string(rtt / raw_rtt));
      }
      // rate
      if (want("rate")) {
      std::vector<double> samples, sending;
      for (int rep = 0; rep < 3; ++rep) {
        auto t0 = Clock::now();
        for (int i = 0; i < rate_msgs; ++i) sink.tell<&bench::Sink::take>(std::uint64_t(i));
        sending.push_back(secs(Clock::now() - t0) / rate_msgs * 1e9);  // the sender's own cost per tell
        sink.ask<&bench::Sink::count>().get();
        samples.push_back(rate_msgs / secs(Clock::now() - t0));
      }
      const double rate = median(samples);
      emit("rate", "tell 8 B", rate, raw_rate, "msg/s",
           ",\"goal\":\">= 1.0x mpi\",\"ratio\":" + std::to_string(rate / raw_rate) +
               ",\"send_ns_per_tell\":" + std::to_string(median(sending)));
      }
      // bandwidth: vectors moved into tells, a window at a time, one ask per
      // window. Every window's data is made before the clock starts, so the
      // stream is continuous like raw MPI's (building it between windows left
      // the receiver idle long enough to back off into sleeps, which the next
      // window then waited out: that measured wake-up, not bandwidth).
      for (std::size_t k = 0; k < sizes.size(); ++k) {
        const std::size_t bytes = sizes[k];
        auto [window, windows] = bw_shape(bytes);
        const std::size_t total = static_cast<std::size_t>(window) * static_cast<std::size_t>(windows);
        std::vector<double> runs;
        for (int rep = 0; rep < 3; ++rep) {
          std::vector<std::vector<double>> data(total, std::vector<double>(bytes / sizeof(double), 1.0));
          auto t0 = Clock::now();
          for (std::size_t i = 0; i < total; ++i) {
            sink.tell<&bench::Sink::take_vec>(std::move(data[i]));
            if ((i + 1) % static_cast<std::size_t>(window) == 0) sink.ask<&bench::Sink::count>().get();
          }
          runs.push_back(static_cast<double>(bytes) * static_cast<double>(total) / secs(Clock::now() - t0) / 1e6);
        }
        const double bw = median(runs);
        char what[64];
        std::snprintf(what, sizeof what, "%zu B", bytes);
        emit("bw", what, bw, raw_bw[k], "MB/s",
             ",\"bytes\":" + std::to_string(bytes) + ",\"ratio\":" + std::to_string(bw / raw_bw[k]) +
                 ",\"mpi_distinct\":" + std::to_string(raw_bw_distinct[k]) +
                 ",\"mpi_distinct_huge\":" + std::to_string(raw_bw_huge[k]));
        // The same bytes as troupe::Array<double>: pooled, never zero-filled.
        runs.clear();
        for (int rep = 0; rep < 3; ++rep) {
          std::vector<troupe::Array<double>> data;
          data.reserve(total);
          for (std::size_t i = 0; i < total; ++i) data.emplace_back(bytes / sizeof(double), 1.0);
          auto t0 = Clock::now();
          for (std::size_t i = 0; i < total; ++i) {
            sink.tell<&bench::Sink::take_array>(std::move(data[i]));
            if ((i + 1) % static_cast<std::size_t>(window) == 0) sink.ask<&bench::Sink::count>().get();
          }
          runs.push_back(static_cast<double>(bytes) * static_cast<double>(total) / secs(Clock::now() - t0) / 1e6);
        }
        const double abw = median(runs);
        std::snprintf(what, sizeof what, "%zu B Array", bytes);
        emit("bw", what, abw, raw_bw[k], "MB/s",
             ",\"bytes\":" + std::to_string(bytes) + ",\"ratio\":" + std::to_string(abw / raw_bw[k]) +
                 ",\"mpi_distinct\":" + std::to_string(raw_bw_distinct[k]) +
                 ",\"mpi_distinct_huge\":" + std::to_string(raw_bw_huge[k]));
      }
    }
    if (want("idle")) {
      // CPU time over wall time, per rank: while every thread has nothing to
      // do, then while rank 0's main thread waits in get() for a reply that
      // takes 1 s (rank 1's worker sleeps in the actor meanwhile).
      troupe::ActorRef<bench::Sink> sink(&rt.core(), 1, sink_id);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the last benchmark's traffic settle
      for (const char* what : {"quiet", "waiting in get()"}) {
        MPI_Request req;
        MPI_Ibarrier(MPI_COMM_WORLD, &req);  // benchmarks only
        wait_politely(req);
        const double c0 = cpu_seconds();
        const auto t0 = Clock::now();
        if (std::strcmp(what, "quiet") == 0 || rank != 0) {
          std::this_thread::sleep_for(std::chrono::seconds(1));
        } else {
          sink.ask<&bench::Sink::pause>(std::uint64_t{1000}).get();
        }
        const double load = (cpu_seconds() - c0) / secs(Clock::now() - t0);
        double loads[2] = {0, 0};
        MPI_Igather(&load, 1, MPI_DOUBLE, loads, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD, &req);
        wait_politely(req);
        if (rank == 0)
          std::printf("{\"bench\":\"idle\",\"transport\":\"%s\",\"case\":\"%s\",\"rank0\":%.4f,\"rank1\":%.4f,"
                      "\"unit\":\"cores busy\"}\n",
                      label.c_str(), what, loads[0], loads[1]);
        std::fflush(stdout);
      }
    }
    rt.finish();
  }
  MPI_Comm_free(&raw);
  MPI_Finalize();
  return 0;
}
