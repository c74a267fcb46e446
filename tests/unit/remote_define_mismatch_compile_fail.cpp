// Must not compile: TROUPE_REMOTE_DEFINE with constructor arguments other than
// the ones TROUPE_REMOTE_DECLARE gave spawn_on (a spawn would send an int and
// the registration decode a string). Built only by the test
// unit.remote_define_mismatch_refused (tests/unit/CMakeLists.txt), which
// expects the runtime's message.
#include <string>

#include "troupe/remote.hpp"

namespace sim {

class Probe {
 public:
  explicit Probe(std::string where) : where_(std::move(where)) {}
  std::size_t size() const { return where_.size(); }

 private:
  std::string where_;
};
TROUPE_REMOTE_DECLARE(Probe, troupe::init<int>);

TROUPE_REMOTE_DEFINE(Probe, troupe::init<std::string>, &Probe::size);

}  // namespace sim
