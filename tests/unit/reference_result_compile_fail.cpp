// Must not compile: a method that returns a reference to a type that cannot
// be copied. An ask yields a copy of what a reference result refers to (made
// in the actor's turn), never the reference itself. Built only by the test
// unit.reference_result_refused (tests/unit/CMakeLists.txt), which expects
// the compiler's message.
#include <memory>

#include "troupe/troupe.hpp"

namespace {

class Owner {
 public:
  std::unique_ptr<int>& slot() { return slot_; }

 private:
  std::unique_ptr<int> slot_;
};

}  // namespace

bool use(troupe::Runtime& rt) { return rt.spawn<Owner>().ask<&Owner::slot>().get() == nullptr; }
