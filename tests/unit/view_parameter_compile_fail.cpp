// Must not compile: a method that takes std::string_view. The message would
// hold a view of the sender's string, which may be gone (a temporary) or
// changed by the time the actor runs. Built only by the test
// unit.view_parameter_refused (tests/unit/CMakeLists.txt), which expects the
// compiler's message.
#include <string>
#include <string_view>

#include "troupe/troupe.hpp"

namespace {

class Logger {
 public:
  void log(std::string_view line) { last = line; }
  std::string last;
};

}  // namespace

void use(troupe::Runtime& rt) { rt.spawn<Logger>().tell<&Logger::log>(std::string("a temporary") + " string"); }
