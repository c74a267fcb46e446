// ActorCell: one actor's mailbox, scheduling state, object and monitors.
//
// Scheduling protocol: a producer pushes a message, then flips `scheduled_` from
// false to true; whoever flips it hands the cell to the scheduler. The cell runs a
// bounded batch, clears `scheduled_`, and re-checks its queues, so no message is
// ever left without a run and the cell never runs on two threads at once.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "troupe/detail/mpsc_queue.hpp"
#include "troupe/detail/unique_function.hpp"
#include "troupe/fwd.hpp"
#include "troupe/task.hpp"

namespace troupe {

enum class ExitReason : std::uint8_t {
  stopped,    ///< stop() was handled
  node_lost,  ///< the node hosting the actor was lost
  shutdown,   ///< the runtime finished while the actor was alive
  /// The actor's node sent a notice, or an answer to the watch, that this node
  /// could not read (damaged bytes, another protocol version): the monitor
  /// ends, but the actor may still run.
  unknown,
};
const char* to_string(ExitReason r) noexcept;

/// What a monitor learns when the actor it watches is gone.
struct ExitInfo {
  NodeId node = 0;
  ActorId actor = 0;
  ExitReason reason = ExitReason::stopped;
};

namespace detail {

class Core;
class ActorCell;
struct TypeTag;

struct Message : MpscNode {
  virtual ~Message() = default;
  /// Handles the message on the actor's context.
  virtual void run(ActorCell& cell) = 0;
  /// The actor exited before handling it: fail the caller, if any.
  virtual void reject(ActorCell& cell) noexcept { (void)cell; }
  /// The calls it carries (a batch of calls from another node carries several):
  /// what mailbox_size() counts. Fixed before it is enqueued. Taking the message
  /// out counts one; a message of several counts the others as it starts them
  /// (ActorCell::calls_started).
  std::uint32_t weight = 1;
};

using MonitorFn = UniqueFunction<void(const ExitInfo&)>;

class ActorCell : public std::enable_shared_from_this<ActorCell> {
 public:
  ActorCell(Core& core, ActorId id, const TypeTag* type, bool reentrant) noexcept;
  ActorCell(const ActorCell&) = delete;
  ActorCell& operator=(const ActorCell&) = delete;
  virtual ~ActorCell();

  Core& core() const noexcept { return core_; }
  ActorId id() const noexcept { return id_; }
  NodeId node() const noexcept;
  const TypeTag* type() const noexcept { return type_; }
  void* object() const noexcept { return obj_; }
  bool exited() const noexcept { return exited_.load(std::memory_order_seq_cst); }
  std::size_t mailbox_size() const noexcept { return size_.load(std::memory_order_relaxed); }
  /// n more calls of the message being handled have started (or were rejected).
  void calls_started(std::size_t n) noexcept { size_.fetch_sub(n, std::memory_order_relaxed); }

  /// Queues an ordinary message; takes ownership. Messages from one thread are
  /// handled in the order they were queued.
  void enqueue(Message* m) noexcept;
  /// Queues a coroutine resumption or runtime notice: handled before ordinary
  /// messages, and even while a non-reentrant actor waits in a coroutine.
  void enqueue_system(Message* m) noexcept;
  /// Scheduler entry point: handles at most max messages, then yields.
  void run_batch(std::size_t max) noexcept;

  /// Ordered stop: handled after the messages already queued. Throws
  /// std::bad_alloc, having queued nothing, if there is no memory for it.
  void request_stop();
  /// Ends the actor now (on its own context or when nothing runs it): destroys
  /// the object and suspended coroutines, fails queued asks, fires monitors.
  void exit(ExitReason why) noexcept;

  /// Monitors fire once, on a scheduler thread; at once if the actor is gone.
  /// Never before the object is destroyed and the actor unlisted: one added
  /// while exit() runs fires as it ends.
  std::uint64_t add_monitor(MonitorFn fn);
  void remove_monitor(std::uint64_t token) noexcept;

  /// Runs a top-level coroutine method; done receives its result.
  template <class R>
  void start_task(Task<R> task, UniqueFunction<void(TaskResult<R>&&)> done);

  /// Constructs the object on the actor's context (so self<T>() works in the
  /// constructor). Called once by spawn. listed() runs first, once the cell
  /// counts as running (so nothing runs a turn of it before its object is
  /// built): spawn lists the cell there.
  template <class T, class Listed, class... A>
  void construct(Listed&& listed, A&&... a);

 protected:
  virtual void destroy_object() noexcept = 0;
  void set_object(void* p) noexcept { obj_ = p; }

 private:
  struct TaskRecord {
    std::coroutine_handle<> handle;
    bool done = false;
  };
  /// Room to list one more suspended task, made before the task starts: once
  /// its coroutine has suspended, listing it must not fail. (Unlisted, it went
  /// on, was not destroyed with its actor, and on finishing released a hold
  /// on a non-reentrant actor it had never taken: the count wrapped round.)
  void make_room_for_task();
  void task_suspended(const std::shared_ptr<TaskRecord>& rec) noexcept;
  void task_finished(const std::shared_ptr<TaskRecord>& rec) noexcept;
  void schedule_if_idle() noexcept;
  void drain_rejected() noexcept;
  /// Ends a turn: clears scheduled_ and re-schedules if work came meanwhile.
  void release_turn() noexcept;
  /// A blocking task holds the actor: only system messages may run. Read it
  /// while the turn is still ours.
  bool blocked_by_task() const noexcept { return blocking_tasks_ != 0 && !exited(); }
  /// Messages it may run now. Reads only the producers' counters, so it is
  /// safe after the turn was released.
  bool has_work(bool blocked) const noexcept;
  void begin_construction() noexcept;
  void end_construction(bool built) noexcept;
  std::vector<std::pair<std::uint64_t, MonitorFn>> take_monitors() noexcept;
  void fire_monitors(std::vector<std::pair<std::uint64_t, MonitorFn>> monitors) noexcept;
  /// exit()'s end, once the actor is unlisted: fires `monitors` and those
  /// added while it ran.
  void end_exit(std::vector<std::pair<std::uint64_t, MonitorFn>> monitors) noexcept;

