// fault_sim: discrete-event simulation of troupe's failure detector and
// failure broadcast at 1,000 to 1,000,000 nodes (no MPI, no troupe library).
//
//   fault_sim selftest
//       checks the news tree against the runtime's construction
//   fault_sim suite --json F --md F [--quick | --full] [--no-1m] [--seed S] [--meta k=v]...
//       every scenario of bench/results/fault_sim.md (run.sh runs this)
//   fault_sim run --n N --scenario single|adjacent|frac:X [--runs R]
//       [--timeout-ms T] [--period-ms P] [--pmix off|watcher|all] [--seed S]
//       one configuration; one line per run, then medians
//   fault_sim fp [--n N] [--node-hours H] [--p P] [--dist exp|pareto]
//       [--alpha A] [--stall-mean-ms M]
//       false-positive count under progress-thread stalls
//
// The model is described in docs/fault_tolerance_sim.md; the protocol code is
// in sim.cpp, next to the runtime functions it mirrors.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "sim.hpp"

using namespace fault_sim;

namespace {

// ---------------------------------------------------------------------------
// Small helpers.

struct Summary {
  double median = 0, min = 0, max = 0;
  std::size_t count = 0;  // values that exist (a run may not produce one)
};

Summary summarize(std::vector<double> v) {
  Summary s;
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return x < 0; }), v.end());
  s.count = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const std::size_t k = v.size();
  s.median = k % 2 ? v[k / 2] : 0.5 * (v[k / 2 - 1] + v[k / 2]);
  s.min = v.front();
  s.max = v.back();
  return s;
}

std::string fmt(double x, int prec = 3) {
  if (x == 0) return "0";
  char buf[64];
  const double a = std::fabs(x);
  if (a >= 1e6 || a < 1e-3)
    std::snprintf(buf, sizeof buf, "%.*g", prec, x);
  else if (a >= 100)
    std::snprintf(buf, sizeof buf, "%.0f", x);
  else
    std::snprintf(buf, sizeof buf, "%.*g", prec, x);
  return buf;
}

std::string fmt_count(std::uint64_t n) {
  std::string s = std::to_string(n), out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

std::uint64_t hash_str(const std::string& s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::uint64_t run_seed(std::uint64_t base, const std::string& name, int run) {
  std::uint64_t x = base ^ hash_str(name) ^ (0x51ed270b27ULL * static_cast<std::uint64_t>(run + 1));
  return Rng::splitmix(x);
}

// JSON output, written by hand (flat objects and arrays are all we need).
class Json {
 public:
  Json& open(const std::string& key, char bracket) {
    item(key);
    out_ << bracket;
    first_ = true;
    ++depth_;
    return *this;
  }
  Json& close(char bracket) {
    --depth_;
    out_ << '\n' << std::string(2 * depth_, ' ') << bracket;
    first_ = false;
    return *this;
  }
  Json& num(const std::string& key, double v) {
    item(key);
    if (std::isfinite(v)) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.10g", v);
      out_ << buf;
    } else {
      out_ << "null";
    }
    return *this;
  }
  Json& str(const std::string& key, const std::string& v) {
    item(key);
    out_ << '"';
    for (char c : v) {
      if (c == '"' || c == '\\') out_ << '\\';
      out_ << c;
    }
    out_ << '"';
    return *this;
  }
  Json& boolean(const std::string& key, bool v) {
    item(key);
    out_ << (v ? "true" : "false");
    return *this;
  }
  Json& summary(const std::string& key, const Summary& s) {
    open(key, '{').num("median", s.median).num("min", s.min).num("max", s.max).num("runs_with_value", s.count);
    return close('}');
  }
  std::string text() const { return out_.str() + "\n"; }

 private:
  void item(const std::string& key) {
    if (!first_) out_ << ',';
    first_ = false;
    if (depth_ > 0) out_ << '\n' << std::string(2 * depth_, ' ');
    if (!key.empty()) out_ << '"' << key << "\": ";
  }
  std::ostringstream out_;
  bool first_ = true;
  int depth_ = 0;
};

// ---------------------------------------------------------------------------
// Failure experiments.

struct FailCfg {
  std::string group;     // which table it belongs to
  std::string scenario;  // single | adjacent | frac
  std::uint32_t n = 1000;
  double frac = 0.0;
  int runs = 20;
  Ns timeout = 600 * kMs;
  Pmix pmix = Pmix::off;
  Ns period = 100 * kMs;

  std::string name() const {
    std::string s = group + "/" + scenario + "/n" + std::to_string(n);
    if (scenario == "frac") s += "/" + fmt(frac * 100) + "%";
    s += "/T" + std::to_string(timeout / kMs);
    if (period != 100 * kMs) s += "/P" + std::to_string(period / kMs);
    if (pmix != Pmix::off) s += pmix == Pmix::watcher ? "/pmix-watcher" : "/pmix-all";
    return s;
  }
  std::string scenario_label() const {
    if (scenario == "single") return "1 node";
    if (scenario == "adjacent") return "2 ring neighbours";
    return fmt(frac * 100) + "% of nodes (" + fmt_count(static_cast<std::uint64_t>(std::llround(frac * n))) + ")";
  }
};

struct FailOutcome {
  FailCfg cfg;
  std::vector<RunResult> runs;
  std::map<std::string, Summary> s;
  int agree = 0, exact = 0;
  std::uint64_t false_decl = 0, expelled = 0;
  double wall = 0;
};

std::vector<std::uint32_t> pick_crashes(const FailCfg& c, Rng& rng) {
  std::vector<std::uint32_t> out;
  if (c.scenario == "single") {
    out.push_back(static_cast<std::uint32_t>(rng.below(c.n)));
  } else if (c.scenario == "adjacent") {
    const auto x = static_cast<std::uint32_t>(rng.below(c.n));
    out = {x, (x + 1) % c.n};
  } else {
    const auto k = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::llround(c.frac * c.n)));
    std::vector<std::uint8_t> taken(c.n, 0);
    while (out.size() < k) {
      const auto x = static_cast<std::uint32_t>(rng.below(c.n));
      if (!taken[x]) {
        taken[x] = 1;
        out.push_back(x);
      }
    }
  }
  return out;
}

