// The production scheduler: actor turns are oneTBB tasks enqueued in one
// task_arena, so idle workers steal them. Workers are placed (pinned) by a
// task_scheduler_observer as they join the arena.
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/task_scheduler_observer.h>

#include <atomic>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <thread>

#include "parked_turns.hpp"
#include "sanitizers.hpp"
#include "scheduler.hpp"
#include "thread_name.hpp"

#ifdef TROUPE_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace troupe::detail {
namespace {

// oneTBB hands task memory between threads through its task queues and its
// small-object pool, whose synchronisation ThreadSanitizer cannot see (libtbb
// is not instrumented). These annotations state the two hand-offs TBB makes:
// construction happens before execution, and a task's death happens before the
// next task built in the same memory.
inline void tsan_acquire(const void* p) noexcept {
#ifdef TROUPE_TSAN
  __tsan_acquire(const_cast<void*>(p));
#else
  (void)p;
#endif
}
inline void tsan_release(const void* p) noexcept {
#ifdef TROUPE_TSAN
  __tsan_release(const_cast<void*>(p));
#else
  (void)p;
#endif
}
// First member of a task functor: same address as the functor.
struct TsanHead {
  TsanHead() noexcept { tsan_acquire(this); }
  TsanHead(const TsanHead&) noexcept { tsan_acquire(this); }
  ~TsanHead() { tsan_release(this); }
};

thread_local const void* tls_worker_of = nullptr;

class Observer final : public oneapi::tbb::task_scheduler_observer {
 public:
  Observer(oneapi::tbb::task_arena& arena, const void* owner, ThreadPlacement* placement)
      : oneapi::tbb::task_scheduler_observer(arena), owner_(owner), placement_(placement) {
    tsan_release(this);  // our fields are set before any worker's entry
    observe(true);
  }
  ~Observer() override { observe(false); }
  void on_scheduler_entry(bool worker) override {
    tsan_acquire(this);
    tls_worker_of = owner_;
    int slot = oneapi::tbb::this_task_arena::current_thread_index();
    if (placement_ && slot >= 0) placement_->on_thread_start(static_cast<std::size_t>(slot));
    // A worker is named for its slot, renamed only when that changes (oneTBB
    // workers serve every arena of the process, a runtime's or another's, and
    // enter them many times); a thread that joins from outside (a master)
    // keeps its own name.
    thread_local int named_slot = -1;
    if (worker && slot >= 0 && slot != named_slot) {
      named_slot = slot;
      name_this_thread(("troupe-worker" + std::to_string(slot)).c_str());
    }
    tsan_release(this);  // ... and done with them before the observer stops
  }
  void stop() {
    observe(false);
    tsan_acquire(this);
  }
  void on_scheduler_exit(bool) override { tls_worker_of = nullptr; }

 private:
  const void* owner_;
  ThreadPlacement* placement_;
};

class TbbScheduler final : public Scheduler {
 public:
  TbbScheduler(std::size_t threads, std::unique_ptr<ThreadPlacement> placement)
      : threads_(threads == 0 ? std::max(1u, std::thread::hardware_concurrency()) : threads),
        // Workers beyond the machine's default need a raised global limit.
        limit_(oneapi::tbb::global_control::max_allowed_parallelism, threads_ + 1),
        placement_(std::move(placement)),
        arena_(static_cast<int>(threads_), /*reserved_for_masters=*/0),
        observer_(arena_, this, placement_.get()) {
    arena_.initialize();
  }
  ~TbbScheduler() override { shutdown(); }

  // After shutdown() nothing runs: work that comes late (a delivery from
  // another node to a runtime torn down without finish()) is dropped.
  // Enqueued, it would bring the terminated arena back to life, and run
  // against a runtime being destroyed. (Counted first, then checked, against
  // shutdown's flag then wait: one of the two sees the other.)
  void schedule(std::shared_ptr<ActorCell> cell) noexcept override {
    if (!enter()) return;
    if (!enqueue_turn(cell)) {
      // Parked, it stays counted in in_flight_: shutdown() waits for it.
      parked_.park(std::move(cell));
      if (park_notice_) park_notice_();
      return;
    }
    if (!parked_.empty()) retry_and_notice();
  }
  bool retry_parked() noexcept override {
    return parked_.retry([this](std::shared_ptr<ActorCell>& c) { return enqueue_turn(c); });
  }
  void set_park_notice(UniqueFunction<void()> notice) override { park_notice_ = std::move(notice); }
  bool post(UniqueFunction<void()> f) override {
    if (!enter()) return false;
    try {
      arena_.enqueue(Posted(this, std::move(f)));
    } catch (...) {
      in_flight_.fetch_sub(1, std::memory_order_seq_cst);
      throw;
    }
    return true;
  }
  bool on_worker_thread() const noexcept override { return tls_worker_of == this; }
  std::size_t threads() const noexcept override { return threads_; }
  void shutdown() noexcept override {
    if (down_.exchange(true, std::memory_order_seq_cst)) return;
    // Every enqueued turn must have finished touching the runtime (parked
    // ones too: they are queued once there is memory).
    while (in_flight_.load(std::memory_order_seq_cst) != 0) {
      if (!parked_.empty()) retry_parked();
      std::this_thread::yield();
    }
    observer_.stop();
    arena_.terminate();
  }
  void set_batch(std::size_t b) { batch_ = b; }

