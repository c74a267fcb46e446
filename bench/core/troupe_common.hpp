// troupe-side helpers shared by the core benchmarks.
#pragma once

#include <troupe/config.hpp>

#include <cstddef>

#include "harness.hpp"

namespace bench_troupe {

/// The runtime configuration every troupe benchmark uses: the requested
/// worker count and pinning, everything else at its default.
inline troupe::Config config(const bench::Options& o) {
  troupe::Config c;
  c.threads = static_cast<std::size_t>(o.threads);
  if (o.pinning == "none") c.pinning = troupe::Pinning::none;
  else if (o.pinning == "scatter") c.pinning = troupe::Pinning::scatter;
  else c.pinning = troupe::Pinning::compact;
  if (o.extra.count("batch")) c.batch = static_cast<std::size_t>(o.get("batch", 64, false));
  return c;
}

}  // namespace bench_troupe