// The longest run of consecutive ids (on the ring, wrapping) that all died:
// the watchers find them one after the other, one timeout each.
std::uint32_t longest_dead_run(std::vector<std::uint32_t> dead, std::uint32_t n) {
  if (dead.empty()) return 0;
  if (dead.size() == n) return n;
  std::sort(dead.begin(), dead.end());
  std::uint32_t best = 1, cur = 1;
  for (std::size_t i = 1; i < dead.size(); ++i) {
    cur = dead[i] == dead[i - 1] + 1 ? cur + 1 : 1;
    best = std::max(best, cur);
  }
  if (dead.front() == 0 && dead.back() == n - 1) {  // a run across the wrap
    std::uint32_t head = 1, tail = 1;
    while (head < dead.size() && dead[head] == head) ++head;
    while (tail < dead.size() && dead[dead.size() - 1 - tail] == n - 1 - tail) ++tail;
    best = std::max(best, head + tail);
  }
  return best;
}

FailOutcome run_failure(const FailCfg& c, std::uint64_t base_seed, bool verbose) {
  FailOutcome o;
  o.cfg = c;
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < c.runs; ++r) {
    const std::uint64_t seed = run_seed(base_seed, c.name(), r);
    Rng pick(seed);
    Params p;
    p.n = c.n;
    p.timeout = c.timeout;
    p.period = c.period;
    p.pmix = c.pmix;
    p.crashes = pick_crashes(c, pick);
    p.crash_time = p.warmup + static_cast<Ns>(pick.below(static_cast<std::uint64_t>(p.period)));
    p.seed = seed ^ 0xa5a5a5a5a5a5a5a5ULL;
    Sim sim(p);
    o.runs.push_back(sim.run());
    o.runs.back().longest_dead_run = longest_dead_run(p.crashes, p.n);
    const RunResult& x = o.runs.back();
    o.agree += x.agree;
    o.exact += x.exact;
    o.false_decl += x.false_declarations;
    o.expelled += x.expelled;
    if (verbose)
      std::fprintf(stderr,
                   "  run %2d: detect %.1f..%.1f ms, all know %.1f ms, hops %u, ring %llu, trees %llu, agree %d "
                   "exact %d, false %llu, %llu events, %.2f s\n",
                   r, x.detect_first_ms, x.detect_last_ms, x.all_know_ms, x.max_tree_hops,
                   static_cast<unsigned long long>(x.learned_by_ring), static_cast<unsigned long long>(x.broadcasts),
                   x.agree, x.exact, static_cast<unsigned long long>(x.false_declarations),
                   static_cast<unsigned long long>(x.events), x.wall_seconds);
  }
  o.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto field = [&](const std::string& key, const std::function<double(const RunResult&)>& f) {
    std::vector<double> v;
    for (const auto& x : o.runs) v.push_back(f(x));
    o.s[key] = summarize(v);
  };
  field("detect_first_ms", [](const RunResult& x) { return x.detect_first_ms; });
  field("detect_last_ms", [](const RunResult& x) { return x.detect_last_ms; });
  field("all_know_ms", [](const RunResult& x) { return x.all_know_ms; });
  field("news_after_detect_ms", [](const RunResult& x) {
    return x.all_know_ms >= 0 && x.detect_last_ms >= 0 ? x.all_know_ms - x.detect_last_ms : -1.0;
  });
  field("max_tree_hops", [](const RunResult& x) { return x.max_tree_hops; });
  field("learned_by_ring", [](const RunResult& x) { return static_cast<double>(x.learned_by_ring); });
  field("learned_by_pmix", [](const RunResult& x) { return static_cast<double>(x.learned_by_pmix); });
  field("broadcasts", [](const RunResult& x) { return static_cast<double>(x.broadcasts); });
  field("steady_hb_msgs_per_node_s", [](const RunResult& x) { return x.steady_hb_msgs_per_node_s; });
  field("steady_bytes_per_node_s", [](const RunResult& x) { return x.steady_bytes_per_node_s; });
  field("post_msgs_per_node_s", [](const RunResult& x) { return x.post_msgs_per_node_s; });
  field("post_hb_msgs_per_node_s", [](const RunResult& x) { return x.post_hb_msgs_per_node_s; });
  field("post_bytes_per_node_s", [](const RunResult& x) { return x.post_bytes_per_node_s; });
  field("lost_msgs_per_survivor", [](const RunResult& x) { return x.lost_msgs_per_survivor; });
  field("lost_bytes_per_survivor", [](const RunResult& x) { return x.lost_bytes_per_survivor; });
  field("longest_dead_run", [](const RunResult& x) { return x.longest_dead_run; });
  field("events", [](const RunResult& x) { return static_cast<double>(x.events); });
  field("wall_seconds", [](const RunResult& x) { return x.wall_seconds; });
  return o;
}

