// Must not compile: a method returning Task<R> that takes a reference. Its
// call message is destroyed when the coroutine first waits, so the reference
// would dangle. Built only by the test unit.task_reference_refused
// (tests/unit/CMakeLists.txt), which expects the compiler's message.
#include <vector>

#include "troupe/troupe.hpp"

namespace {

class Reader {
 public:
  troupe::Task<double> first(const std::vector<double>& v) { co_return v.empty() ? 0.0 : v[0]; }
};

}  // namespace

double use(troupe::Runtime& rt) { return rt.spawn<Reader>().ask<&Reader::first>(std::vector<double>{1.0}).get(); }
