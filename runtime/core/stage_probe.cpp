// Stage probes (include/troupe/detail/stage_probe.hpp).
#include "troupe/detail/stage_probe.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace troupe::detail::stage {

const char* name(Stage s) noexcept {
  static constexpr std::array<const char*, static_cast<std::size_t>(Stage::count)> names{
      "ask_begin",  "ask_end",      "post",     "isend_begin", "isend_end", "send_now_done",
      "frame_landed", "frame_read", "on_call",  "on_reply",    "frame_done", "reply_begin",
      "actor_found", "inbound_made", "ready_listed", "delivering", "in_mailbox", "inline_turns", "batch_runs"};
  const auto i = static_cast<std::size_t>(s);
  return i < names.size() ? names[i] : "?";
}

#ifdef TROUPE_STAGE_PROBES
namespace {

constexpr int kStages = static_cast<int>(Stage::count);

std::uint64_t ticks() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  return __rdtsc();
#else
  return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

struct Table {
  std::atomic<std::uint64_t> sum[kStages][kStages];
  std::atomic<std::uint64_t> count[kStages][kStages];
  std::atomic<std::uint64_t> start_ticks{0};
  std::atomic<std::int64_t> start_ns{0};
  std::atomic<std::uint64_t> generation{0};  // raised by reset(): each thread's chain starts anew
};
constinit Table table{};  // zero-initialised: no dynamic initialisation to order

thread_local int last = -1;
thread_local std::uint64_t last_ticks = 0;
thread_local std::uint64_t generation = 0;

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void at(Stage s) noexcept {
  const std::uint64_t t = ticks();
  const int to = static_cast<int>(s);
  if (const auto g = table.generation.load(std::memory_order_relaxed); g != generation) {
    generation = g;  // the first probe since a reset: no step spans the reset
    last = -1;
  }
  if (last >= 0) {
    table.sum[last][to].fetch_add(t - last_ticks, std::memory_order_relaxed);
    table.count[last][to].fetch_add(1, std::memory_order_relaxed);
  }
  last = to;
  last_ticks = ticks();  // the probe's own bookkeeping is not counted in the next step
}

void reset() noexcept {
  for (auto& row : table.sum)
    for (auto& v : row) v.store(0, std::memory_order_relaxed);
  for (auto& row : table.count)
    for (auto& v : row) v.store(0, std::memory_order_relaxed);
  table.start_ticks.store(ticks());
  table.start_ns.store(now_ns());
  table.generation.fetch_add(1);
}

std::string report(std::uint64_t min_count) {
  const double elapsed_ns = static_cast<double>(now_ns() - table.start_ns.load());
  const double elapsed_ticks = static_cast<double>(ticks() - table.start_ticks.load());
  const double ns_per_tick = elapsed_ticks > 0 ? elapsed_ns / elapsed_ticks : 1.0;
  std::string out;
  for (int a = 0; a < kStages; ++a)
    for (int b = 0; b < kStages; ++b) {
      const std::uint64_t n = table.count[a][b].load(std::memory_order_relaxed);
      if (n < min_count || n == 0) continue;
      const double ns = static_cast<double>(table.sum[a][b].load(std::memory_order_relaxed)) * ns_per_tick /
                        static_cast<double>(n);
      char line[160];
      std::snprintf(line, sizeof line, "{\"from\":\"%s\",\"to\":\"%s\",\"count\":%llu,\"ns\":%.1f}",
                    name(static_cast<Stage>(a)), name(static_cast<Stage>(b)), static_cast<unsigned long long>(n), ns);
      if (!out.empty()) out += '\n';
      out += line;
    }
  return out;
}
#endif

}  // namespace troupe::detail::stage
