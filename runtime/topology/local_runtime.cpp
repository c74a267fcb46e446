// The local runtime's constructor: the core scheduler plus hwloc placement.
#include "placement.hpp"
#include "troupe/runtime.hpp"

namespace troupe {

Runtime::Runtime(Config cfg) {
  if (cfg.role.empty()) cfg.role = "default";  // as on a cluster node
  auto choice = detail::choose_placement(cfg);
  cfg.threads = choice.threads;
  core_ = std::make_unique<detail::Core>(*this, std::move(cfg), std::move(choice.placement));
}

}  // namespace troupe
