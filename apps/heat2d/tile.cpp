#include "tile.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace heat {

Tile::Tile(Params p, std::size_t ti, std::size_t tj, troupe::ActorRef<Collector> collector)
    : p_(p), ti_(ti), tj_(tj), w_(p.n / p.tiles), collector_(collector) {
  cur_.assign((w_ + 2) * (w_ + 2), 0.0);
  if (ti_ == 0)
    for (std::size_t j = 0; j < w_ + 2; ++j) at(0, j) = 1.0;  // the hot edge
  next_ = cur_;
}

void Tile::start(std::vector<troupe::ActorRef<Tile>> neighbours) {
  nb_ = std::move(neighbours);
  needed_ = static_cast<int>(std::count_if(nb_.begin(), nb_.end(), [](auto& r) { return r.valid(); }));
  send_edges();
  try_step();
}

std::vector<double> Tile::edge(int side) const {
  std::vector<double> e(w_);
  for (std::size_t k = 0; k < w_; ++k) {
    switch (side) {
      case north: e[k] = at(1, k + 1); break;
      case south: e[k] = at(w_, k + 1); break;
      case west: e[k] = at(k + 1, 1); break;
      default: e[k] = at(k + 1, w_); break;
    }
  }
  return e;
}

void Tile::send_edges() {
  // My north edge is my northern neighbour's southern halo, and so on.
  static constexpr int opposite[4] = {south, north, east, west};
  for (int side = 0; side < 4; ++side)
    if (nb_[side].valid()) nb_[side].tell<&Tile::halo>(step_, opposite[side], edge(side));
}

void Tile::halo(std::size_t step, int side, std::vector<double> values) {
  auto slot = step % 2;
  pending_[slot][side] = std::move(values);
  ++have_[slot];
  try_step();
}

void Tile::try_step() {
  while (step_ < p_.steps && have_[step_ % 2] == needed_) {
    auto slot = step_ % 2;
    for (int side = 0; side < 4; ++side) {
      auto& h = pending_[slot][side];
      if (h.empty()) continue;
      for (std::size_t k = 0; k < w_; ++k) {
        switch (side) {
          case north: at(0, k + 1) = h[k]; break;
          case south: at(w_ + 1, k + 1) = h[k]; break;
          case west: at(k + 1, 0) = h[k]; break;
          default: at(k + 1, w_ + 1) = h[k]; break;
        }
      }
      h.clear();
    }
    have_[slot] = 0;
    double residual = 0.0;
    const std::size_t stride = w_ + 2;
    for (std::size_t i = 1; i <= w_; ++i) {
      for (std::size_t j = 1; j <= w_; ++j) {
        double v = 0.25 * (cur_[(i - 1) * stride + j] + cur_[(i + 1) * stride + j] + cur_[i * stride + j - 1] +
                           cur_[i * stride + j + 1]);
        residual = std::max(residual, std::abs(v - cur_[i * stride + j]));
        next_[i * stride + j] = v;
      }
    }
    // Keep the halo ring (boundary values) in next_ as in cur_.
    for (std::size_t i = 1; i <= w_; ++i)
      for (std::size_t j = 1; j <= w_; ++j) cur_[i * stride + j] = next_[i * stride + j];
    ++step_;
    if (step_ % p_.report_every == 0 || step_ == p_.steps) collector_.tell<&Collector::progress>(step_, residual);
    if (step_ == p_.steps) {
      collector_.tell<&Collector::done>(ti_ * p_.tiles + tj_, sum());
      return;
    }
    send_edges();
  }
}

double Tile::sum() const {
  double s = 0.0;
  for (std::size_t i = 1; i <= w_; ++i)
    for (std::size_t j = 1; j <= w_; ++j) s += at(i, j);
  return s;
}

std::vector<double> Tile::interior() const {
  std::vector<double> out;
  for (std::size_t i = 1; i <= w_; ++i)
    for (std::size_t j = 1; j <= w_; ++j) out.push_back(at(i, j));
  return out;
}

Collector::Collector(Params p, std::size_t tiles) : p_(p), tiles_(tiles) {}

void Collector::progress(std::size_t step, double residual) {
  std::size_t idx = (step + p_.report_every - 1) / p_.report_every - 1;
  if (residuals_.size() <= idx) residuals_.resize(idx + 1, {0, 0.0});
  auto& [count, worst] = residuals_[idx];
  ++count;
  worst = std::max(worst, residual);
  if (count == tiles_) {
    std::printf("  step %6zu / %zu  residual %.3e\n", step, p_.steps, worst);
    std::fflush(stdout);
  }
}

void Collector::done(std::size_t tile, double sum) {
  sums_.resize(tiles_, 0.0);
  sums_[tile] = sum;
  if (++finished_ < tiles_) return;
  double total = 0.0;  // in tile order, so the result does not depend on arrival order
  for (double s : sums_) total += s;
  result_.set_value(total);
}

troupe::Future<double> Collector::result() { return result_.get_future(); }

double serial_sum(const Params& p) {
  const std::size_t n = p.n, stride = n + 2;
  std::vector<double> cur(stride * stride, 0.0), next;
  for (std::size_t j = 0; j < stride; ++j) cur[j] = 1.0;
  next = cur;
  for (std::size_t s = 0; s < p.steps; ++s) {
    for (std::size_t i = 1; i <= n; ++i)
      for (std::size_t j = 1; j <= n; ++j)
        next[i * stride + j] =
            0.25 * (cur[(i - 1) * stride + j] + cur[(i + 1) * stride + j] + cur[i * stride + j - 1] + cur[i * stride + j + 1]);
    std::swap(cur, next);
  }
  // Sum tile by tile, as the tiles and the Collector do.
  const std::size_t w = n / p.tiles;
  double total = 0.0;
  for (std::size_t ti = 0; ti < p.tiles; ++ti) {
    for (std::size_t tj = 0; tj < p.tiles; ++tj) {
      double s = 0.0;
      for (std::size_t i = 1; i <= w; ++i)
        for (std::size_t j = 1; j <= w; ++j) s += cur[(ti * w + i) * stride + tj * w + j];
      total += s;
    }
  }
  return total;
}

TROUPE_REMOTE_DEFINE(Tile, troupe::init<Params, std::size_t, std::size_t, troupe::ActorRef<Collector>>, &Tile::start,
                     &Tile::halo, &Tile::sum, &Tile::interior);
TROUPE_REMOTE_DEFINE(Collector, troupe::init<Params, std::size_t>, &Collector::progress, &Collector::done);

}  // namespace heat
