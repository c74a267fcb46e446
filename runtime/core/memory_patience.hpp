// How long a step that finds no memory is tried again before it is given up:
// a shortage that lasts longer may never end, and what waits on the step
// (a peer's frames, a watcher, a lost node's entries) must not wait for ever.
#pragma once

#include <chrono>

namespace troupe::detail {

/// The default patience.
inline constexpr std::chrono::seconds kMemoryPatience{10};

/// The patience in force: kMemoryPatience unless a test chose another
/// (troupe::testing::set_memory_patience). Process-wide.
std::chrono::steady_clock::duration memory_patience() noexcept;
/// Sets it; returns the one before.
std::chrono::steady_clock::duration set_memory_patience(std::chrono::steady_clock::duration p) noexcept;

}  // namespace troupe::detail
