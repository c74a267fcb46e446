#include "troupe/detail/core.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <thread>

#include "actor_table.hpp"
#include "deterministic_scheduler.hpp"
#include "fault_injection.hpp"
#include "memory_patience.hpp"
#include "scheduler.hpp"
#include "timer_service.hpp"
#include "troupe/detail/call_message.hpp"
#include "troupe/detail/fresh_memory.hpp"
#include "troupe/detail/vector_recycler.hpp"
#include "troupe/runtime.hpp"
#include "troupe/timer.hpp"

namespace troupe::detail {
namespace {

std::atomic<Core*> g_latest_core{nullptr};

struct ExitMessage final : Message {
  explicit ExitMessage(ExitReason r) : reason(r) {}
  void run(ActorCell& cell) override { cell.exit(reason); }
  ExitReason reason;
};

}  // namespace

Core::Core(Runtime& rt, Config cfg, std::unique_ptr<ThreadPlacement> placement)
    : rt_(rt), cfg_(std::move(cfg)), table_(std::make_unique<ActorTable>()) {
  if (cfg_.batch == 0) cfg_.batch = 1;
  if (cfg_.keep_freed_memory) (void)keep_freed_memory();
  // TROUPE_RECYCLED_VECTORS_MB in the environment wins over the config.
  if (const char* v = std::getenv("TROUPE_RECYCLED_VECTORS_MB"); v != nullptr && *v != '\0')
    cfg_.recycled_vector_bytes = static_cast<std::size_t>(std::strtoull(v, nullptr, 10)) << 20;
  set_recycle_budget(cfg_.recycled_vector_bytes);
  if (cfg_.scheduler == SchedulerKind::deterministic) {
    auto vt = std::make_unique<VirtualTimerService>();
    auto sched = std::make_unique<DeterministicScheduler>(*vt, cfg_.batch);
    set_waiter(sched.get());
    timers_ = std::move(vt);
    sched_ = std::move(sched);
  } else {
    auto timers = std::make_unique<ThreadTimerService>();
    sched_ = make_tbb_scheduler(cfg_.threads, cfg_.batch, std::move(placement));
    // Turns the scheduler parks for want of memory are retried by the timer
    // thread too, in case no other turn or task runs to retry them.
    timers->set_retry([s = sched_.get()] { return s->retry_parked(); });
    sched_->set_park_notice([t = timers.get()] { t->poke(); });
    timers_ = std::move(timers);
  }
  g_latest_core.store(this, std::memory_order_release);
}

Core::~Core() {
  shutdown();
  Core* self = this;
  g_latest_core.compare_exchange_strong(self, nullptr);
  set_waiter(nullptr);  // a future kept past the runtime waits on its own
}

void Core::add_cell(std::shared_ptr<ActorCell> cell) { table_->add(std::move(cell)); }
void Core::remove_cell(ActorId id) noexcept { table_->remove(id); }
std::shared_ptr<ActorCell> Core::find_cell(ActorId id) const { return table_->find(id); }
std::size_t Core::actor_count() const noexcept { return table_->size(); }

void Core::register_local(const std::string& name, const std::shared_ptr<ActorCell>& cell) {
  {
    std::lock_guard lk(names_mu_);
    names_[name] = cell;
  }
  const ActorId id = cell->id();
  cell->add_monitor([this, name, id](const ExitInfo&) {
    std::lock_guard lk(names_mu_);
    auto it = names_.find(name);
    if (it != names_.end() && it->second->id() == id) names_.erase(it);
  });
}

void Core::unregister_local(const std::string& name) noexcept {
  std::lock_guard lk(names_mu_);
  names_.erase(name);
}

std::shared_ptr<ActorCell> Core::find_local(const std::string& name) const {
  std::lock_guard lk(names_mu_);
  auto it = names_.find(name);
  return it == names_.end() || it->second->exited() ? nullptr : it->second;
}

namespace {
constinit std::atomic<std::chrono::steady_clock::rep> g_memory_patience{
    std::chrono::steady_clock::duration(kMemoryPatience).count()};
}  // namespace

std::chrono::steady_clock::duration memory_patience() noexcept {
  return std::chrono::steady_clock::duration(g_memory_patience.load(std::memory_order_relaxed));
}

std::chrono::steady_clock::duration set_memory_patience(std::chrono::steady_clock::duration p) noexcept {
  return std::chrono::steady_clock::duration(g_memory_patience.exchange(p.count(), std::memory_order_relaxed));
}

bool retry_while_short_of_memory(void (*attempt)(void*), bool (*go_on)(void*), void* ctx) {
  const auto give_up = std::chrono::steady_clock::now() + memory_patience();
  while (true) {
    try {
      attempt(ctx);
      return true;
    } catch (const std::bad_alloc&) {
    }
    if (!go_on(ctx) || std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

constinit FaultBudget g_failing_posts;
constinit FaultBudget g_failing_monitors;
constinit FaultBudget g_failing_stops;

bool Core::post(UniqueFunction<void()> f) {
  work_started();
  bool taken = false;
  try {
    if (g_failing_posts.take()) throw std::bad_alloc();
    taken = sched_->post([this, f = std::move(f)]() mutable {
      try {
        auto run = std::move(f);
        run();
      } catch (...) {
        on_unhandled(0, "posted task", std::current_exception());
      }
      // The callable and what it captured are gone before the work counts as
      // done: a destructor may still make work (a promise it abandons wakes a
      // waiting coroutine), and quiescence must not be seen before it.
      work_done();
    });
  } catch (...) {
    work_done();  // no memory for the task: it will not run, nor be waited for
    throw;
  }
  if (!taken) work_done();  // refused after shutdown: it will not run
  return taken;
}

void Core::fire_monitor(MonitorFn fn, const ExitInfo& info) noexcept {
  std::shared_ptr<MonitorFn> held;
  try {
    held = std::make_shared<MonitorFn>(std::move(fn));  // (fn unchanged if this throws)
    post([held, info] { (*held)(info); });
    return;
  } catch (...) {
  }
  try {
    if (held) {
      (*held)(info);
    } else {
      fn(info);
    }
  } catch (...) {
    on_unhandled(info.actor, "a monitor's callback", std::current_exception());
  }
}

void Core::work_done() noexcept {
  if (outstanding_.fetch_sub(1, std::memory_order_acq_rel) == 1) outstanding_.notify_all();
}

bool Core::wait_quiescent(std::optional<Clock::time_point> deadline) {
  if (auto* det = dynamic_cast<DeterministicScheduler*>(sched_.get())) {
    while (outstanding() != 0) {
      if (det->step()) continue;
      if (auto next = det->timers().next_deadline()) {
        det->timers().advance(*next - det->timers().now());
        continue;
      }
      return false;  // outstanding work that nothing can run
    }
    return true;
  }
  while (true) {
    auto n = outstanding_.load(std::memory_order_acquire);
    if (n == 0) return true;
    if (!deadline) {
      outstanding_.wait(n, std::memory_order_acquire);
    } else {
      if (Clock::now() >= *deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
}

void Core::on_unhandled(ActorId actor, const char* method, std::exception_ptr e) noexcept {
  try {
    if (cfg_.on_unhandled) return cfg_.on_unhandled(actor, method, e);
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "troupe: node %u actor %llu: %s threw: %s\n", node_,
                   static_cast<unsigned long long>(actor), method, ex.what());
    } catch (...) {
      std::fprintf(stderr, "troupe: node %u actor %llu: %s threw a non-standard exception\n", node_,
                   static_cast<unsigned long long>(actor), method);
    }
  } catch (...) {
  }
}

void Core::shutdown() noexcept {
  if (shut_down_) return;
  shut_down_ = true;
  // Let running work settle, then end the actors on their own contexts.
  wait_quiescent();
  // Rounds: an actor may be spawned while the others end (by a monitor's
  // callback, say); it is ended in the next round. Bounded, against one that
  // spawns another at every exit.
  // Short of memory (for the list, or an actor's exit message), it is tried
  // again every millisecond, for the patience at most (one deadline for the
  // whole shutdown). An actor that never got its exit is not ended: no
  // on-exit, no monitor; its object goes when the runtime's table does, on
  // this thread (not its own context), with the asks still queued for it
  // (their promises dropped: an error, not a wait); one kept alive by a
  // reference of its own, or of another such actor, is never destroyed.
  // Said on stderr.
  const auto give_up = Clock::now() + memory_patience();
  auto patient = [&] {
    if (Clock::now() >= give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return true;
  };
  std::size_t unended = 0;
  for (int round = 0; round < 16; ++round) {
    std::vector<std::shared_ptr<ActorCell>> cells;
    try {
      cells = table_->snapshot();
    } catch (const std::bad_alloc&) {
      if (patient()) --round;  // (not a round)
      unended = table_->size();
      continue;
    }
    if (cells.empty()) break;
    unended = 0;
    for (auto& cell : cells) {
      ExitMessage* m = nullptr;
      while ((m = new (std::nothrow) ExitMessage(ExitReason::shutdown)) == nullptr && patient()) {
      }
      if (m == nullptr) {
        ++unended;
        continue;
      }
      cell->enqueue_system(m);
    }
    cells.clear();  // the table's references only: exits unlist them
    wait_quiescent();
  }
  if (unended != 0)
    std::fprintf(stderr, "troupe: node %u: %zu actors could not be ended at shutdown (no memory)\n", node_, unended);
  {
    std::lock_guard lk(names_mu_);
    names_.clear();
  }
  stopped_.store(true, std::memory_order_release);
  sched_->shutdown();
  timers_->shutdown();
  set_recycle_budget(0);  // frees the kept vectors; nothing more is kept until a runtime is made
}

void Core::track_periodic(std::weak_ptr<TimerControl> c) {
  std::lock_guard lk(periodic_mu_);
  if (periodic_stopped_) {  // stopped before it started: never active
    if (auto t = c.lock()) {
      t->cancelled.store(true, std::memory_order_release);
      t->claim();
    }
    return;
  }
  std::erase_if(periodic_, [](const auto& w) { return w.expired(); });
  periodic_.push_back(std::move(c));
}

void Core::stop_periodic() noexcept {
  std::lock_guard lk(periodic_mu_);
  periodic_stopped_ = true;
  for (auto& w : periodic_)
    if (auto c = w.lock()) c->cancelled.store(true, std::memory_order_release);
  periodic_.clear();
}

bool Core::periodic_stopped() const {
  std::lock_guard lk(periodic_mu_);
  return periodic_stopped_;
}

void report_unhandled(Core& core, ActorId actor, const char* method, std::exception_ptr e) noexcept {
  core.on_unhandled(actor, method, std::move(e));
}

void release_timer(TimerControl& c) noexcept {
  if (c.one_shot && c.core != nullptr) c.core->work_done();
}

Core* current_core() noexcept {
  if (auto* cell = current_cell()) return &cell->core();
  return g_latest_core.load(std::memory_order_acquire);
}

}  // namespace troupe::detail
