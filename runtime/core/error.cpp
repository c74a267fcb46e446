#include "troupe/error.hpp"

namespace troupe {

ConnectionLost::ConnectionLost(NodeId node)
    : ConnectionLost(node, "troupe: connection to node " + std::to_string(node) + " lost") {}

ConnectionLost::ConnectionLost(NodeId node, const std::string& what) : Error(what), node_(node) {}

ActorExited::ActorExited(NodeId node, ActorId actor)
    : Error("troupe: actor " + std::to_string(actor) + " on node " + std::to_string(node) + " has exited"),
      node_(node),
      actor_(actor) {}

ActorExited::ActorExited(NodeId node, ActorId actor, const std::string& what)
    : Error(what), node_(node), actor_(actor) {}

namespace detail {
namespace {
const std::exception_ptr kLostShortOfMemory = std::make_exception_ptr(
    ConnectionLost(kInvalidNode, "troupe: connection to a node lost (no memory to say which)"));
const std::exception_ptr kExitedShortOfMemory =
    std::make_exception_ptr(ActorExited(kInvalidNode, 0, "troupe: an actor has exited (no memory to say which)"));
}  // namespace

std::exception_ptr connection_lost(NodeId node) noexcept {
  try {
    return std::make_exception_ptr(ConnectionLost(node));
  } catch (...) {
    return kLostShortOfMemory;
  }
}

std::exception_ptr actor_exited(NodeId node, ActorId actor) noexcept {
  try {
    return std::make_exception_ptr(ActorExited(node, actor));
  } catch (...) {
    return kExitedShortOfMemory;
  }
}
}  // namespace detail

RemoteError::RemoteError(NodeId node, std::string type_name, std::string message)
    : Error("troupe: node " + std::to_string(node) + ": " + type_name + ": " + message),
      node_(node),
      type_(std::move(type_name)),
      message_(std::move(message)) {}

}  // namespace troupe
