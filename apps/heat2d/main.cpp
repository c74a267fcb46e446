// heat2d: 2-D heat diffusion with one actor per tile.
//   heat2d [--n N] [--tiles T] [--steps S] [--report R] [--no-check]
// Prints progress, the plate's total heat, and whether it matches a serial run.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tile.hpp"

int main(int argc, char** argv) {
  heat::Params p;
  bool check = true;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char* name) { return std::strcmp(argv[i], name) == 0 && i + 1 < argc; };
    if (arg("--n")) p.n = std::stoul(argv[++i]);
    else if (arg("--tiles")) p.tiles = std::stoul(argv[++i]);
    else if (arg("--steps")) p.steps = std::stoul(argv[++i]);
    else if (arg("--report")) p.report_every = std::stoul(argv[++i]);
    else if (std::strcmp(argv[i], "--no-check") == 0) check = false;
    else {
      std::fprintf(stderr, "usage: %s [--n N] [--tiles T] [--steps S] [--report R] [--no-check]\n", argv[0]);
      return 2;
    }
  }
  if (p.n % p.tiles != 0 || p.steps == 0 || p.report_every == 0) {
    std::fprintf(stderr, "heat2d: n must be a multiple of tiles; steps and report must be positive\n");
    return 2;
  }

  troupe::Runtime rt;
  std::printf("heat2d: %zux%zu plate, %zux%zu tiles, %zu steps, %zu worker thread(s)\n", p.n, p.n, p.tiles,
              p.tiles, p.steps, rt.threads());
  auto t0 = std::chrono::steady_clock::now();
  const std::size_t T = p.tiles;
  auto collector = rt.spawn<heat::Collector>(p, T * T);
  std::vector<troupe::ActorRef<heat::Tile>> tiles;
  for (std::size_t i = 0; i < T; ++i)
    for (std::size_t j = 0; j < T; ++j) tiles.push_back(rt.spawn<heat::Tile>(p, i, j, collector));
  auto result = collector.ask<&heat::Collector::result>();
  for (std::size_t i = 0; i < T; ++i) {
    for (std::size_t j = 0; j < T; ++j) {
      std::vector<troupe::ActorRef<heat::Tile>> nb(4);
      if (i > 0) nb[heat::north] = tiles[(i - 1) * T + j];
      if (i + 1 < T) nb[heat::south] = tiles[(i + 1) * T + j];
      if (j > 0) nb[heat::west] = tiles[i * T + j - 1];
      if (j + 1 < T) nb[heat::east] = tiles[i * T + j + 1];
      tiles[i * T + j].tell<&heat::Tile::start>(std::move(nb));
    }
  }
  double total = result.get();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("heat2d: total heat %.12f after %zu steps (%.3f s, %.1f Mcell-updates/s)\n", total, p.steps, secs,
              static_cast<double>(p.n * p.n * p.steps) / secs / 1e6);
  int rc = 0;
  if (check) {
    double ref = heat::serial_sum(p);
    bool same = total == ref;
    std::printf("heat2d: serial reference %.12f -> %s\n", ref, same ? "MATCH" : "MISMATCH");
    rc = same ? 0 : 1;
  }
  rt.finish();
  return rc;
}
