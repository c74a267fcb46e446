// Small deterministic random number generator and the distributions the
// simulation needs (hand-written so a seed gives the same run on every
// standard library).
#pragma once

#include <cmath>
#include <cstdint>

namespace fault_sim {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) {
    std::uint64_t x = seed;
    for (auto& w : s_) w = splitmix(x);
  }

  std::uint64_t next() {
    const std::uint64_t r = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }

  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  /// Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) { return static_cast<std::uint64_t>(uniform() * static_cast<double>(n)); }
  double exponential(double mean) { return -mean * std::log1p(-uniform()); }
  /// Standard normal (Marsaglia's polar method; the second value is kept).
  double normal() {
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    double x, y, s;
    do {
      x = 2.0 * uniform() - 1.0;
      y = 2.0 * uniform() - 1.0;
      s = x * x + y * y;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * std::log(s) / s);
    spare_ = y * f;
    have_spare_ = true;
    return x * f;
  }
  /// Lognormal with the given median and shape sigma.
  double lognormal(double median, double sigma) { return median * std::exp(sigma * normal()); }
  /// Pareto with the given mean and tail index alpha > 1.
  double pareto(double mean, double alpha) {
    const double xm = mean * (alpha - 1.0) / alpha;
    return xm / std::pow(1.0 - uniform(), 1.0 / alpha);
  }

  static std::uint64_t splitmix(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
  double spare_ = 0;
  bool have_spare_ = false;
};

}  // namespace fault_sim