void print_outcome(const FailOutcome& o) {
  auto g = [&](const char* k) { return o.s.at(k); };
  std::fprintf(stderr,
               "%-40s runs %d: detect %s (%s) ms, all know %s (%s) ms, hops %s, ring %s, trees %s, LOST/survivor "
               "%s, agree %d/%d exact %d/%d, false %llu, %.1f s\n",
               o.cfg.name().c_str(), o.cfg.runs, fmt(g("detect_last_ms").median).c_str(),
               fmt(g("detect_last_ms").max).c_str(), fmt(g("all_know_ms").median).c_str(),
               fmt(g("all_know_ms").max).c_str(), fmt(g("max_tree_hops").max).c_str(),
               fmt(g("learned_by_ring").median).c_str(), fmt(g("broadcasts").median).c_str(),
               fmt(g("lost_msgs_per_survivor").median).c_str(), o.agree, o.cfg.runs, o.exact, o.cfg.runs,
               static_cast<unsigned long long>(o.false_decl), o.wall);
}

// ---------------------------------------------------------------------------
// False positives under progress-thread stalls.

struct FpCfg {
  StallDist dist = StallDist::exponential;
  double p = 0.1;  // expected stalls per heartbeat period
  double alpha = 3.0;
  Ns stall_mean = 30 * kMs;
  double node_hours = 1000;
  std::uint32_t n = 256;
  std::string label() const {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%s, mean %lld ms, p = %g", dist == StallDist::exponential ? "exponential" : "Pareto",
                  static_cast<long long>(stall_mean / kMs), p);
    std::string s = buf;
    if (dist == StallDist::pareto) s += " (alpha " + fmt(alpha) + ")";
    return s;
  }
};

struct FpOutcome {
  FpCfg cfg;
  std::vector<Ns> timeouts;
  RunResult r;
  std::vector<double> analytic;  // expected false declarations per node-hour
};

// The chance a stall silences a node long enough: stalls start at a uniform
// offset u in the heartbeat period; the next heartbeat leaves at the end of the
// stall if that is later than it was due, so the gap is max(P, u + D); a
// watcher ticking every tau (random phase) declares when a tick falls more than
// T after the last arrival: probability clamp((gap - T) / tau, 0, 1).
double analytic_rate(const Params& p, const FpCfg& c, Ns timeout) {
  const double P = static_cast<double>(p.period) / kMs, tau = static_cast<double>(p.tick) / kMs;
  const double T = static_cast<double>(timeout) / kMs, mu = static_cast<double>(c.stall_mean) / kMs;
  auto survival = [&](double x) {
    if (x <= 0) return 1.0;
    if (c.dist == StallDist::exponential) return std::exp(-x / mu);
    const double xm = mu * (c.alpha - 1) / c.alpha;
    return x < xm ? 1.0 : std::pow(xm / x, c.alpha);
  };
  const int nu = 400, nx = 100;
  double acc = 0;
  for (int i = 0; i < nu; ++i) {
    const double u = (i + 0.5) * P / nu;
    double inner = 0;
    for (int k = 0; k < nx; ++k) inner += survival(T - u + (k + 0.5) * tau / nx);
    acc += inner / nx;
  }
  const double per_stall = acc / nu;
  const double stalls_per_hour = 3600e3 / (P / c.p + mu);  // stalls start only while running
  return per_stall * stalls_per_hour;
}

