// Shared harness of the core benchmarks (troupe side and CAF side alike).
//
// Each repetition runs in a child process forked from an otherwise idle parent,
// so every repetition starts with a fresh runtime, a fresh heap and a fresh
// peak-RSS counter, and the two runtimes never share a process. The child
// reports its figures through a pipe; the parent prints a human summary on
// stderr and one JSON object per benchmark variant on stdout.
//
// Common options: --threads N (worker threads, default 2), --reps N (default
// 5), --scale X (multiplies every problem size, default 1), --timeout S (kill a
// repetition after S seconds, default 180), --no-fork (run the repetitions in
// this process, for profilers), --mode NAME (run only this variant),
// --label NAME (the runtime's name in the output; default "troupe" or "caf").
// troupe only: --pinning none|compact|scatter, --batch N. CAF only:
// --caf-policy stealing|sharing, --caf-throughput N. Benchmark-specific sizes
// are --name=value options read with Options::get() (see each main()).
#pragma once

#include <dirent.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace bench {

// ---- options -----------------------------------------------------------------

struct Options {
  int threads = 2;
  int reps = 5;
  int timeout = 180;  // seconds per repetition (forked runs only)
  double scale = 1.0;
  bool fork = true;
  std::string pinning = "compact";
  std::map<std::string, std::string> extra;

  /// A benchmark size: --name=value, else the default; multiplied by --scale
  /// when `scaled` (never below 1).
  long get(const std::string& name, long dflt, bool scaled = true) const {
    auto it = extra.find(name);
    if (it != extra.end()) return std::atol(it->second.c_str());
    if (!scaled) return dflt;
    return std::max(1L, static_cast<long>(std::llround(static_cast<double>(dflt) * scale)));
  }
  std::string get_str(const std::string& name, const std::string& dflt) const {
    auto it = extra.find(name);
    return it == extra.end() ? dflt : it->second;
  }
};

inline Options parse_options(int argc, char** argv) {
  Options o;
  if (const char* t = std::getenv("BENCH_THREADS")) o.threads = std::atoi(t);
  if (const char* r = std::getenv("BENCH_REPS")) o.reps = std::atoi(r);
  if (const char* s = std::getenv("BENCH_SCALE")) o.scale = std::atof(s);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) continue;
    a = a.substr(2);
    std::string key = a, val;
    auto eq = a.find('=');
    if (eq != std::string::npos) {
      key = a.substr(0, eq);
      val = a.substr(eq + 1);
    } else if (i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0) {
      val = argv[++i];
    }
    if (key == "threads") o.threads = std::atoi(val.c_str());
    else if (key == "reps") o.reps = std::atoi(val.c_str());
    else if (key == "timeout") o.timeout = std::atoi(val.c_str());
    else if (key == "scale") o.scale = std::atof(val.c_str());
    else if (key == "no-fork") o.fork = false;
    else if (key == "pinning") o.pinning = val;
    else o.extra[key] = val;
  }
  if (o.threads < 1) o.threads = 1;
  if (o.reps < 1) o.reps = 1;
  if (!(o.scale > 0)) o.scale = 1.0;
  return o;
}

// ---- measurements --------------------------------------------------------------

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// Resident set size now, from /proc/self/statm.
inline double rss_bytes() {
  long pages_total = 0, pages_resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = 0;
    std::fclose(f);
  }
  return static_cast<double>(pages_resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

/// Peak resident set size of this process so far (getrusage).
inline double peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) * 1024.0;
}

/// Threads of this process right now (the runtime's workers plus helpers).
inline double os_threads() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

/// CPU time (user + system) consumed by this process so far, in seconds.
inline double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

/// CPU seconds the whole machine spent busy so far (all processes), from /proc/stat.
inline double machine_busy_seconds() {
  unsigned long long v[8] = {};
  if (FILE* f = std::fopen("/proc/stat", "r")) {
    if (std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                    &v[6], &v[7]) != 8)
      v[0] = 0;
    std::fclose(f);
  }
  const double busy = static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);  // not idle, not iowait
  return busy / static_cast<double>(sysconf(_SC_CLK_TCK));
}

/// Measures how many CPUs other processes kept busy meanwhile: a noise gauge.
class OthersLoad {
 public:
  OthersLoad() : t0_(Clock::now()), busy0_(machine_busy_seconds()), self0_(cpu_seconds()) {}
  double cpus() const {
    const double dt = std::chrono::duration<double>(Clock::now() - t0_).count();
    const double others = (machine_busy_seconds() - busy0_) - (cpu_seconds() - self0_);
    return dt > 0 ? std::max(0.0, others / dt) : 0.0;
  }

 private:
  Clock::time_point t0_;
  double busy0_, self0_;
};

// ---- repetitions -------------------------------------------------------------------

/// What one repetition reports: named figures.
class Sample {
 public:
  void set(const std::string& name, double v) { values_[name] = v; }
  const std::map<std::string, double>& values() const { return values_; }
  std::map<std::string, double>& values() { return values_; }

 private:
  std::map<std::string, double> values_;
};

/// How a figure is read in the summary.
struct Metric {
  std::string name;
  std::string unit;
  bool higher_is_better;
};

