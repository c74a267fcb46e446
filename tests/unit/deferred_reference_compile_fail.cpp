// Must not compile: a method that returns a Future by reference. An ask
// yields what a Future or Task result completes with, so it must be returned
// by value (the actor hands it over). Built only by the test
// unit.deferred_reference_refused (tests/unit/CMakeLists.txt), which expects
// the compiler's message.
#include <utility>

#include "troupe/troupe.hpp"

namespace {

class Later {
 public:
  troupe::Future<int>&& take() { return std::move(next_); }

 private:
  troupe::Future<int> next_;
};

}  // namespace

int use(troupe::Runtime& rt) { return rt.spawn<Later>().ask<&Later::take>().get(); }