FpOutcome run_fp(const FpCfg& c, const std::vector<Ns>& timeouts, std::uint64_t base_seed) {
  FpOutcome o;
  o.cfg = c;
  o.timeouts = timeouts;
  Params p;
  p.n = c.n;
  p.stall_p = c.p;
  p.stall_mean = c.stall_mean;
  p.stall_dist = c.dist;
  p.pareto_alpha = c.alpha;
  p.count_timeouts = timeouts;
  p.warmup = 1 * kSec;
  p.duration = static_cast<Ns>(c.node_hours * 3600.0 / c.n * kSec);
  p.seed = run_seed(base_seed, "fp/" + c.label(), 0);
  Sim sim(p);
  o.r = sim.run();
  for (Ns t : timeouts) o.analytic.push_back(analytic_rate(p, c, t));
  return o;
}

void print_fp(const FpOutcome& o) {
  std::fprintf(stderr, "stalls %s: %.0f node-hours, %llu stalls, %.1f s\n", o.cfg.label().c_str(), o.r.node_hours,
               static_cast<unsigned long long>(o.r.stalls), o.r.wall_seconds);
  for (std::size_t j = 0; j < o.timeouts.size(); ++j)
    std::fprintf(stderr, "  T = %4lld ms: %llu false declarations = %.3g per node-hour (model %.3g)\n",
                 static_cast<long long>(o.timeouts[j] / kMs), static_cast<unsigned long long>(o.r.would_declare[j]),
                 o.r.would_declare[j] / o.r.node_hours, o.analytic[j]);
}

// ---------------------------------------------------------------------------
// The suite: every figure of bench/results/fault_sim.md.

struct Suite {
  std::vector<FailOutcome> fail;
  std::vector<FpOutcome> fp;
  std::vector<Ns> fp_timeouts;
  std::vector<std::pair<std::string, std::string>> meta;
  double wall = 0;
  std::uint64_t seed = 0;
};

const FailOutcome* find(const Suite& s, const std::string& group, const std::string& scen, std::uint32_t n,
                        Ns timeout = 600 * kMs, Pmix pmix = Pmix::off) {
  for (const auto& o : s.fail)
    if (o.cfg.group == group && o.cfg.scenario == scen && o.cfg.n == n && o.cfg.timeout == timeout &&
        o.cfg.pmix == pmix)
      return &o;
  return nullptr;
}

std::string med_max(const Summary& s, int prec = 3) {
  if (s.count == 0) return "–";
  return fmt(s.median, prec) + " (" + fmt(s.max, prec) + ")";
}

