// The error hierarchy. Every error troupe reports derives from troupe::Error and
// travels inside futures; Future::get() and co_await rethrow it.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>

#include "troupe/fwd.hpp"

namespace troupe {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The node hosting the target actor was lost (crashed, killed or unreachable).
class ConnectionLost : public Error {
 public:
  explicit ConnectionLost(NodeId node);
  ConnectionLost(NodeId node, const std::string& what);
  NodeId node_id() const noexcept { return node_; }

 private:
  NodeId node_;
};

/// The target actor has exited (it was stopped, or its runtime shut down).
class ActorExited : public Error {
 public:
  ActorExited(NodeId node, ActorId actor);
  ActorExited(NodeId node, ActorId actor, const std::string& what);
  NodeId node_id() const noexcept { return node_; }
  ActorId actor_id() const noexcept { return actor_; }

 private:
  NodeId node_;
  ActorId actor_;
};

/// A method called on another node threw; carries the original type name and message.
class RemoteError : public Error {
 public:
  RemoteError(NodeId node, std::string type_name, std::string message);
  NodeId node_id() const noexcept { return node_; }
  const std::string& type_name() const noexcept { return type_; }
  const std::string& message() const noexcept { return message_; }

 private:
  NodeId node_;
  std::string type_;
  std::string message_;
};

/// No actor is registered under that name (on that node, or in the registry).
class NameNotFound : public Error {
 public:
  using Error::Error;
};

/// A wait with a deadline expired.
class Timeout : public Error {
 public:
  using Error::Error;
};

/// Bytes named a class or method this build does not know (or that was not
/// registered with TROUPE_REMOTE).
class UnknownType : public Error {
 public:
  using Error::Error;
};

/// Bytes could not be decoded: truncated, oversized, or of another protocol version.
class DecodeError : public Error {
 public:
  using Error::Error;
};

namespace detail {
/// ConnectionLost(node) and ActorExited(node, actor), ready to fail a future
/// with. They never throw: short of memory for its message, each is one made
/// in advance that names no node (kInvalidNode) and no actor (0), so that a
/// loss or an exit still ends every call that waited for it.
std::exception_ptr connection_lost(NodeId node) noexcept;
std::exception_ptr actor_exited(NodeId node, ActorId actor) noexcept;
}  // namespace detail

}  // namespace troupe
