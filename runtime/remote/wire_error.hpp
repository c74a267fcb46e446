// Errors on the wire: what a reply_error envelope carries, and how it turns
// back into the right troupe::Error on the caller's side.
#pragma once

#include <cstdint>
#include <exception>
#include <string>

#include <cereal/types/string.hpp>

#include "troupe/fwd.hpp"
#include "troupe/wire/archive.hpp"

namespace troupe::detail {

struct WireError {
  enum Code : std::uint8_t {
    remote_exception = 1,  ///< the method threw: type name and message
    actor_exited = 2,
    unknown_type = 3,
    decode_error = 4,
    connection_lost = 5,
    timeout = 6,
    name_not_found = 7,
  };
  std::uint8_t code = remote_exception;
  std::string type;
  std::string message;
  std::uint32_t node = 0;   // connection_lost: the lost node; actor_exited: its node; remote_exception: the thrower
  std::uint64_t actor = 0;  // actor_exited: the actor

  template <class Archive>
  void serialize(Archive& ar) {
    ar(code, type, message, node, actor);
  }

  /// Describes an exception thrown on this node (self).
  static WireError from(std::exception_ptr e, NodeId self);
  /// The exception the caller sees; `from` is the node that answered.
  std::exception_ptr to_exception(NodeId from) const;
};

}  // namespace troupe::detail