std::string write_json(const Suite& s) {
  Params d;
  Json j;
  j.open("", '{');
  j.open("machine", '{');
  for (const auto& [k, v] : s.meta) j.str(k, v);
  j.num("suite_wall_seconds", s.wall).str("seed", std::to_string(s.seed));
  j.close('}');
  j.open("defaults", '{')
      .num("heartbeat_period_ms", d.period / 1e6)
      .num("heartbeat_timeout_ms", d.timeout / 1e6)
      .num("tick_ms", d.tick / 1e6)
      .num("latency_median_us", d.latency_median / 1e3)
      .num("latency_lognormal_sigma", d.latency_sigma)
      .num("send_cost_us", d.send_cost / 1e3)
      .num("header_bytes", d.header_bytes)
      .num("id_bytes", d.id_bytes)
      .num("pmix_period_ms", d.pmix_period / 1e6)
      .num("pmix_cost_ms", d.pmix_cost / 1e6)
      .num("warmup_ms", d.warmup / 1e6)
      .close('}');
  j.open("failure", '[');
  for (const auto& o : s.fail) {
    j.open("", '{');
    j.str("name", o.cfg.name()).str("group", o.cfg.group).str("scenario", o.cfg.scenario);
    j.num("n", o.cfg.n).num("crashed", o.runs.empty() ? 0 : o.runs[0].survivors ? o.cfg.n - o.runs[0].survivors : 0);
    j.num("runs", o.cfg.runs).num("timeout_ms", o.cfg.timeout / 1e6);
    j.str("pmix", o.cfg.pmix == Pmix::off ? "off" : o.cfg.pmix == Pmix::watcher ? "watcher" : "all");
    j.num("runs_agreeing", o.agree).num("runs_exact", o.exact);
    j.num("false_declarations", static_cast<double>(o.false_decl)).num("expelled", static_cast<double>(o.expelled));
    j.num("wall_seconds", o.wall);
    j.open("summary", '{');
    for (const auto& [k, v] : o.s) j.summary(k, v);
    j.close('}');
    j.open("per_run", '[');
    for (const auto& x : o.runs) {
      j.open("", '{')
          .num("detect_first_ms", x.detect_first_ms)
          .num("detect_last_ms", x.detect_last_ms)
          .num("all_know_ms", x.all_know_ms)
          .num("max_tree_hops", x.max_tree_hops)
          .num("learned_by_tree", static_cast<double>(x.learned_by_tree))
          .num("learned_by_ring", static_cast<double>(x.learned_by_ring))
          .num("learned_by_pmix", static_cast<double>(x.learned_by_pmix))
          .num("broadcasts", static_cast<double>(x.broadcasts))
          .num("false_declarations", static_cast<double>(x.false_declarations))
          .num("expelled", static_cast<double>(x.expelled))
          .boolean("agree", x.agree)
          .boolean("exact", x.exact)
          .num("final_set_size", x.final_set_size)
          .num("survivors", x.survivors)
          .num("longest_dead_run", x.longest_dead_run)
          .num("steady_hb_msgs_per_node_s", x.steady_hb_msgs_per_node_s)
          .num("steady_bytes_per_node_s", x.steady_bytes_per_node_s)
          .num("post_msgs_per_node_s", x.post_msgs_per_node_s)
          .num("post_bytes_per_node_s", x.post_bytes_per_node_s)
          .num("lost_msgs_per_survivor", x.lost_msgs_per_survivor)
          .num("lost_bytes_per_survivor", x.lost_bytes_per_survivor)
          .num("events", static_cast<double>(x.events))
          .num("sim_seconds", x.sim_seconds)
          .num("wall_seconds", x.wall_seconds)
          .close('}');
    }
    j.close(']');
    j.close('}');
  }
  j.close(']');
  j.open("false_positives", '[');
  for (const auto& o : s.fp) {
    j.open("", '{');
    j.str("stalls", o.cfg.label())
        .str("distribution", o.cfg.dist == StallDist::exponential ? "exponential" : "pareto")
        .num("stalls_per_period", o.cfg.p)
        .num("stall_mean_ms", o.cfg.stall_mean / 1e6)
        .num("pareto_alpha", o.cfg.dist == StallDist::pareto ? o.cfg.alpha : 0)
        .num("ring_nodes", o.cfg.n)
        .num("node_hours", o.r.node_hours)
        .num("stalls_simulated", static_cast<double>(o.r.stalls))
        .num("wall_seconds", o.r.wall_seconds);
    j.open("by_timeout", '[');
    for (std::size_t k = 0; k < o.timeouts.size(); ++k) {
      const double cnt = static_cast<double>(o.r.would_declare[k]);
      j.open("", '{')
          .num("timeout_ms", o.timeouts[k] / 1e6)
          .num("false_declarations", cnt)
          .num("per_node_hour", cnt / o.r.node_hours)
          .num("per_node_hour_upper95", (cnt == 0 ? 3.0 : cnt + 2.0 * std::sqrt(cnt) + 1.0) / o.r.node_hours)
          .num("per_node_hour_model", o.analytic[k])
          .close('}');
    }
    j.close(']');
    j.close('}');
  }
  j.close(']');
  j.close('}');
  return j.text();
}