namespace detail {

inline void write_all(int fd, const std::string& s) {
  const char* p = s.data();
  std::size_t left = s.size();
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w <= 0) return;
    p += w;
    left -= static_cast<std::size_t>(w);
  }
}

inline std::string serialize(const Sample& s) {
  std::ostringstream os;
  os.precision(17);
  for (auto& [k, v] : s.values()) os << k << ' ' << v << '\n';
  return os.str();
}

inline Sample deserialize(const std::string& text) {
  Sample s;
  std::istringstream is(text);
  std::string k;
  double v;
  while (is >> k >> v) s.set(k, v);
  return s;
}

}  // namespace detail

/// Runs body once per repetition, each in a fresh child process unless
/// --no-fork. Each sample also gets "others_cpus": the CPUs that other
/// processes of the machine kept busy meanwhile (0 on a quiet machine). A failed repetition (crash, exception, timeout) is reported and
/// left out.
inline std::vector<Sample> run_reps(const Options& o, const std::string& label,
                                    const std::function<void(Sample&)>& body) {
  std::vector<Sample> out;
  for (int r = 0; r < o.reps; ++r) {
    if (!o.fork) {
      Sample s;
      OthersLoad load;
      body(s);
      s.set("others_cpus", load.cpus());
      out.push_back(std::move(s));
      continue;
    }
    int fds[2];
    if (pipe(fds) != 0) {
      std::perror("pipe");
      std::exit(2);
    }
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("fork");
      std::exit(2);
    }
    if (pid == 0) {
      ::close(fds[0]);
      if (o.timeout > 0) ::alarm(static_cast<unsigned>(o.timeout));  // a hung run dies of SIGALRM
      int code = 0;
      try {
        Sample s;
        OthersLoad load;
        body(s);
        s.set("others_cpus", load.cpus());
        detail::write_all(fds[1], detail::serialize(s));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: repetition failed: %s\n", label.c_str(), e.what());
        code = 1;
      }
      ::close(fds[1]);
      std::fflush(nullptr);
      // Skip the runtimes' static destructors: the figures are already out.
      ::_exit(code);
    }
    ::close(fds[1]);
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !text.empty()) {
      out.push_back(detail::deserialize(text));
    } else {
      std::fprintf(stderr, "%s: repetition %d failed (status %d)\n", label.c_str(), r, status);
    }
  }
  return out;
}

// ---- summary -----------------------------------------------------------------------

struct Summary {
  double median = 0, min = 0, max = 0;
  std::vector<double> values;
};

inline Summary summarize(std::vector<double> v) {
  Summary s;
  s.values = v;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  const std::size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return s;
}

inline std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

inline std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o + "\"";
}

/// Prints the summary (stderr) and the JSON record (one line on stdout).
/// `metrics` lists the headline figures in order; other figures in the samples
/// are kept as extras.
inline void report(const Options& o, const std::string& bench, const std::string& runtime,
                   const std::vector<Metric>& metrics, const std::vector<Sample>& samples,
                   const std::map<std::string, double>& params) {
  const std::string label = o.get_str("label", runtime);
  std::map<std::string, std::vector<double>> by_name;
  for (auto& s : samples)
    for (auto& [k, v] : s.values()) by_name[k].push_back(v);

  std::ostringstream js;
  js << "{\"bench\":" << json_string(bench) << ",\"runtime\":" << json_string(label)
     << ",\"threads\":" << o.threads << ",\"reps\":" << samples.size() << ",\"params\":{";
  bool first = true;
  for (auto& [k, v] : params) {
    js << (first ? "" : ",") << json_string(k) << ':' << json_number(v);
    first = false;
  }
  js << "},\"metrics\":{";
  first = true;
  std::fprintf(stderr, "%-22s %-7s threads=%d reps=%zu\n", bench.c_str(), label.c_str(), o.threads,
               samples.size());
  auto emit = [&](const std::string& name, const std::string& unit, int better) {
    auto s = summarize(by_name[name]);
    js << (first ? "" : ",") << json_string(name) << ":{\"unit\":" << json_string(unit)
       << ",\"better\":" << (better > 0 ? "\"higher\"" : better < 0 ? "\"lower\"" : "null")
       << ",\"median\":" << json_number(s.median) << ",\"min\":" << json_number(s.min)
       << ",\"max\":" << json_number(s.max) << ",\"values\":[";
    for (std::size_t i = 0; i < s.values.size(); ++i) js << (i ? "," : "") << json_number(s.values[i]);
    js << "]}";
    first = false;
    std::fprintf(stderr, "  %-24s median %-12.6g min %-12.6g max %-12.6g %s\n", name.c_str(), s.median, s.min,
                 s.max, unit.c_str());
  };
  for (auto& m : metrics) emit(m.name, m.unit, m.higher_is_better ? 1 : -1);
  for (auto& [k, v] : by_name) {
    bool headline = std::any_of(metrics.begin(), metrics.end(), [&](const Metric& m) { return m.name == k; });
    if (!headline) emit(k, "", 0);
  }
  js << "}}";
  std::printf("%s\n", js.str().c_str());
  std::fflush(stdout);
}

}  // namespace bench
