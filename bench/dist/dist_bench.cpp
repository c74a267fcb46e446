// Distributed benchmarks, each beside its raw-MPI baseline measured in the same
// run (same processes, same MPI, on a communicator of its own), in rounds that
// alternate raw MPI and troupe; ratios are the median of the rounds' own:
//   rtt   remote ask round trip, 8 bytes      vs MPI_Send/MPI_Recv ping-pong (and, alone,
//         the same ping-pong made the way troupe's engine calls MPI: nonblocking, ANY_SOURCE)
//   rate  one-way rate of small tells         vs a windowed MPI_Isend stream
//   bw    std::vector<double>, 1 KiB..64 MiB  vs windowed MPI_Isend of the same bytes
//         (to a method taking it by value, and by const&), troupe::Array, pooled Arrays
//   idle  CPU each rank burns while nothing happens, and while rank 0 waits
//         1 s in get() for a reply (an idle rank must not spin)
// Rank 0 drives, rank 1 answers. Output: one JSON object per line on rank 0.
//   mpirun -np 2 dist_bench [--quick] [--label NAME]
#include <mpi.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "troupe/detail/fresh_memory.hpp"
#include "troupe/detail/stage_probe.hpp"
#include "troupe/wire/archive.hpp"
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
  /// Reads its vector and leaves it whole: the runtime keeps it for the next
  /// received vector (Config::recycled_vector_bytes).
  void take_vec_ref(const std::vector<double>& v) {
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
TROUPE_REMOTE(Sink, troupe::init<>, &Sink::echo, &Sink::take, &Sink::take_vec, &Sink::take_vec_ref, &Sink::take_array,
              &Sink::count, &Sink::pause);

}  // namespace bench