std::string write_md(const Suite& s) {
  std::ostringstream md;
  const std::vector<std::uint32_t> sizes = {1000, 10000, 100000, 1000000};
  md << "# Failure detector simulation\n\n"
     << "Generated by `bench/fault_sim/run.sh` (discrete-event model of `runtime/cluster/`, described in "
        "`docs/fault_tolerance_sim.md`). Defaults: heartbeat period P = 100 ms, timeout T = 600 ms, progress tick "
        "10 ms, hop latency lognormal (median 5 us, sigma 0.5) + 2 us sender CPU per message, heartbeat 64 B + 4 B "
        "per lost id. Times are from the death; **median (worst)** over the runs.\n\n";

  md << "## Cost per node\n\n"
     << "| nodes | heartbeats /node/s | bytes /node/s (no failure) | msgs /node/s, second after 1 death | bytes "
        "/node/s, same | LOST msgs per survivor per death |\n|--:|--:|--:|--:|--:|--:|\n";
  for (auto n : sizes) {
    const FailOutcome* o = find(s, "main", "single", n);
    if (!o) continue;
    md << "| " << fmt_count(n) << " | " << fmt(o->s.at("steady_hb_msgs_per_node_s").median) << " | "
       << fmt(o->s.at("steady_bytes_per_node_s").median) << " | " << fmt(o->s.at("post_msgs_per_node_s").median)
       << " | " << fmt(o->s.at("post_bytes_per_node_s").median) << " | "
       << fmt(o->s.at("lost_msgs_per_survivor").median) << " |\n";
  }
  md << "\n";

  md << "## Detection and news\n\n"
     << "dead in a row: the longest run of consecutive dead ids on the ring (median (max) over runs); detect: until the last dead node is declared; all know: until every survivor has every dead node in its "
        "lost set; news: all know minus detect; hops: deepest tree hop that taught a survivor (log2 n for "
        "reference); ring: (survivor, dead node) pairs learnt from a heartbeat instead of the tree (median per "
        "run); trees: broadcasts started; agree: runs in which all survivors ended with the same set, exact: ... "
        "and it was exactly the dead nodes.\n\n"
     << "| nodes | deaths | runs | dead in a row | detect ms | all know ms | news ms | hops (log2 n) | ring | "
        "trees | LOST msgs /survivor | LOST KB /survivor | agree | exact | false decl. |\n"
     << "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
  for (auto n : sizes)
    for (const char* scen : {"single", "adjacent", "frac"}) {
      const FailOutcome* o = find(s, "main", scen, n);
      if (!o) continue;
      md << "| " << fmt_count(n) << " | " << o->cfg.scenario_label() << " | " << o->cfg.runs << " | "
         << med_max(o->s.at("longest_dead_run")) << " | " << med_max(o->s.at("detect_last_ms")) << " | " << med_max(o->s.at("all_know_ms")) << " | "
         << med_max(o->s.at("news_after_detect_ms")) << " | " << fmt(o->s.at("max_tree_hops").max) << " ("
         << fmt(std::log2(static_cast<double>(n)), 3) << ") | " << fmt(o->s.at("learned_by_ring").median) << " | "
         << fmt(o->s.at("broadcasts").median) << " | " << fmt(o->s.at("lost_msgs_per_survivor").median) << " | "
         << fmt(o->s.at("lost_bytes_per_survivor").median / 1024.0) << " | " << o->agree << "/" << o->cfg.runs
         << " | " << o->exact << "/" << o->cfg.runs << " | " << o->false_decl << " |\n";
    }
  md << "\n";

  bool any_pmix = false;
  for (const auto& o : s.fail) any_pmix |= o.cfg.pmix != Pmix::off;
  if (any_pmix) {
    md << "## With launcher (PMIx) polling\n\n"
       << "Every node polls the process table every 50 ms (~0.75 ms CPU each: 1.5% of a core per node); the "
          "launcher is assumed to know of the death at once. watcher: a node acts only on its own (dead) "
          "predecessor: declares it and starts the tree; all: every node that sees a death it has not heard of "
          "yet declares it and starts a tree. Rows with PMIx off are the same runs as above.\n\n"
       << "| nodes | deaths | PMIx | runs | detect ms | all know ms | trees | LOST msgs /survivor | agree | exact "
          "|\n|--:|---|---|--:|--:|--:|--:|--:|--:|--:|\n";
    for (auto n : sizes)
      for (const char* scen : {"single", "adjacent", "frac"}) {
        std::vector<const FailOutcome*> rows;
        for (Pmix pm : {Pmix::watcher, Pmix::all})
          if (const FailOutcome* o = find(s, "pmix", scen, n, 600 * kMs, pm)) rows.push_back(o);
        if (rows.empty()) continue;
        if (const FailOutcome* o = find(s, "main", scen, n)) rows.insert(rows.begin(), o);
        for (const FailOutcome* o : rows)
          md << "| " << fmt_count(n) << " | " << o->cfg.scenario_label() << " | "
             << (o->cfg.pmix == Pmix::off ? "off" : o->cfg.pmix == Pmix::watcher ? "watcher" : "all") << " | "
             << o->cfg.runs << " | " << med_max(o->s.at("detect_last_ms")) << " | "
             << med_max(o->s.at("all_know_ms")) << " | " << med_max(o->s.at("broadcasts")) << " | "
             << fmt(o->s.at("lost_msgs_per_survivor").median) << " | " << o->agree << "/" << o->cfg.runs << " | "
             << o->exact << "/" << o->cfg.runs << " |\n";
      }
    md << "\n";
  }

  if (!s.fp.empty()) {
    md << "## Timeout trade-off: detection against false declarations\n\n"
       << "False declarations: a ring of " << s.fp[0].cfg.n
       << " live nodes whose progress threads are descheduled at random (stalls start as a Poisson process, p "
          "expected stalls per heartbeat period; while stalled a node neither sends nor handles messages, then "
          "drains its inbox and ticks). Every watcher counts, for each T at once, the moments it would have "
          "declared its live predecessor lost. Per node-hour: simulated count / exposure, and the closed-form "
          "model (see the doc) in brackets; ≤ x: none seen, 95% upper bound.\n\n";
    md << "| T ms | detect ms, 10,000 nodes | all know ms |";
    for (const auto& f : s.fp) md << " " << f.cfg.label() << " |";
    md << "\n|--:|--:|--:|";
    for (std::size_t i = 0; i < s.fp.size(); ++i) md << "--:|";
    md << "\n";
    for (std::size_t k = 0; k < s.fp_timeouts.size(); ++k) {
      const Ns t = s.fp_timeouts[k];
      const FailOutcome* o = find(s, "main", "single", 10000, t);
      if (!o) o = find(s, "timeout", "single", 10000, t);
      md << "| " << t / kMs << " | " << (o ? med_max(o->s.at("detect_last_ms")) : "–") << " | "
         << (o ? med_max(o->s.at("all_know_ms")) : "–") << " |";
      for (const auto& f : s.fp) {
        const double cnt = static_cast<double>(f.r.would_declare[k]);
        if (cnt == 0)
          md << " ≤ " << fmt(3.0 / f.r.node_hours, 2);
        else
          md << " " << fmt(cnt / f.r.node_hours, 3);
        md << " [" << fmt(f.analytic[k], 2) << "] |";
      }
      md << "\n";
    }
    md << "\nExposure:";
    for (const auto& f : s.fp)
      md << " " << f.cfg.label() << ": " << fmt_count(static_cast<std::uint64_t>(f.r.node_hours)) << " node-hours, "
         << fmt_count(f.r.stalls) << " stalls;";
    md << "\n\n";
  }

  md << "Run:";
  for (const auto& [k, v] : s.meta) md << " " << k << " " << v << ";";
  md << " simulation wall time " << fmt(s.wall) << " s.\n";
  return md.str();
}

