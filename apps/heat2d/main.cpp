// heat2d: 2-D heat diffusion with one actor per tile, tiles spread over all
// ranks (tile k on rank k mod size).
//   mpirun -np 4 heat2d [--n N] [--tiles T] [--steps S] [--report R] [--no-check]
// Rank 0 prints progress, the plate's total heat, and whether it matches a
// serial run of the same computation (bit for bit).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "tile.hpp"

namespace {

int drive(troupe::Runtime& rt, const heat::Params& p, bool check) {
  std::printf("heat2d: %zux%zu plate, %zux%zu tiles on %zu rank(s), %zu steps, %zu worker thread(s) per rank\n", p.n,
              p.n, p.tiles, p.tiles, rt.size(), p.steps, rt.threads());
  auto t0 = std::chrono::steady_clock::now();
  const std::size_t T = p.tiles;
  auto collector = rt.spawn<heat::Collector>(p, T * T);
  auto result = collector.ask<&heat::Collector::result>();
  std::vector<troupe::Future<troupe::ActorRef<heat::Tile>>> spawning;
  for (std::size_t i = 0; i < T; ++i)
    for (std::size_t j = 0; j < T; ++j)
      spawning.push_back(rt.spawn_on<heat::Tile>(static_cast<troupe::NodeId>((i * T + j) % rt.size()), p, i, j,
                                                 collector));
  auto tiles = troupe::when_all(std::move(spawning)).get();
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
  if (!check) return 0;
  double ref = heat::serial_sum(p);
  bool same = total == ref;
  std::printf("heat2d: serial reference %.12f -> %s\n", ref, same ? "MATCH" : "MISMATCH");
  return same ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  troupe::Runtime rt(argc, argv);  // takes --troupe-* options out of argv
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
      if (rt.node() == 0)
        std::fprintf(stderr, "usage: %s [--n N] [--tiles T] [--steps S] [--report R] [--no-check]\n", argv[0]);
      rt.finish();
      return 2;
    }
  }
  if (p.n % p.tiles != 0 || p.steps == 0 || p.report_every == 0) {
    if (rt.node() == 0) std::fprintf(stderr, "heat2d: n must be a multiple of tiles; steps and report must be positive\n");
    rt.finish();
    return 2;
  }
  int rc = rt.node() == 0 ? drive(rt, p, check) : 0;
  rt.finish();
  return rc;
}
