// Names for troupe's own threads, as `top -H`, gdb, perf and /proc show them:
// troupe-progress (a rank's MPI progress engine), troupe-worker<N> (scheduler
// workers, N their arena slot), troupe-timer.
#pragma once

#include <string>
#include <thread>

namespace troupe::detail {

/// Names the calling thread (Linux keeps 15 characters; longer names are cut).
/// Does nothing where the platform has no thread names.
void name_this_thread(const char* name) noexcept;

/// Names a thread just started, from the thread that started it, so the name
/// shows at once even if the new thread has not run yet. (A thread it starts
/// before this call lands inherits the old name; troupe's threads start none
/// themselves, and scheduler workers take their own name as they enter.)
void name_thread(std::thread& t, const char* name) noexcept;

/// The calling thread's name ("" where the platform has none).
std::string this_thread_name();

}  // namespace troupe::detail
