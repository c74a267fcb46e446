// Runtime members shared by local and cluster runtimes. The constructors live
// where their dependencies are: runtime/topology (local) and runtime/registry/runtime_mpi.cpp (MPI).
#include <memory>

#include "scheduler.hpp"
#include "timer_service.hpp"
#include "troupe/runtime.hpp"

namespace troupe {

Runtime::~Runtime() {
  // Without finish(): the actors end first, while the cluster side can still
  // carry what they send; then the cluster side, then the core.
  if (finished_ < 0 && core_) {
    core_->stop_periodic();
    core_->shutdown();
    // The other nodes count this one lost now, not after the heartbeat
    // timeout (or never, if this process goes on without troupe).
    if (link_) link_->leave();
  }
  names_.reset();
  link_.reset();
  core_.reset();
}

std::size_t Runtime::size() const noexcept { return link_ ? link_->size() : 1; }

std::size_t Runtime::threads() const noexcept { return core_->scheduler().threads(); }

detail::RemoteLink& Runtime::remote_or_throw() {
  if (!link_) throw Error("troupe: this runtime is local (no MPI); it has no other nodes");
  return *link_;
}

MonitorId Runtime::monitor_impl(NodeId node, ActorId actor, const std::shared_ptr<detail::ActorCell>& cell,
                                detail::MonitorFn fn) {
  if (cell) return MonitorId{node, actor, cell->add_monitor(std::move(fn))};
  if (node != this->node() && link_) return MonitorId{node, actor, link_->monitor(node, actor, std::move(fn))};
  // A local actor that is no longer in the table has exited.
  ExitInfo info{node, actor, ExitReason::stopped};
  core_->post([fn = std::move(fn), info]() mutable { fn(info); });
  return MonitorId{node, actor, 0};
}

void Runtime::demonitor(const MonitorId& id) {
  if (id.token == 0) return;
  if (id.node == node()) {
    if (auto cell = core_->find_cell(id.actor)) cell->remove_monitor(id.token);
  } else if (link_) {
    link_->demonitor(id.node, id.actor, id.token);
  }
}

namespace {
void refuse_if_stopped(const detail::Core& core) {
  if (core.is_stopped()) throw Error("troupe: a timer started after finish() would never fire");
}
}  // namespace

Timer Runtime::after_impl(std::chrono::nanoseconds delay, detail::UniqueFunction<void()> fn) {
  refuse_if_stopped(*core_);
  auto c = std::make_shared<detail::TimerControl>();
  c->core = core_.get();
  c->one_shot = true;
  core_->work_started();
  auto* core = core_.get();
  try {
    core_->timers().add(detail::saturated_add(core_->timers().now(), delay), [c, core, fn = std::move(fn)]() mutable {
      if (!c->claim()) return;  // cancelled
      try {
        core->post(std::move(fn));
      } catch (...) {  // no memory for the task: the callback is lost, but not finish()
        core->on_unhandled(0, "a timer's callback", std::current_exception());
      }
      core->work_done();
    });
  } catch (...) {
    core_->work_done();  // never armed: nothing will count it done
    throw;
  }
  return Timer(c);
}

namespace {
struct Periodic {
  std::shared_ptr<detail::TimerControl> control;
  std::function<bool()> tick;
  std::chrono::nanoseconds period;
  detail::TimerService* timers;
  static void arm(const std::shared_ptr<Periodic>& p, detail::Clock::time_point when) {
    p->timers->add(when, [p, when] {
      bool again = false;
      if (!p->control->cancelled.load(std::memory_order_acquire)) {
        try {
          again = p->tick();
        } catch (...) {  // it stops, and says why (active() turns false)
          p->control->core->on_unhandled(0, "a periodic timer's tick", std::current_exception());
        }
      }
      if (!again) {
        p->control->claim();
        return;
      }
      arm(p, detail::saturated_add(when, p->period));
    });
  }
};
}  // namespace

Timer Runtime::every_impl(std::chrono::nanoseconds period, std::function<bool()> tick) {
  if (period <= std::chrono::nanoseconds::zero()) throw Error("troupe: a periodic timer needs a positive period");
  refuse_if_stopped(*core_);
  auto c = std::make_shared<detail::TimerControl>();
  c->core = core_.get();
  c->one_shot = false;
  core_->track_periodic(c);
  auto p = std::make_shared<Periodic>(Periodic{c, std::move(tick), period, &core_->timers()});
  Periodic::arm(p, detail::saturated_add(core_->timers().now(), period));
  return Timer(c);
}

int Runtime::finish() {
  if (finished_ >= 0) return finished_;
  // It waits until every actor's turn has ended, the caller's own too.
  detail::check_blocking_allowed("Runtime::finish()");
  core_->stop_periodic();
  finished_ = link_ ? link_->finish() : 0;
  core_->shutdown();
  if (link_) link_->finalize();
  return finished_;
}

ClusterState Runtime::cluster() const {
  if (link_) return link_->cluster_state();
  return ClusterState({NodeInfo{node(), core_->config().role, "localhost", true}});
}

bool Runtime::wait_cluster_until(const std::function<bool(const ClusterState&)>& pred,
                                 detail::Clock::time_point deadline) {
  if (link_) return link_->wait_cluster(pred, deadline);
  return pred(cluster());
}

Runtime& runtime() {
  auto* core = detail::current_core();
  if (core == nullptr) throw Error("troupe::runtime(): no runtime is running in this process");
  return core->runtime();
}

namespace detail {
namespace {
thread_local Core* tls_decoding = nullptr;
}

DecodingScope::DecodingScope(Core* core) noexcept : prev_(tls_decoding) { tls_decoding = core; }
DecodingScope::~DecodingScope() { tls_decoding = prev_; }

Core* decoding_core() noexcept { return tls_decoding != nullptr ? tls_decoding : current_core(); }

std::shared_ptr<ActorCell> resolve_local(Core* core, NodeId node, ActorId actor) {
  if (core == nullptr || node != core->node()) return nullptr;
  return core->find_cell(actor);
}

}  // namespace detail
}  // namespace troupe
