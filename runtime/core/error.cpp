#include "troupe/error.hpp"

namespace troupe {

ConnectionLost::ConnectionLost(NodeId node)
    : ConnectionLost(node, "troupe: connection to node " + std::to_string(node) + " lost") {}

ConnectionLost::ConnectionLost(NodeId node, const std::string& what) : Error(what), node_(node) {}

ActorExited::ActorExited(NodeId node, ActorId actor)
    : Error("troupe: actor " + std::to_string(actor) + " on node " + std::to_string(node) + " has exited"),
      node_(node),
      actor_(actor) {}

RemoteError::RemoteError(NodeId node, std::string type_name, std::string message)
    : Error("troupe: node " + std::to_string(node) + ": " + type_name + ": " + message),
      node_(node),
      type_(std::move(type_name)),
      message_(std::move(message)) {}

}  // namespace troupe
