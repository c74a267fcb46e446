// Forward declarations of troupe's public types.
#pragma once

#include <cstdint>

namespace troupe {

/// Identifies a node (an MPI rank or a replacement process) for the whole job.
using NodeId = std::uint32_t;
/// Identifies an actor within its node. Never reused during a run.
using ActorId = std::uint64_t;

inline constexpr NodeId kInvalidNode = static_cast<NodeId>(-1);

class Runtime;
struct Config;
class Error;
class ConnectionLost;
class ActorExited;
class RemoteError;
class Timeout;
class UnknownType;
class DecodeError;

template <class T> class ActorRef;
template <class T> class Future;
template <class T> class Promise;
template <class T> class Task;

class Timer;
struct ExitInfo;

}  // namespace troupe
