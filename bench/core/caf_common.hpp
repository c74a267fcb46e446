// CAF-side helpers shared by the core benchmarks (CAF 0.17 API).
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "harness.hpp"

namespace bench_caf {

/// The CAF configuration every benchmark uses: the requested number of
/// scheduler workers, everything else at CAF's defaults.
inline void configure(caf::actor_system_config& cfg, const bench::Options& o) {
  cfg.set("scheduler.max-threads", static_cast<int64_t>(o.threads));
  if (o.extra.count("caf-policy")) cfg.set("scheduler.policy", caf::atom_from_string(o.get_str("caf-policy", "stealing")));
  if (o.extra.count("caf-throughput"))
    cfg.set("scheduler.max-throughput", static_cast<int64_t>(o.get("caf-throughput", 0, false)));
}

/// Blocks the calling (non-actor) thread until the request's reply arrives.
template <class T, class Dest, class... Ts>
T request_blocking(caf::actor_system& sys, const Dest& dest, Ts&&... xs) {
  caf::scoped_actor self{sys};
  T out{};
  bool failed = false;
  std::string why;
  self->request(dest, caf::infinite, std::forward<Ts>(xs)...)
      .receive([&](T v) { out = v; },
               [&](caf::error& e) {
                 failed = true;
                 why = sys.render(e);
               });
  if (failed) throw std::runtime_error("CAF request failed: " + why);
  return out;
}

}  // namespace bench_caf
