// Must not compile: spawn_on of a class that is not registered, though its
// base is. Argument-dependent lookup finds the base's descriptor (it searches
// the bases' namespaces); the call would compile and fail only at run time.
// Built only by the test unit.remote_base_only_refused
// (tests/unit/CMakeLists.txt), which expects the runtime's message.
#include "troupe/remote.hpp"

namespace sim {

class Probe {
 public:
  explicit Probe(int size) : size_(size) {}
  int size() const { return size_; }

 private:
  int size_;
};
TROUPE_REMOTE(Probe, troupe::init<int>, &Probe::size);

class LargeProbe : public Probe {
 public:
  explicit LargeProbe(int size) : Probe(2 * size) {}
};

}  // namespace sim

void use(troupe::Runtime& rt) { (void)rt.spawn_on<sim::LargeProbe>(1, 3); }
