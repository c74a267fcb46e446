// Stage probes: where a remote round trip spends its time, stage by stage.
//
// Built only with -DTROUPE_STAGE_PROBES=ON (bench/run_stages.sh); otherwise
// TROUPE_STAGE(s) compiles to nothing. Each probe adds the time since the
// thread's previous probe to the pair (previous stage, this stage); the
// table says how long each step between two probes took on average. A probe
// costs a few nanoseconds (the CPU's time-stamp counter where there is one).
#pragma once

#include <cstdint>
#include <string>

namespace troupe::detail::stage {

enum class Stage : int {
  ask_begin,      // the caller starts an ask (the benchmark)
  ask_end,        // get() returned its result (the benchmark)
  post,           // an envelope is handed to the engine (RemoteNode::post)
  isend_begin,    // MPI_Isend of an urgent message is called (Engine::send_now)
  isend_end,      // ... has returned
  send_now_done,  // finished sends reaped, the engine unlocked
  frame_landed,   // a frame's receive completed (Engine::take_frames)
  frame_read,     // reading the frame starts (Engine::process_frame)
  on_call,        // a call's envelope parsed (RemoteNode::on_call)
  on_reply,       // a reply's envelope parsed (RemoteNode::on_reply)
  frame_done,     // the frame is read (Engine::take_frames)
  reply_begin,    // an actor's result goes back (RemoteNode::reply_bytes)
  actor_found,    // on_call found the actor (Core::find_cell)
  inbound_made,   // the call's batch and inbound record are made
  ready_listed,   // a frame's envelopes are being moved to the ready list (Engine::release_arrived)
  delivering,     // a delivery round starts (Engine::deliver_ready)
  in_mailbox,     // a call is in its actor's mailbox (CallInbound::deliver)
  inline_turns,   // the poller runs the turns its deliveries made ready (InlineTurns::run)
  batch_runs,     // an actor's batch of remote calls starts (CallBatch::run)
  count
};

const char* name(Stage s) noexcept;

#ifdef TROUPE_STAGE_PROBES
void at(Stage s) noexcept;
/// Forgets everything measured so far (and the calibration start); each
/// thread's next probe starts a new chain.
void reset() noexcept;
/// One JSON object per step seen at least min_count times:
/// {"from":..,"to":..,"count":..,"ns":..} joined by newlines.
std::string report(std::uint64_t min_count);
inline constexpr bool enabled = true;
#define TROUPE_STAGE(s) ::troupe::detail::stage::at(::troupe::detail::stage::Stage::s)
#else
inline void reset() noexcept {}
inline std::string report(std::uint64_t) { return {}; }
inline constexpr bool enabled = false;
#define TROUPE_STAGE(s) ((void)0)
#endif

}  // namespace troupe::detail::stage
