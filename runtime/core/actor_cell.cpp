#include "troupe/detail/actor_cell.hpp"
#include "troupe/detail/stage_probe.hpp"

#include <algorithm>

#include "fault_injection.hpp"
#include "scheduler.hpp"
#include "troupe/detail/core.hpp"
#include "troupe/detail/method_traits.hpp"

namespace troupe {

const char* to_string(ExitReason r) noexcept {
  switch (r) {
    case ExitReason::stopped: return "stopped";
    case ExitReason::node_lost: return "node lost";
    case ExitReason::shutdown: return "runtime shut down";
    case ExitReason::unknown: return "unknown (an unreadable notice)";
  }
  return "unknown";
}

namespace detail {
namespace {

thread_local ActorCell* tls_cell = nullptr;
thread_local bool tls_remote_sent = false;
thread_local InlineTurns* tls_inline = nullptr;

struct StopMessage final : Message {
  void run(ActorCell& cell) override { cell.exit(ExitReason::stopped); }
};

struct ResumeMessage final : Message {
  explicit ResumeMessage(std::coroutine_handle<> h) : handle(h) {}
  void run(ActorCell&) override { handle.resume(); }
  // reject: the frame was destroyed when the actor exited; nothing to do.
  std::coroutine_handle<> handle;
};

}  // namespace

ActorCell* current_cell() noexcept { return tls_cell; }
void note_remote_send() noexcept { tls_remote_sent = true; }

ContextGuard::ContextGuard(ActorCell* c) noexcept : prev_(tls_cell) { tls_cell = c; }
ContextGuard::~ContextGuard() { tls_cell = prev_; }

ResumeTarget ResumeTarget::here(std::coroutine_handle<> h) {
  if (tls_cell == nullptr) return ResumeTarget(nullptr, h.address());
  return ResumeTarget(tls_cell->shared_from_this(), new ResumeMessage(h));
}

ResumeTarget::~ResumeTarget() {
  if (cell_) delete static_cast<ResumeMessage*>(p_);  // never sent (the result never came)
}

void ResumeTarget::resume() {
  void* p = std::exchange(p_, nullptr);
  if (p == nullptr) return;
  if (cell_) {
    cell_->enqueue_system(static_cast<ResumeMessage*>(p));
  } else {
    std::coroutine_handle<>::from_address(p).resume();
  }
}

ActorCell::ActorCell(Core& core, ActorId id, const TypeTag* type, bool reentrant) noexcept
    : core_(core), id_(id), type_(type), reentrant_(reentrant) {}

ActorCell::~ActorCell() {
  // Anything still queued belongs to nobody now.
  while (auto* m = static_cast<Message*>(system_.pop())) delete m;
  while (auto* m = static_cast<Message*>(mailbox_.pop())) delete m;
  delete extras_.load(std::memory_order_acquire);
}

NodeId ActorCell::node() const noexcept { return core_.node(); }

ActorCell::Extras& ActorCell::extras() {
  Extras* e = extras_.load(std::memory_order_acquire);
  if (e != nullptr) return *e;
  auto* fresh = new Extras();
  if (extras_.compare_exchange_strong(e, fresh, std::memory_order_seq_cst)) return *fresh;
  delete fresh;
  return *e;
}

void ActorCell::enqueue(Message* m) noexcept {
  if (exited()) {
    // reject() counts the message as one taken out of the mailbox (a batch
    // counts its other calls as it rejects them): count it in as if it had
    // been queued and taken out, or the count would fall below zero.
    if (m->weight > 1) size_.fetch_add(m->weight - 1, std::memory_order_seq_cst);
    m->reject(*this);
    delete m;
    return;
  }
  size_.fetch_add(m->weight, std::memory_order_seq_cst);  // read before the push: then m is no longer ours
  mailbox_.push(m);
  schedule_if_idle();
}

void ActorCell::enqueue_system(Message* m) noexcept {
  if (exited()) {
    m->reject(*this);
    delete m;
    return;
  }
  system_size_.fetch_add(1, std::memory_order_seq_cst);
  system_.push(m);
  schedule_if_idle();
}

void ActorCell::schedule_if_idle() noexcept {
  if (scheduled_.load(std::memory_order_seq_cst)) return;
  if (!scheduled_.exchange(true, std::memory_order_seq_cst)) {
    core_.work_started();
    auto self = shared_from_this();
    if (!InlineTurns::offer(self)) core_.scheduler().schedule(std::move(self));
  }
}

InlineTurns::InlineTurns() noexcept : prev_(tls_inline) { tls_inline = this; }

InlineTurns::~InlineTurns() {
  if (active_) tls_inline = prev_;
  // Anything not run goes to the scheduler (run() was not called).
  if (first_) first_->core().scheduler().schedule(std::move(first_));
  for (auto& c : more_) c->core().scheduler().schedule(std::move(c));
}

bool InlineTurns::offer(std::shared_ptr<ActorCell>& cell) noexcept {
  if (tls_inline == nullptr || tls_cell != nullptr) return false;
  auto& in = *tls_inline;
  if (!in.first_) {
    in.first_ = std::move(cell);
    return true;
  }
  try {
    in.more_.push_back(std::move(cell));  // (no memory: cell untouched, and the scheduler takes it)
  } catch (...) {
    return false;
  }
  return true;
}

std::size_t InlineTurns::run(std::size_t batch) {
  if (first_) TROUPE_STAGE(inline_turns);
  tls_inline = prev_;  // turns schedule what they wake the normal way
  active_ = false;
  auto first = std::move(first_);
  if (!first) return 0;
  auto more = std::move(more_);
  more_.clear();
  first->run_batch(batch);  // offered first: runs first
  for (auto& c : more) c->run_batch(batch);
  return 1 + more.size();
}

void ActorCell::request_stop() {
  if (g_failing_stops.take()) throw std::bad_alloc();
  enqueue(new StopMessage());
}

void ActorCell::drain_rejected() noexcept {
  while (true) {
    auto* m = static_cast<Message*>(system_.pop());
    if (m != nullptr) system_size_.fetch_sub(1, std::memory_order_relaxed);
    if (m == nullptr) {
      m = static_cast<Message*>(mailbox_.pop());
      if (m == nullptr) break;
      size_.fetch_sub(1, std::memory_order_relaxed);
    }
    m->reject(*this);
    delete m;
  }
}

void ActorCell::run_batch(std::size_t max) noexcept {
  std::size_t handled = 0;
  {
    ContextGuard guard(this);
    while (handled < max) {
      if (exited()) {
        drain_rejected();
        break;
      }
      auto* m = static_cast<Message*>(system_.pop());
      if (m != nullptr) {
        system_size_.fetch_sub(1, std::memory_order_relaxed);
      } else if (blocking_tasks_ == 0) {
        m = static_cast<Message*>(mailbox_.pop());
        if (m != nullptr) size_.fetch_sub(1, std::memory_order_relaxed);
      }
      if (m == nullptr) break;
      ++handled;
      m->run(*this);
      delete m;
    }
  }
  if (tls_remote_sent) {
    tls_remote_sent = false;
    if (auto* link = core_.remote()) link->flush();
  }
  if (handled == max && has_work(blocked_by_task())) {
    core_.scheduler().schedule(shared_from_this());  // yield, stay scheduled
    return;
  }
  release_turn();
}

bool ActorCell::has_work(bool blocked) const noexcept {
  return system_size_.load(std::memory_order_seq_cst) != 0 || (!blocked && size_.load(std::memory_order_seq_cst) != 0);
}

void ActorCell::release_turn() noexcept {
  // Once scheduled_ is cleared another thread may own the cell: from then on
  // only the producers' counters are read (has_work), never the queues'
  // consumer side.
  const bool blocked = blocked_by_task();
  scheduled_.store(false, std::memory_order_seq_cst);
  if (has_work(blocked) && !scheduled_.exchange(true, std::memory_order_seq_cst)) {
    core_.scheduler().schedule(shared_from_this());
    return;
  }
  core_.work_done();
}

void ActorCell::begin_construction() noexcept {
  scheduled_.store(true, std::memory_order_seq_cst);
  core_.work_started();
}

void ActorCell::end_construction(bool built) noexcept {
  if (!built) {  // the constructor threw: whatever it sent to itself fails
    exit_reason_ = ExitReason::stopped;
    exited_.store(true, std::memory_order_seq_cst);
    drain_rejected();
    end_exit(take_monitors());  // added while it was being built (register_local's, say)
  }
  release_turn();
}

void ActorCell::make_room_for_task() {
  auto& ex = extras();
  std::lock_guard lk(ex.mu);
  ex.suspended.reserve(ex.suspended.size() + 1);
}

void ActorCell::task_suspended(const std::shared_ptr<TaskRecord>& rec) noexcept {
  auto& ex = *extras_.load(std::memory_order_acquire);  // made by make_room_for_task
  {
    std::lock_guard lk(ex.mu);
    ex.suspended.push_back(rec);  // into the room made before the task started: cannot throw
  }
  if (!reentrant_) ++blocking_tasks_;
}

void ActorCell::task_finished(const std::shared_ptr<TaskRecord>& rec) noexcept {
  auto& ex = extras();
  {
    std::lock_guard lk(ex.mu);
    std::erase(ex.suspended, rec);
  }
  if (!reentrant_) --blocking_tasks_;
}

void ActorCell::exit(ExitReason why) noexcept {
  // Only the actor's own context (or shutdown, when nothing runs it) gets here.
  if (exited()) return;
  exit_reason_ = why;
  exited_.store(true, std::memory_order_seq_cst);
  std::vector<std::shared_ptr<TaskRecord>> frames;
  if (auto* ex = extras_.load(std::memory_order_seq_cst)) {
    std::lock_guard lk(ex->mu);
    frames.swap(ex->suspended);
  }
  auto monitors = take_monitors();
  {
    ContextGuard guard(this);
    // Suspended coroutines go first: their frames may point into the object.
    // Destroying a frame fails its caller with ActorExited.
    for (auto& rec : frames) rec->handle.destroy();
    frames.clear();
    destroy_object();
  }
  drain_rejected();
  core_.remove_cell(id_);
  end_exit(std::move(monitors));
}

void ActorCell::end_exit(std::vector<std::pair<std::uint64_t, MonitorFn>> monitors) noexcept {
  // From here a monitor added fires at once; one added before, while exit()
  // ran, waits in `late`. The mark, then a look for the extras; add_monitor
  // makes the extras, then reads the mark: one of the two sees the other.
  exit_done_.store(true, std::memory_order_seq_cst);
  std::vector<std::pair<std::uint64_t, MonitorFn>> late;
  if (auto* ex = extras_.load(std::memory_order_seq_cst)) {
    std::lock_guard lk(ex->mu);
    late.swap(ex->late);
  }
  fire_monitors(std::move(monitors));
  fire_monitors(std::move(late));
}

std::vector<std::pair<std::uint64_t, MonitorFn>> ActorCell::take_monitors() noexcept {
  std::vector<std::pair<std::uint64_t, MonitorFn>> monitors;
  if (auto* ex = extras_.load(std::memory_order_seq_cst)) {
    std::lock_guard lk(ex->mu);
    monitors.swap(ex->monitors);
  }
  return monitors;
}

void ActorCell::fire_monitors(std::vector<std::pair<std::uint64_t, MonitorFn>> monitors) noexcept {
  const ExitInfo info{node(), id_, exit_reason_};
  for (auto& [token, fn] : monitors) core_.fire_monitor(std::move(fn), info);
}

std::uint64_t ActorCell::add_monitor(MonitorFn fn) {
  if (g_failing_monitors.take()) throw std::bad_alloc();  // before anything is changed, as extras() may throw
  auto& ex = extras();
  std::unique_lock lk(ex.mu);
  const auto token = ex.next_token++;
  if (!exited()) {
    ex.monitors.emplace_back(token, std::move(fn));
    lk.unlock();
    // exit() may have missed the list if it ran between our check and now.
    if (!exited()) return token;
    lk.lock();
    auto it = std::find_if(ex.monitors.begin(), ex.monitors.end(),
                           [token](const auto& p) { return p.first == token; });
    if (it == ex.monitors.end()) return token;  // exit() took it and fires it
    fn = std::move(it->second);
    ex.monitors.erase(it);
  }
  // The actor exited, or is exiting: at once if exit() is done (the object
  // destroyed, the actor unlisted), else as exit() ends.
  if (!exit_done_.load(std::memory_order_seq_cst)) {
    ex.late.emplace_back(token, std::move(fn));
    return token;
  }
  lk.unlock();
  ExitInfo info{node(), id_, exit_reason_};
  core_.post([fn = std::move(fn), info]() mutable { fn(info); });
  return token;
}

void ActorCell::remove_monitor(std::uint64_t token) noexcept {
  auto* ex = extras_.load(std::memory_order_acquire);
  if (ex == nullptr) return;
  std::lock_guard lk(ex->mu);
  std::erase_if(ex->monitors, [token](const auto& p) { return p.first == token; });
  std::erase_if(ex->late, [token](const auto& p) { return p.first == token; });
}

}  // namespace detail
}  // namespace troupe
