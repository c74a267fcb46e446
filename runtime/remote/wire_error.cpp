#include "wire_error.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <typeinfo>

#include "troupe/error.hpp"

namespace troupe::detail {
namespace {

std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(abi::__cxa_demangle(name, nullptr, nullptr, &status), std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(name);
}

}  // namespace

WireError WireError::from(std::exception_ptr e, NodeId self) {
  WireError w;
  w.node = self;
  try {
    std::rethrow_exception(e);
  } catch (const ConnectionLost& x) {
    w.code = connection_lost;
    w.node = x.node_id();
    w.message = x.what();
  } catch (const ActorExited& x) {
    w.code = actor_exited;
    w.node = x.node_id();
    w.actor = x.actor_id();
    w.message = x.what();
  } catch (const UnknownType& x) {
    w.code = unknown_type;
    w.message = x.what();
  } catch (const DecodeError& x) {
    w.code = decode_error;
    w.message = x.what();
  } catch (const NameNotFound& x) {
    w.code = name_not_found;
    w.message = x.what();
  } catch (const Timeout& x) {
    w.code = timeout;
    w.message = x.what();
  } catch (const RemoteError& x) {  // a nested remote failure keeps its origin: type, message and node
    w.code = remote_exception;
    w.type = x.type_name();
    w.message = x.message();
    w.node = x.node_id();
  } catch (const std::exception& x) {
    w.code = remote_exception;
    w.type = demangle(typeid(x).name());
    w.message = x.what();
  } catch (const char* x) {  // throw "text": common in older scientific code
    w.code = remote_exception;
    w.type = "const char*";
    w.message = x != nullptr ? x : "";
  } catch (const std::string& x) {
    w.code = remote_exception;
    w.type = "std::string";
    w.message = x;
  } catch (...) {
    w.code = remote_exception;
    const std::type_info* t = abi::__cxa_current_exception_type();
    w.type = t != nullptr ? demangle(t->name()) : "unknown exception";
    w.message = "a non-standard exception was thrown";
  }
  return w;
}

std::exception_ptr WireError::to_exception(NodeId from) const {
  switch (code) {
    case actor_exited: return std::make_exception_ptr(ActorExited(node, actor));
    case unknown_type: return std::make_exception_ptr(UnknownType(message));
    case decode_error: return std::make_exception_ptr(DecodeError(message));
    case connection_lost: return std::make_exception_ptr(ConnectionLost(node, message));
    case timeout: return std::make_exception_ptr(Timeout(message));
    case name_not_found: return std::make_exception_ptr(NameNotFound(message));
    // The node that threw it (a reply relayed through other nodes keeps it).
    default: return std::make_exception_ptr(RemoteError(code == remote_exception ? node : from, type, message));
  }
}

}  // namespace troupe::detail