Suite run_suite(bool quick, bool full, bool with_1m, std::uint64_t seed) {
  Suite s;
  s.seed = seed;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<FailCfg> cfgs;
  const int R = quick ? 3 : 20;
  for (std::uint32_t n : {1000u, 10000u, 100000u}) {
    if (quick && n == 100000u) continue;
    cfgs.push_back({"main", "single", n, 0, R});
    cfgs.push_back({"main", "adjacent", n, 0, n >= 100000u ? R / 2 : R});
    // 1% of 100,000 nodes is 1,000 trees of 100,000 messages each: ~1 min per run.
    cfgs.push_back({"main", "frac", n, 0.01, n >= 100000u ? (full ? 3 : 1) : R});
  }
  if (with_1m && !quick) cfgs.push_back({"main", "single", 1000000u, 0, 3});
  for (Ns t : {300 * kMs, 400 * kMs, 1000 * kMs}) cfgs.push_back({"timeout", "single", 10000u, 0, R, t});
  for (Pmix pm : {Pmix::watcher, Pmix::all}) cfgs.push_back({"pmix", "single", 10000u, 0, R / 2, 600 * kMs, pm});
  cfgs.push_back({"pmix", "adjacent", 10000u, 0, R / 2, 600 * kMs, Pmix::watcher});
  cfgs.push_back({"pmix", "frac", 10000u, 0.01, R / 2, 600 * kMs, Pmix::watcher});
  if (!quick) {
    cfgs.push_back({"pmix", "single", 100000u, 0, R / 2, 600 * kMs, Pmix::watcher});
    cfgs.push_back({"pmix", "single", 100000u, 0, 3, 600 * kMs, Pmix::all});
  }
  for (const auto& c : cfgs) {
    s.fail.push_back(run_failure(c, seed, false));
    print_outcome(s.fail.back());
  }

  s.fp_timeouts = {300 * kMs, 400 * kMs, 600 * kMs, 1000 * kMs};
  const double nh = quick ? 50 : full ? 10000 : 2000;
  std::vector<FpCfg> fps = {
      {StallDist::exponential, 0.01, 3.0, 30 * kMs, nh},
      {StallDist::exponential, 0.1, 3.0, 30 * kMs, nh},
      {StallDist::exponential, 0.1, 3.0, 60 * kMs, nh},
      {StallDist::pareto, 0.1, 3.0, 30 * kMs, nh},
  };
  for (const auto& f : fps) {
    s.fp.push_back(run_fp(f, s.fp_timeouts, seed));
    print_fp(s.fp.back());
  }
  s.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Self-test of the tree: against the runtime's construction (explicit live
// list), every live node gets the news exactly once, in at most ceil(log2 m) hops.

int selftest() {
  Rng rng(7);
  std::vector<std::uint32_t> kids, ref;
  long trees = 0;
  for (std::uint32_t n = 2; n <= 100; ++n) {
    for (int trial = 0; trial < 10; ++trial) {
      std::vector<std::uint32_t> lost, live;
      const double frac = trial == 0 ? 0.0 : rng.uniform() * 0.6;
      for (std::uint32_t id = 0; id < n; ++id) (rng.uniform() < frac ? lost : live).push_back(id);
      if (live.empty()) continue;
      const std::size_t m = live.size();
      const int max_depth = m > 1 ? static_cast<int>(std::ceil(std::log2(static_cast<double>(m)))) : 0;
      for (std::uint32_t root : live) {
        std::vector<int> got(n, 0), depth(n, 0);
        std::vector<std::uint32_t> frontier = {root};
        got[root] = 1;
        while (!frontier.empty()) {
          std::vector<std::uint32_t> next;
          for (std::uint32_t u : frontier) {
            tree_children(lost, n, root, u, kids);
            // The runtime's way: relative index in the explicit live list.
            ref.clear();
            const std::size_t ri = static_cast<std::size_t>(std::find(live.begin(), live.end(), root) - live.begin());
            const std::size_t ui = static_cast<std::size_t>(std::find(live.begin(), live.end(), u) - live.begin());
            const std::size_t i = (ui + m - ri) % m;
            for (std::size_t step = 1; step < m; step <<= 1) {
              if (step <= i) continue;
              if (i + step >= m) break;
              ref.push_back(live[(ri + i + step) % m]);
            }
            if (kids != ref) {
              std::fprintf(stderr, "selftest: n %u root %u node %u: children differ from the runtime's\n", n, root, u);
              return 1;
            }
            for (std::uint32_t c : kids) {
              ++got[c];
              depth[c] = depth[u] + 1;
              next.push_back(c);
            }
          }
          frontier.swap(next);
        }
        for (std::uint32_t v : live)
          if (got[v] != 1 || depth[v] > max_depth) {
            std::fprintf(stderr, "selftest: n %u root %u: node %u got the news %d times at depth %d (max %d)\n", n,
                         root, v, got[v], depth[v], max_depth);
            return 1;
          }
        ++trees;
      }
    }
  }
  std::fprintf(stderr, "selftest: %ld trees ok (each live node reached once, depth <= ceil(log2 m))\n", trees);
  return 0;
}

struct Args {
  std::vector<std::string> v;
  std::string get(const std::string& key, const std::string& dflt) const {
    for (std::size_t i = 0; i + 1 < v.size(); ++i)
      if (v[i] == key) return v[i + 1];
    return dflt;
  }
  bool has(const std::string& key) const { return std::find(v.begin(), v.end(), key) != v.end(); }
};

int usage() {
  std::fprintf(stderr,
               "usage: fault_sim selftest\n"
               "       fault_sim suite --json F --md F [--quick | --full] [--no-1m] [--seed S] [--meta k=v]...\n"
               "       fault_sim run --n N --scenario single|adjacent|frac:X [--runs R] [--timeout-ms T]\n"
               "                     [--period-ms P] [--pmix off|watcher|all] [--seed S]\n"
               "       fault_sim fp [--n N] [--node-hours H] [--p P] [--dist exp|pareto] [--alpha A]\n"
               "                    [--stall-mean-ms M]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string mode = argv[1];
  if (mode == "selftest") return selftest();
  Args a{std::vector<std::string>(argv + 2, argv + argc)};
  const std::uint64_t seed = std::stoull(a.get("--seed", "20261124"));
  try {
    if (mode == "suite") {
      Suite s = run_suite(a.has("--quick"), a.has("--full"), !a.has("--no-1m"), seed);
      for (std::size_t i = 0; i + 1 < a.v.size(); ++i)
        if (a.v[i] == "--meta") {
          const std::string kv = a.v[i + 1];
          const auto eq = kv.find('=');
          if (eq != std::string::npos) s.meta.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
        }
      const std::string json = a.get("--json", ""), md = a.get("--md", "");
      if (!json.empty()) std::ofstream(json) << write_json(s);
      if (!md.empty()) std::ofstream(md) << write_md(s);
      if (json.empty() && md.empty()) std::cout << write_md(s);
      return 0;
    }
    if (mode == "run") {
      FailCfg c;
      c.group = "cli";
      c.n = static_cast<std::uint32_t>(std::stoul(a.get("--n", "1000")));
      std::string scen = a.get("--scenario", "single");
      if (scen.rfind("frac:", 0) == 0) {
        c.frac = std::stod(scen.substr(5));
        scen = "frac";
      }
      c.scenario = scen;
      c.runs = std::stoi(a.get("--runs", "5"));
      c.timeout = std::stoll(a.get("--timeout-ms", "600")) * kMs;
      c.period = std::stoll(a.get("--period-ms", "100")) * kMs;
      const std::string pm = a.get("--pmix", "off");
      c.pmix = pm == "watcher" ? Pmix::watcher : pm == "all" ? Pmix::all : Pmix::off;
      print_outcome(run_failure(c, seed, true));
      return 0;
    }
    if (mode == "fp") {
      FpCfg f;
      f.n = static_cast<std::uint32_t>(std::stoul(a.get("--n", "256")));
      f.node_hours = std::stod(a.get("--node-hours", "1000"));
      f.p = std::stod(a.get("--p", "0.1"));
      f.dist = a.get("--dist", "exp") == "pareto" ? StallDist::pareto : StallDist::exponential;
      f.alpha = std::stod(a.get("--alpha", "3"));
      f.stall_mean = std::stoll(a.get("--stall-mean-ms", "30")) * kMs;
      print_fp(run_fp(f, {300 * kMs, 400 * kMs, 600 * kMs, 1000 * kMs}, seed));
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fault_sim: %s\n", e.what());
    return 1;
  }
  return usage();
}