namespace {

using Clock = std::chrono::steady_clock;
double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

int rank = 0;
bool quick = false;
std::string label = "default";
int rtt_iters_arg = 0;    // --rtt-iters N: round trips per round
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
/// benchmark's rank 1 waits there while rank 0 runs all the others). It looks
/// every 10 ms: rank 1's main thread waits here through troupe's rounds, and
/// each wake-up takes a core from the threads being measured (with 1 ms, about
/// one shm round trip in a thousand took 5-40 us more; raw MPI's rounds have no
/// such waiter).
void wait_politely(MPI_Request& req) {
  int done = 0;
  while (MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
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

// ---- raw MPI baselines ----------------------------------------------------

/// One run of `iters` raw ping-pongs of 8 bytes: microseconds per round trip.
double mpi_rtt_us(MPI_Comm comm, int iters) {
  std::uint64_t x = 0;
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
  return secs(Clock::now() - t0) / iters * 1e6;
}

/// The same ping-pong in the form troupe's engine uses MPI: nonblocking calls
/// only, a receive from MPI_ANY_SOURCE posted ahead and polled with MPI_Test,
/// each send an MPI_Isend tested at once. What that form itself costs.
double mpi_rtt_nonblocking_us(MPI_Comm comm, int iters) {
  std::uint64_t out = 0, in = 0;
  MPI_Request recv = MPI_REQUEST_NULL;
  const int peer = 1 - rank;
  auto post = [&] { MPI_Irecv(&in, 1, MPI_UINT64_T, MPI_ANY_SOURCE, 2, comm, &recv); };
  auto await = [&] {
    for (int done = 0; done == 0;) MPI_Test(&recv, &done, MPI_STATUS_IGNORE);
    post();
  };
  auto send = [&] {
    MPI_Request req;
    MPI_Isend(&out, 1, MPI_UINT64_T, peer, 2, comm, &req);
    int done = 0;
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done == 0) MPI_Wait(&req, MPI_STATUS_IGNORE);
  };
  if (rank <= 1) post();
  MPI_Barrier(comm);
  auto t0 = Clock::now();
  for (int i = 0; i < iters && rank <= 1; ++i) {
    if (rank == 0) {
      send();
      await();
    } else {
      await();
      send();
    }
  }
  const double us = secs(Clock::now() - t0) / iters * 1e6;
  if (recv != MPI_REQUEST_NULL) {  // the receive posted last: nothing more comes
    MPI_Cancel(&recv);
    MPI_Wait(&recv, MPI_STATUS_IGNORE);
  }
  MPI_Barrier(comm);
  return us;
}

/// The same ping-pong, each round trip timed on its own (rank 0's figures).
std::vector<double> mpi_rtt_each_us(MPI_Comm comm, int iters) {
  std::vector<double> each;
  each.reserve(static_cast<std::size_t>(iters));
  std::uint64_t x = 0;
  MPI_Barrier(comm);
  for (int i = 0; i < iters; ++i) {
    const auto t0 = Clock::now();
    if (rank == 0) {
      MPI_Send(&x, 1, MPI_UINT64_T, 1, 1, comm);
      MPI_Recv(&x, 1, MPI_UINT64_T, 1, 1, comm, MPI_STATUS_IGNORE);
      each.push_back(secs(Clock::now() - t0) * 1e6);
    } else if (rank == 1) {
      MPI_Recv(&x, 1, MPI_UINT64_T, 0, 1, comm, MPI_STATUS_IGNORE);
      MPI_Send(&x, 1, MPI_UINT64_T, 0, 1, comm);
    }
  }
  return each;
}

/// Percentiles of single round trips, troupe's beside raw MPI's, and the
/// share of the mean that round trips over 5 us make up.
void emit_tail(std::vector<double> t, std::vector<double> m) {
  auto stats = [](std::vector<double>& v, const char* who) {
    std::sort(v.begin(), v.end());
    auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))]; };
    double sum = 0, slow = 0;
    std::size_t n_slow = 0;
    for (double x : v) {
      sum += x;
      if (x > 5.0) slow += x, ++n_slow;
    }
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  ",\"%s_mean\":%.4g,\"%s_p10\":%.4g,\"%s_p50\":%.4g,\"%s_p90\":%.4g,\"%s_p99\":%.4g,\"%s_p999\":%.4g,"
                  "\"%s_max\":%.4g,\"%s_over5us\":%zu,\"%s_over5us_share\":%.4g",
                  who, sum / static_cast<double>(v.size()), who, at(0.1), who, at(0.5), who, at(0.9), who, at(0.99), who,
                  at(0.999), who, v.back(), who, n_slow, who, slow / sum);
    return std::string(buf);
  };
  if (t.empty() || m.empty()) return;
  std::printf("{\"bench\":\"rtt_tail\",\"transport\":\"%s\",\"case\":\"ask 8 B, each round trip timed\",\"unit\":\"us\","
              "\"count\":%zu%s%s}\n",
              label.c_str(), t.size(), stats(t, "troupe").c_str(), stats(m, "mpi").c_str());
  std::fflush(stdout);
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
// Buffers::window: one buffer per window slot on each side, reused by every
// window (on huge pages from 1 MiB): the memory traffic of a troupe producer
// that takes its Arrays from the pool as it sends them, since the pool hands
// the blocks the last window freed to the next.
// Buffers::fresh_vectors: what a raw MPI program must do to move each message
// out of a std::vector<double> of its own and hand it to its consumer as a
// vector of its own, as a troupe tell of a vector does: the sender's vectors
// are made before the clock starts and each is freed once its send is done;
// the receiver makes a new vector per message (allocated and zero-filled
// inside the timed loop) and receives into it, and a window's vectors are
// freed as the next window's are made. They live in malloc's heap under the
// process's settings, as troupe's vectors do (a runtime is running).
enum class Buffers { one, distinct, distinct_huge, window, fresh_vectors };

/// A raw baseline's buffer. From 128 KiB on (where malloc's policy starts to
/// matter) it is mapped by itself: which pages it sits on must not depend on
/// malloc, and troupe's runtime keeps freed blocks in malloc's heap, where a
/// later buffer could land on memory an earlier one had asked huge pages for.
/// Smaller ones come from the heap (a mapping each would be too many).
struct RawFree {
  std::size_t mapped = 0;  // length of the mapping, 0 if from malloc
  void operator()(char* p) const noexcept {
    if (mapped != 0) ::munmap(p, mapped);
    else std::free(p);
  }
};
using RawBuffer = std::unique_ptr<char[], RawFree>;