  Core& core_;
  ActorId id_;
  const TypeTag* type_;
  void* obj_ = nullptr;
  std::atomic<bool> scheduled_{false};
  std::atomic<bool> exited_{false};
  std::atomic<bool> exit_done_{false};  // exit() has destroyed the object and unlisted the actor
  ExitReason exit_reason_ = ExitReason::stopped;
  bool reentrant_;
  std::uint32_t blocking_tasks_ = 0;  // non-reentrant: ordinary messages wait while > 0
  std::atomic<std::size_t> size_{0};         // mailbox: counted before the push
  std::atomic<std::size_t> system_size_{0};  // system queue, likewise
  MpscQueue mailbox_;
  MpscQueue system_;

  struct Extras {  // rarely used state, allocated on first use
    std::mutex mu;
    std::vector<std::pair<std::uint64_t, MonitorFn>> monitors;
    std::vector<std::pair<std::uint64_t, MonitorFn>> late;  // added while exit() ran: fired as it ends
    std::uint64_t next_token = 1;
    std::vector<std::shared_ptr<TaskRecord>> suspended;
  };
  Extras& extras();
  std::atomic<Extras*> extras_{nullptr};

  // A turn the scheduler found no memory for waits in a ParkedTurns list,
  // linked through the cell itself, so parking never allocates. A cell is
  // parked at most once at a time: only the holder of its turn parks it.
  friend class ParkedTurns;
  ActorCell* parked_next_ = nullptr;
  std::shared_ptr<ActorCell> parked_self_;
};

template <class T>
class TypedCell final : public ActorCell {
 public:
  using ActorCell::ActorCell;
  ~TypedCell() override { TypedCell::destroy_object(); }
  template <class... A>
  void make(A&&... a) {
    new (&storage_) T(std::forward<A>(a)...);
    set_object(&storage_);
  }

 protected:
  void destroy_object() noexcept override {
    if (object() != nullptr) {
      std::launder(reinterpret_cast<T*>(&storage_))->~T();
      set_object(nullptr);
    }
  }

 private:
  alignas(T) unsigned char storage_[sizeof(T)];
};

/// The actor this thread is running right now (null outside actors).
ActorCell* current_cell() noexcept;
/// Set by the transport when an actor sends to another node: the turn then
/// ends with a flush, so replies leave without waiting for the progress thread.
void note_remote_send() noexcept;

/// While one exists on a thread, actors that messages wake up are collected
/// instead of handed to the scheduler; run() then handles their turns on this
/// thread. The MPI poller uses it: a message and the turn it causes run on one
/// worker, without waking another thread.
class InlineTurns {
 public:
  InlineTurns() noexcept;
  ~InlineTurns();
  InlineTurns(const InlineTurns&) = delete;
  InlineTurns& operator=(const InlineTurns&) = delete;
  /// Stops collecting and runs one turn of each collected actor.
  std::size_t run(std::size_t batch);
  /// Takes the cell (moved from) if a collector is active on this thread;
  /// false, the cell untouched, if none is.
  static bool offer(std::shared_ptr<ActorCell>& cell) noexcept;

 private:
  std::shared_ptr<ActorCell> first_;  // the common case, one actor woken: no allocation
  std::vector<std::shared_ptr<ActorCell>> more_;
  InlineTurns* prev_;
  bool active_ = true;
};
class ContextGuard {
 public:
  explicit ContextGuard(ActorCell* c) noexcept;
  ~ContextGuard();
  ContextGuard(const ContextGuard&) = delete;
  ContextGuard& operator=(const ContextGuard&) = delete;

 private:
  ActorCell* prev_;
};

template <class T, class Listed, class... A>
void ActorCell::construct(Listed&& listed, A&&... a) {
  // The cell counts as running while its object is built: messages sent
  // meanwhile (a self-tell in the constructor) wait until it is complete.
  begin_construction();
  try {
    listed();
    ContextGuard g(this);
    static_cast<TypedCell<T>*>(this)->make(std::forward<A>(a)...);
  } catch (...) {
    end_construction(false);
    throw;
  }
  end_construction(true);
}

template <class R>
void ActorCell::start_task(Task<R> task, UniqueFunction<void(TaskResult<R>&&)> done) {
  auto rec = std::make_shared<TaskRecord>();
  make_room_for_task();
  auto h = std::move(task).start(
      [this, rec, done = std::move(done)](TaskResult<R>&& r) mutable {
        rec->done = true;
        if (rec->handle) task_finished(rec);
        done(std::move(r));
      });
  if (!rec->done) {
    rec->handle = h;
    task_suspended(rec);
  }
}

}  // namespace detail
}  // namespace troupe
