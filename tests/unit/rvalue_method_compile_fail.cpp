// Must not compile: an &&-qualified method. An actor is an object that lives
// on, never an rvalue, so such a method can never be called on it. Built
// only by the test unit.rvalue_method_refused (tests/unit/CMakeLists.txt),
// which expects the compiler's message.
#include "troupe/troupe.hpp"

namespace {

class Once {
 public:
  int consume() && { return 1; }
};

}  // namespace

int use(troupe::Runtime& rt) { return rt.spawn<Once>().ask<&Once::consume>().get(); }