 private:
  /// Queues a turn of the cell (taken from `cell`); false, `cell` kept, if
  /// oneTBB found no memory for it. The task holds its own reference, so the
  /// cell is kept whatever step of oneTBB's enqueue fails.
  bool enqueue_turn(std::shared_ptr<ActorCell>& cell) noexcept {
    if (refuse_turn_for_testing()) return false;
    try {
      arena_.enqueue(Turn(this, cell));
    } catch (...) {
      return false;
    }
    cell.reset();
    return true;
  }
  /// A retry outside the timer thread. What it parks again must be noticed:
  /// the timer's own retry may have found the list empty meanwhile (this one
  /// held its turns) and stopped retrying.
  void retry_and_notice() noexcept {
    if (retry_parked() && park_notice_) park_notice_();
  }
  bool enter() noexcept {
    in_flight_.fetch_add(1, std::memory_order_seq_cst);
    if (!down_.load(std::memory_order_seq_cst)) return true;
    in_flight_.fetch_sub(1, std::memory_order_seq_cst);
    return false;
  }

  // oneTBB calls its functors as const; the mutable members let a task release
  // what it holds before it reports itself finished.
  struct Turn {
    TsanHead head;
    TbbScheduler* s;
    mutable std::shared_ptr<ActorCell> cell;
    Turn(TbbScheduler* sched, std::shared_ptr<ActorCell> c) : s(sched), cell(std::move(c)) { tsan_release(this); }
    Turn(Turn&& o) noexcept : s(o.s), cell(std::move(o.cell)) { tsan_release(this); }
    void operator()() const {
      tsan_acquire(this);
      auto c = std::move(cell);
      c->run_batch(s->batch_);
      c.reset();
      if (!s->parked_.empty()) s->retry_and_notice();
      s->in_flight_.fetch_sub(1, std::memory_order_release);
    }
  };
  struct Posted {
    TsanHead head;
    TbbScheduler* s;
    mutable UniqueFunction<void()> fn;
    Posted(TbbScheduler* sched, UniqueFunction<void()> f) : s(sched), fn(std::move(f)) { tsan_release(this); }
    Posted(Posted&& o) noexcept : s(o.s), fn(std::move(o.fn)) { tsan_release(this); }
    void operator()() const {
      tsan_acquire(this);
      auto f = std::move(fn);
      // An exception that left an enqueued task would cancel the arena's
      // context, and oneTBB aborts the process at the next task.
      try {
        f();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "troupe: a posted task failed: %s\n", e.what());
      } catch (...) {
        std::fprintf(stderr, "troupe: a posted task failed\n");
      }
      f = nullptr;
      if (!s->parked_.empty()) s->retry_and_notice();
      s->in_flight_.fetch_sub(1, std::memory_order_release);
    }
  };

  std::size_t threads_;
  oneapi::tbb::global_control limit_;
  std::unique_ptr<ThreadPlacement> placement_;
  oneapi::tbb::task_arena arena_;
  Observer observer_;
  std::size_t batch_ = 64;
  std::atomic<bool> down_{false};
  std::atomic<std::size_t> in_flight_{0};
  ParkedTurns parked_;
  UniqueFunction<void()> park_notice_;
};

thread_local int t_refuse_turns = 0;

}  // namespace

bool refuse_turn_for_testing() noexcept {
  if (t_refuse_turns == 0) return false;
  --t_refuse_turns;
  return true;
}
void refuse_turns_for_testing(int n) noexcept { t_refuse_turns = n; }

bool on_scheduler_worker() noexcept { return tls_worker_of != nullptr; }

std::unique_ptr<Scheduler> make_tbb_scheduler(std::size_t threads, std::size_t batch,
                                              std::unique_ptr<ThreadPlacement> placement) {
  auto s = std::make_unique<TbbScheduler>(threads, std::move(placement));
  s->set_batch(batch);
  return s;
}

}  // namespace troupe::detail
