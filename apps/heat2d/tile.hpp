// heat2d: 2-D heat diffusion (Jacobi) on a square plate, the grid split into
// tiles, one actor per tile. Tiles swap halo rows/columns with their four
// neighbours every step and report progress to a Collector.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <troupe/remote.hpp>
#include <troupe/troupe.hpp>

namespace heat {

struct Params {
  std::size_t n = 512;       // interior points per side
  std::size_t tiles = 4;     // tiles per side
  std::size_t steps = 500;
  std::size_t report_every = 50;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(n, tiles, steps, report_every);
  }
};

enum Side : int { north = 0, south = 1, west = 2, east = 3 };

class Collector;

/// One tile of the plate. The north edge of the plate is held at 1.0, the
/// others at 0.0.
class Tile {
 public:
  Tile(Params p, std::size_t ti, std::size_t tj, troupe::ActorRef<Collector> collector);

  /// Gives the tile its neighbours (empty refs at the plate's edges) and starts.
  void start(std::vector<troupe::ActorRef<Tile>> neighbours);
  /// A neighbour's edge values for step `step`, arriving from side `side`.
  void halo(std::size_t step, int side, std::vector<double> values);
  /// Sum of this tile's values (for checking).
  double sum() const;
  std::vector<double> interior() const;

 private:
  double& at(std::size_t i, std::size_t j) { return cur_[i * (w_ + 2) + j]; }
  double at(std::size_t i, std::size_t j) const { return cur_[i * (w_ + 2) + j]; }
  void send_edges();
  void try_step();
  std::vector<double> edge(int side) const;

  Params p_;
  std::size_t ti_, tj_, w_;
  troupe::ActorRef<Collector> collector_;
  std::vector<troupe::ActorRef<Tile>> nb_;
  std::vector<double> cur_, next_;
  std::size_t step_ = 0;
  // Halos for this step and the next (a neighbour is at most one step ahead).
  std::vector<double> pending_[2][4];
  int have_[2] = {0, 0};
  int needed_ = 0;
};

/// Gathers per-step residuals and the final sums; prints progress.
class Collector {
 public:
  Collector(Params p, std::size_t tiles);
  void progress(std::size_t step, double residual);
  void done(std::size_t tile, double sum);
  troupe::Future<double> result();

 private:
  Params p_;
  std::size_t tiles_;
  std::vector<std::pair<std::size_t, double>> residuals_;  // per report step: count, max
  std::size_t finished_ = 0;
  std::vector<double> sums_;
  troupe::Promise<double> result_;
};

/// The same computation on one thread, for checking.
double serial_sum(const Params& p);

// Tiles and the Collector may live on any rank. Their wire code is compiled
// once, in tile.cpp (TROUPE_REMOTE_DEFINE), not in every file that includes this.
TROUPE_REMOTE_DECLARE(Tile, troupe::init<Params, std::size_t, std::size_t, troupe::ActorRef<Collector>>);
TROUPE_REMOTE_DECLARE(Collector, troupe::init<Params, std::size_t>);

}  // namespace heat
