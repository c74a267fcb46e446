// Must not compile: TROUPE_REMOTE_DEFINE of a class that was never declared
// remote (TROUPE_REMOTE_DECLARE), so spawn_on could not spawn it. Built only by
// the test unit.remote_define_undeclared_refused (tests/unit/CMakeLists.txt),
// which expects the runtime's message.
#include "troupe/remote.hpp"

namespace sim {

class Probe {
 public:
  int size() const { return 1; }
};

TROUPE_REMOTE_DEFINE(Probe, troupe::init<>, &Probe::size);

}  // namespace sim