RawBuffer raw_buffer(std::size_t bytes, bool huge) {
  constexpr std::size_t kHuge = 2u << 20;
  if (!huge && bytes < (128u << 10)) {
    RawBuffer buf(static_cast<char*>(std::aligned_alloc(64, (std::max<std::size_t>(bytes, 1) + 63) / 64 * 64)));
    if (!buf) throw std::bad_alloc();
    std::memset(buf.get(), 1, bytes);
    return buf;
  }
  const std::size_t align = huge ? kHuge : 4096;
  const std::size_t size = (bytes + align - 1) / align * align;
  // Huge: map a huge page more and give back the ends, so the buffer starts on a 2 MiB boundary.
  const std::size_t span = huge ? size + kHuge : size;
  void* m = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  auto* p = static_cast<char*>(m);
  if (huge) {
    const auto b = reinterpret_cast<std::uintptr_t>(m);
    const std::uintptr_t a = (b + kHuge - 1) & ~(std::uintptr_t{kHuge} - 1);
    if (a > b) ::munmap(m, a - b);
    if (b + span > a + size) ::munmap(reinterpret_cast<void*>(a + size), b + span - (a + size));
    p = reinterpret_cast<char*>(a);
  }
  ::madvise(p, size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  RawBuffer buf(p, RawFree{size});
  std::memset(buf.get(), 1, size);
  return buf;
}

/// Its buffers are made once and kept, so that each round measures the stream alone.
class RawStream {
 public:
  /// announced: troupe's protocol for a message with a block, in raw MPI: a
  /// small header message first, and the receiver posts the block's receive
  /// only once it has that header.
  RawStream(MPI_Comm comm, std::size_t bytes, int window, int windows, Buffers kind = Buffers::one,
            bool announced = false)
      : comm_(comm),
        bytes_(bytes),
        window_(window),
        windows_(windows),
        announced_(announced),
        reqs_(2 * static_cast<std::size_t>(window)),
        headers_(static_cast<std::size_t>(window)) {
    const bool distinct = kind != Buffers::one;
    fresh_ = kind == Buffers::fresh_vectors;
    if (fresh_) received_.resize(static_cast<std::size_t>(window));
    const std::size_t total = static_cast<std::size_t>(window) * static_cast<std::size_t>(windows);
    const std::size_t sources = distinct && rank == 0 ? (kind == Buffers::window ? static_cast<std::size_t>(window) : total) : 1;
    const std::size_t sinks = distinct && rank == 1 ? static_cast<std::size_t>(window) : 1;
    for (std::size_t i = 0; i < (fresh_ ? 0 : std::max(sources, sinks)); ++i)
      bufs_.push_back(raw_buffer(bytes, kind == Buffers::distinct_huge ||
                                                (kind == Buffers::window && bytes >= troupe::detail::kFreshMemoryFrom)));
  }
  /// Seconds for windows * window messages.
  double once() {
    const std::size_t total = static_cast<std::size_t>(window_) * static_cast<std::size_t>(windows_);
    if (fresh_ && rank == 0)  // one vector per message, and a window more for the warm-up
      sent_.assign(total + static_cast<std::size_t>(window_), std::vector<double>(bytes_ / sizeof(double), 1.0));
    MPI_Barrier(comm_);
    // One untimed window first, as OSU's benchmarks skip their first
    // iterations: what it frees, the timed windows reuse (docs/benchmarks.md,
    // "first window"). It sends the buffers the last timed window sends again
    // (touched when they were made, and long out of cache by then).
    window_of(total - static_cast<std::size_t>(window_), total);
    const auto t0 = Clock::now();
    for (std::size_t k = 0; k < total; k += static_cast<std::size_t>(window_)) window_of(k, k);
    return secs(Clock::now() - t0);
  }

 private:
  /// One window: messages k.. from buffers k.. (sent_[v..] for fresh vectors), then the ack.
  void window_of(std::size_t k, std::size_t v) {
    char ack = 0;
    int n = 0;  // requests posted
    if (rank == 0) {
      const std::size_t first = v;
      for (int i = 0; i < window_; ++i, ++k, ++v) {
        if (announced_)
          MPI_Isend(headers_[static_cast<std::size_t>(i)].data(), kHeader, MPI_BYTE, 1, 4, comm_,
                    &reqs_[static_cast<std::size_t>(n++)]);
        const void* from = fresh_ ? static_cast<const void*>(sent_[v].data()) : bufs_[k % bufs_.size()].get();
        MPI_Isend(from, static_cast<int>(bytes_), MPI_BYTE, 1, 2, comm_, &reqs_[static_cast<std::size_t>(n++)]);
      }
      if (fresh_) {
        // Each vector is freed as soon as its send is done, as troupe frees a sent vector.
        for (int done = 0; done < n; ++done) {
          int idx = MPI_UNDEFINED;
          MPI_Waitany(n, reqs_.data(), &idx, MPI_STATUS_IGNORE);
          if (idx != MPI_UNDEFINED) std::vector<double>().swap(sent_[first + static_cast<std::size_t>(idx)]);
        }
      } else {
        MPI_Waitall(n, reqs_.data(), MPI_STATUSES_IGNORE);
      }
      MPI_Recv(&ack, 1, MPI_BYTE, 1, 3, comm_, MPI_STATUS_IGNORE);
    } else if (rank == 1) {
      for (int i = 0; i < window_; ++i) {
        if (announced_)
          MPI_Recv(headers_[static_cast<std::size_t>(i)].data(), kHeader, MPI_BYTE, 0, 4, comm_, MPI_STATUS_IGNORE);
        char* into = nullptr;
        if (fresh_) {
          auto& vec = received_[static_cast<std::size_t>(i)];
          vec = std::vector<double>(bytes_ / sizeof(double));  // makes a new vector, then frees the last window's
          into = reinterpret_cast<char*>(vec.data());
        } else {
          into = bufs_[static_cast<std::size_t>(i) % bufs_.size()].get();
        }
        MPI_Irecv(into, static_cast<int>(bytes_), MPI_BYTE, 0, 2, comm_, &reqs_[static_cast<std::size_t>(n++)]);
      }
      MPI_Waitall(n, reqs_.data(), MPI_STATUSES_IGNORE);
      MPI_Send(&ack, 1, MPI_BYTE, 0, 3, comm_);
    }
  }

  MPI_Comm comm_;
  std::size_t bytes_;
  int window_, windows_;
  bool announced_;
  bool fresh_ = false;
  std::vector<RawBuffer> bufs_;
  std::vector<std::vector<double>> sent_, received_;  // fresh_vectors: the sender's, the receiver's window
  std::vector<MPI_Request> reqs_;
  static constexpr int kHeader = 96;  // about a troupe envelope with one block, in its frame
  std::vector<std::array<char, kHeader>> headers_;
};

/// Per-round samples of one figure: raw MPI's and troupe's, measured in turn.
struct Paired {
  std::vector<double> raw, troupe;
  /// troupe/raw in each round, then its median, min and max as JSON fields
  /// (prefix_ratio, prefix_ratio_min, prefix_ratio_max); without a prefix, every
  /// round of both as well.
  std::string ratios(const std::string& prefix, const std::vector<double>& base) const {
    std::vector<double> r;
    for (std::size_t i = 0; i < troupe.size() && i < base.size(); ++i) r.push_back(troupe[i] / base[i]);
    if (r.empty()) return "";
    const auto [lo, hi] = std::minmax_element(r.begin(), r.end());
    auto list = [](const std::vector<double>& v) {
      std::string out = "[";
      for (double x : v) {
        if (out.size() > 1) out += ',';
        out += std::to_string(x);
      }
      return out + "]";
    };
    std::string out;
    if (prefix.empty())  // every round's figures, for whoever wants to look closer
      out += ",\"troupe_rounds\":" + list(troupe) + ",\"mpi_rounds\":" + list(base);
    for (const auto& [name, value] : {std::pair{"ratio", median(r)}, std::pair{"ratio_min", *lo}, std::pair{"ratio_max", *hi}})
      out.append(",\"").append(prefix).append(name).append("\":").append(std::to_string(value));
    return out;
  }
};

/// Waits until every rank got here, politely (see wait_politely). Built from
/// point-to-point messages: a pending MPI_Ibarrier keeps a collective schedule
/// alive, and every MPI call of the waiting rank's runtime then ran its
/// progress too (libnbc: 2-3 % of the answering rank's samples in the
/// round-trip benchmark, a cost raw MPI's rounds do not pay).
void sync_politely(MPI_Comm comm) {
  constexpr int kTag = 0x5e11;
  int size = 0;
  MPI_Comm_size(comm, &size);
  char token = 0, reply = 0;
  if (rank != 0) {
    MPI_Request reqs[2];
    MPI_Isend(&token, 1, MPI_CHAR, 0, kTag, comm, &reqs[0]);
    MPI_Irecv(&reply, 1, MPI_CHAR, 0, kTag, comm, &reqs[1]);
    wait_politely(reqs[0]);
    wait_politely(reqs[1]);
    return;
  }
  std::vector<char> tokens(static_cast<std::size_t>(size));
  std::vector<MPI_Request> reqs(static_cast<std::size_t>(size), MPI_REQUEST_NULL);
  for (int r = 1; r < size; ++r) MPI_Irecv(&tokens[r], 1, MPI_CHAR, r, kTag, comm, &reqs[r]);
  for (int r = 1; r < size; ++r) wait_politely(reqs[r]);
  for (int r = 1; r < size; ++r) MPI_Isend(&token, 1, MPI_CHAR, r, kTag, comm, &reqs[r]);
  for (int r = 1; r < size; ++r) wait_politely(reqs[r]);
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
    if (std::strcmp(argv[i], "--rtt-iters") == 0 && i + 1 < argc) rtt_iters_arg = std::stoi(argv[++i]);
  }
  MPI_Comm raw;
  MPI_Comm_dup(MPI_COMM_WORLD, &raw);

  const int rtt_iters = rtt_iters_arg > 0 ? rtt_iters_arg : quick ? 2000 : 20000;  // more: for profiling
  const int rate_window = 64;
  // Whole windows: the raw stream sends rate_msgs / rate_window of them.
  const int rate_msgs = (quick ? 100000 : 1000000) / rate_window * rate_window;
  // The raw round trip and message rate also with nothing else in the
  // process, before troupe starts (the paired rounds run beside an idle
  // runtime; the machine's speed may change in between, so this is a sanity
  // check, not a measure of that runtime's cost: docs/benchmarks.md has one).
  std::vector<double> alone_rtt, alone_rtt_nonblocking, alone_rate;
  for (int rep = 0; rep < 5 && want("rtt"); ++rep) {
    alone_rtt.push_back(mpi_rtt_us(raw, rtt_iters));
    alone_rtt_nonblocking.push_back(mpi_rtt_nonblocking_us(raw, rtt_iters));
  }
  if (want("rate")) {
    RawStream s(raw, 8, rate_window, rate_msgs / rate_window);
    for (int rep = 0; rep < 5; ++rep) alone_rate.push_back(rate_msgs / s.once());
  }
  MPI_Barrier(MPI_COMM_WORLD);

  {
    troupe::Runtime rt(troupe::adopt(MPI_COMM_WORLD));
    troupe::ActorId sink_id = 0;
    if (rt.node() == 1) sink_id = rt.spawn<bench::Sink>().id();
    MPI_Bcast(&sink_id, sizeof(sink_id), MPI_BYTE, 1, MPI_COMM_WORLD);  // tests-and-benchmarks only
    troupe::ActorRef<bench::Sink> sink(&rt.core(), 1, sink_id);
    // Every figure is measured in rounds: raw MPI on its own communicator (both
    // ranks), then troupe (rank 0 drives; rank 1's main thread waits politely
    // while its runtime answers). Raw MPI's speed on this machine jumps by 2-3x
    // within a run, so the ratio reported is the median of each round's own.
    auto round = [&](Paired& p, auto&& raw_once, auto&& troupe_once) {
      p.raw.push_back(raw_once());
      // A profiling library (MPI's PMPI interface: bench/dist/mpi_census.c)
      // counts from MPI_Pcontrol(1) to MPI_Pcontrol(0): troupe's rounds alone.
      MPI_Pcontrol(1);
      if (rank == 0) p.troupe.push_back(troupe_once());
      sync_politely(raw);
      MPI_Pcontrol(0);
    };

    if (want("rtt")) {
      if (rank == 0)
        for (int i = 0; i < 1000; ++i) sink.ask<&bench::Sink::echo>(std::uint64_t(i)).get();
      // Rank 1 must not wait in the first raw round's blocking receive while
      // its runtime answers the warm-up: spinning in MPI_Recv there, it slowed
      // each warm-up ask over TCP to 1.5 ms (1.5 s for the thousand).
      sync_politely(raw);
      Paired p;
      troupe::detail::stage::reset();  // a build with TROUPE_STAGE_PROBES: the timed rounds only
      for (int rep = 0; rep < 7; ++rep)
        round(p, [&] { return mpi_rtt_us(raw, rtt_iters); },
              [&] {
                auto t0 = Clock::now();
                for (int i = 0; i < rtt_iters; ++i) {
                  TROUPE_STAGE(ask_begin);
                  sink.ask<&bench::Sink::echo>(std::uint64_t(i)).get();
                  TROUPE_STAGE(ask_end);
                }
                return secs(Clock::now() - t0) / rtt_iters * 1e6;
              });
      if (rank == 0)
        emit("rtt", "ask 8 B", median(p.troupe), median(p.raw), "us",
           ",\"goal\":\"<= 1.5x mpi\"" + p.ratios("", p.raw) + ",\"mpi_alone\":" + std::to_string(median(alone_rtt)) +
               ",\"mpi_nonblocking_alone\":" + std::to_string(median(alone_rtt_nonblocking)));
      // One more round of each, every round trip timed on its own (the two
      // clock reads would add to the rounds above, so they are kept apart):
      // the figures above are means, and a few slow round trips move a mean.
      std::vector<double> raw_each = mpi_rtt_each_us(raw, rtt_iters), troupe_each;
      if (rank == 0) {
        troupe_each.reserve(static_cast<std::size_t>(rtt_iters));
        for (int i = 0; i < rtt_iters; ++i) {
          const auto t0 = Clock::now();
          sink.ask<&bench::Sink::echo>(std::uint64_t(i)).get();
          troupe_each.push_back(secs(Clock::now() - t0) * 1e6);
        }
        emit_tail(troupe_each, raw_each);
      }
      sync_politely(raw);
      if constexpr (troupe::detail::stage::enabled) {
        // Each rank's steps between probes (bench/run_stages.sh reads them).
        std::string steps = troupe::detail::stage::report(static_cast<std::uint64_t>(rtt_iters));
        std::size_t from = 0;
        while (from < steps.size()) {
          const std::size_t end = std::min(steps.find('\n', from), steps.size());
          std::printf("{\"bench\":\"stages\",\"transport\":\"%s\",\"rank\":%d,%s\n", label.c_str(), rank,
                      steps.substr(from + 1, end - from - 1).c_str());
          from = end + 1;
        }
        std::fflush(stdout);
      }
    }
    if (want("rate")) {
      RawStream stream(raw, 8, rate_window, rate_msgs / rate_window);
      if (rank == 0) {  // warm-up (frame pools, batches), as raw MPI had its own runs before
        for (int i = 0; i < rate_msgs; ++i) sink.tell<&bench::Sink::take>(std::uint64_t(i));
        sink.ask<&bench::Sink::count>().get();
      }
      sync_politely(raw);  // as after the round trip's warm-up
      Paired p;
      std::vector<double> sending;
      for (int rep = 0; rep < 5; ++rep)
        round(p, [&] { return rate_msgs / stream.once(); },
              [&] {
                auto t0 = Clock::now();
                for (int i = 0; i < rate_msgs; ++i) sink.tell<&bench::Sink::take>(std::uint64_t(i));
                sending.push_back(secs(Clock::now() - t0) / rate_msgs * 1e9);  // the sender's own cost per tell
                sink.ask<&bench::Sink::count>().get();
                return rate_msgs / secs(Clock::now() - t0);
              });
      if (rank == 0)
        emit("rate", "tell 8 B", median(p.troupe), median(p.raw), "msg/s",
           ",\"goal\":\">= 1.0x mpi\"" + p.ratios("", p.raw) + ",\"send_ns_per_tell\":" +
               std::to_string(median(sending)) + ",\"mpi_alone\":" + std::to_string(median(alone_rate)));
    }
    // Bandwidth: vectors or Arrays moved into tells, a window at a time, one
    // ask per window; and Arrays taken from the pool as they are sent, the
    // steady state of a producer. Otherwise every window's data is made before the clock starts, so
    // the stream is continuous, as raw MPI's is (building it between windows
    // left the receiver idle long enough to back off into sleeps, which the
    // next window then waited out: that measured wake-up, not bandwidth).
    std::vector<std::size_t> sizes;
    if (want("bw"))
      for (std::size_t s = min_bytes; s <= max_bytes; s *= 4) sizes.push_back(s);
    for (const std::size_t bytes : sizes) {
      const int window = bytes >= (1u << 20) ? 4 : 32;
      const std::size_t target = quick ? (64u << 20) : (512u << 20);  // bytes per measurement
      const int windows = static_cast<int>(std::max<std::size_t>(2, target / (bytes * static_cast<std::size_t>(window))));
      const std::size_t total = static_cast<std::size_t>(window) * static_cast<std::size_t>(windows);
      const double moved = static_cast<double>(bytes) * static_cast<double>(total) / 1e6;  // MB
      // Huge pages only where troupe maps blocks on them (each buffer takes whole ones).
      const bool huge = bytes >= troupe::detail::kFreshMemoryFrom;
      Paired one, distinct, distinct_huge, windowed, announced, fresh, vec, vec_ref, arr, pooled;
      {
        RawStream s_one(raw, bytes, window, windows), s_distinct(raw, bytes, window, windows, Buffers::distinct),
            s_window(raw, bytes, window, windows, Buffers::window),
            s_fresh(raw, bytes, window, windows, Buffers::fresh_vectors);
        // Only sizes that troupe sends as blocks (smaller ones share frames).
        const bool blocks = bytes >= troupe::detail::kSegmentThreshold;
        std::unique_ptr<RawStream> s_announced;
        if (blocks) s_announced = std::make_unique<RawStream>(raw, bytes, window, windows, Buffers::window, true);
        std::unique_ptr<RawStream> s_huge;
        if (huge) s_huge = std::make_unique<RawStream>(raw, bytes, window, windows, Buffers::distinct_huge);
        for (int rep = 0; rep < 3; ++rep) {
          one.raw.push_back(moved / s_one.once());
          distinct.raw.push_back(moved / s_distinct.once());
          windowed.raw.push_back(moved / s_window.once());
          fresh.raw.push_back(moved / s_fresh.once());
          if (blocks) announced.raw.push_back(moved / s_announced->once());
          if (huge) distinct_huge.raw.push_back(moved / s_huge->once());
          // troupe's four kinds of payload, in an order that rotates (each
          // starts the round in one of the three rounds but one), and each alone between
          // barriers (run back to back, a payload measured what ran
          // before it too: pooled 64 KiB over shm 6.0-6.2 GB/s, alone 7.7-8.4).
          for (int k = 0; k < 4; ++k) {
            if (rank == 0) {
              const std::size_t n = bytes / sizeof(double);
              // next(i) sends message i; i = total.. is the untimed warm-up window, as in RawStream::once().
              auto stream = [&](auto&& next, Paired& into) {
                for (std::size_t i = total; i < total + static_cast<std::size_t>(window); ++i) next(i);
                sink.ask<&bench::Sink::count>().get();
                const auto t0 = Clock::now();
                for (std::size_t i = 0; i < total; ++i) {
                  next(i);
                  if ((i + 1) % static_cast<std::size_t>(window) == 0) sink.ask<&bench::Sink::count>().get();
                }
                into.troupe.push_back(moved / secs(Clock::now() - t0));
              };
              switch ((k + rep) % 4) {
                case 0: {  // std::vector, each made (and filled) before the clock starts
                  std::vector<std::vector<double>> data(total + static_cast<std::size_t>(window), std::vector<double>(n, 1.0));
                  stream([&](std::size_t i) { sink.tell<&bench::Sink::take_vec>(std::move(data[i])); }, vec);
                  break;
                }
                case 3: {  // the same, to a method that takes its vector by const&
                  std::vector<std::vector<double>> data(total + static_cast<std::size_t>(window), std::vector<double>(n, 1.0));
                  stream([&](std::size_t i) { sink.tell<&bench::Sink::take_vec_ref>(std::move(data[i])); }, vec_ref);
                  break;
                }
                case 1: {  // troupe::Array, each made (and filled) before the clock starts
                  std::vector<troupe::Array<double>> arrays;
                  arrays.reserve(total + static_cast<std::size_t>(window));
                  for (std::size_t i = 0; i < total + static_cast<std::size_t>(window); ++i) arrays.emplace_back(n, 1.0);
                  stream([&](std::size_t i) { sink.tell<&bench::Sink::take_array>(std::move(arrays[i])); }, arr);
                  break;
                }
                default:  // troupe::Array taken from the pool as it is sent (a producer's steady state), not written
                  stream([&](std::size_t) { sink.tell<&bench::Sink::take_array>(troupe::Array<double>(n)); }, pooled);
              }
            }
            sync_politely(raw);
          }
        }
      }
      if (rank != 0) continue;
      for (Paired* t : {&vec, &vec_ref, &arr, &pooled}) {
        char what[64];
        std::snprintf(what, sizeof what,
                      t == &vec       ? "%zu B"
                      : t == &vec_ref ? "%zu B const&"
                      : t == &arr     ? "%zu B Array"
                                      : "%zu B Array pooled",
                      bytes);
        std::string extra = ",\"bytes\":" + std::to_string(bytes) + t->ratios("", one.raw) +
                            ",\"mpi_distinct\":" + std::to_string(median(distinct.raw)) +
                            t->ratios("distinct_", distinct.raw) +
                            ",\"mpi_window\":" + std::to_string(median(windowed.raw)) + t->ratios("window_", windowed.raw);
        if (t == &vec || t == &vec_ref)
          extra += ",\"mpi_fresh\":" + std::to_string(median(fresh.raw)) + t->ratios("fresh_", fresh.raw);
        if (!announced.raw.empty())
          extra += ",\"mpi_announced\":" + std::to_string(median(announced.raw)) + t->ratios("announced_", announced.raw);
        if (huge)
          extra += ",\"mpi_distinct_huge\":" + std::to_string(median(distinct_huge.raw)) +
                   t->ratios("huge_", distinct_huge.raw);
        emit("bw", what, median(t->troupe), median(one.raw), "MB/s", extra);
      }
    }
    if (want("idle")) {
      // CPU time over wall time, per rank: while every thread has nothing to
      // do, then while rank 0's main thread waits in get() for a reply that
      // takes 1 s (rank 1's worker sleeps in the actor meanwhile).
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
