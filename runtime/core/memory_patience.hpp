// How long a step that finds no memory is tried again before it is given up:
// a shortage that lasts longer may never end, and what waits on the step
// (a peer's frames, a watcher, a lost node's entries) must not wait for ever.
#pragma once

#include <chrono>
#include <type_traits>

namespace troupe::detail {

/// The default patience.
inline constexpr std::chrono::seconds kMemoryPatience{10};

/// The patience in force: kMemoryPatience unless a test chose another
/// (troupe::testing::set_memory_patience). Process-wide.
std::chrono::steady_clock::duration memory_patience() noexcept;
/// Sets it; returns the one before.
std::chrono::steady_clock::duration set_memory_patience(std::chrono::steady_clock::duration p) noexcept;

/// Runs `attempt` again every millisecond while it throws std::bad_alloc and
/// `go_on()` holds (whoever waits for it still does), for memory_patience() at
/// most. True once it ran whole; false if it never did. A failed attempt must
/// keep nothing. Other exceptions pass. Allocates nothing of its own.
bool retry_while_short_of_memory(void (*attempt)(void*), bool (*go_on)(void*), void* ctx);
template <class Attempt, class GoOn>
bool retry_while_short_of_memory(Attempt&& attempt, GoOn&& go_on) {
  struct Ctx {
    std::remove_reference_t<Attempt>* attempt;
    std::remove_reference_t<GoOn>* go_on;
  } ctx{&attempt, &go_on};
  return retry_while_short_of_memory([](void* c) { (*static_cast<Ctx*>(c)->attempt)(); },
                                     [](void* c) { return static_cast<bool>((*static_cast<Ctx*>(c)->go_on)()); },
                                     &ctx);
}

}  // namespace troupe::detail
