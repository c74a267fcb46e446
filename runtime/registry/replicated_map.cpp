#include "replicated_map.hpp"

#include <chrono>
#include <cstdio>
#include <thread>

#include "cluster/cluster.hpp"
#include "name_services.hpp"
#include "transport/engine.hpp"
#include "troupe/detail/core.hpp"
#include "troupe/runtime.hpp"

namespace troupe::detail {

ReplicatedMap::ReplicatedMap(NameServices& ns, std::uint8_t id, Listener listener, ScopeOf scope_of)
    : ns_(ns), id_(id), listener_(std::move(listener)), scope_of_(std::move(scope_of)) {}

ClusterState ReplicatedMap::view() const {
  return ns_.runtime().cluster();
}

bool ReplicatedMap::kept_on(const std::string& scope, NodeId n, const ClusterState& st) {
  if (n >= st.size() || !st.alive(n)) return false;
  return scope.empty() || st.node(n).role == scope;
}

Future<void> ReplicatedMap::write(const std::string& key, std::string value, NodeId owner, ActorId actor,
                                  bool tombstone) {
  if (ns_.core().is_stopped() || (ns_.cluster() != nullptr && ns_.cluster()->done())) {
    // finish() has ended the cluster (and may have returned): no other node
    // hears this one any more, and the write's future would wait for their
    // acks for ever.
    Promise<void> p(ns_.core().waiter());
    auto f = p.get_future();
    p.set_exception(std::make_exception_ptr(
        Error("troupe: the registry and groups are not written once the runtime has finished")));
    return f;
  }
  ReplEntry e{std::move(value), ns_.core().clock().now().raw, ns_.self(), owner, actor, tombstone};
  apply(key, e);
  return broadcast(key, e);
}

void ReplicatedMap::remove_version(const std::string& key, const ReplEntry& version) {
  ReplEntry gone = version;
  gone.tombstone = true;
  gone.value.clear();
  apply(key, gone);
  broadcast(key, gone);
}

void ReplicatedMap::push_own(const std::vector<NodeId>& to) {
  std::vector<std::pair<std::string, ReplEntry>> mine;
  {
    std::lock_guard lk(mu_);
    // What this node wrote, and the deletions it made of others' writes (of
    // its actors that exited): the newcomer's copy may have come from a node
    // that such a deletion had not reached yet.
    for (auto& [key, e] : entries_)
      if (e.origin == ns_.self() || (e.tombstone && e.owner == ns_.self())) mine.emplace_back(key, e);
  }
  const auto st = view();
  for (NodeId n : to)
    for (auto& [key, e] : mine)
      if (kept_on(scope_of(key), n, st)) ns_.send_update(n, id_, key, e, 0);
}

Future<void> ReplicatedMap::expect_acks(const std::vector<NodeId>& nodes, std::uint64_t& corr) {
  Promise<void> p(ns_.core().waiter());
  auto f = p.get_future();
  std::lock_guard lk(mu_);
  corr = next_corr_++;
  waits_.emplace(corr, Wait{std::set<NodeId>(nodes.begin(), nodes.end()), std::move(p)});
  return f;
}

Future<void> ReplicatedMap::broadcast(const std::string& key, const ReplEntry& e) {
  Cluster* cl = ns_.cluster();
  std::vector<NodeId> targets;  // none in a local runtime: its view holds only itself
  const auto st = view();
  const std::string scope = scope_of(key);
  for (NodeId n = 0; n < st.size(); ++n)
    if (n != ns_.self() && kept_on(scope, n, st)) targets.push_back(n);
  if (targets.empty()) {
    Promise<void> p(ns_.core().waiter());
    auto f = p.get_future();
    p.set_value();
    return f;
  }
  Future<void> f;
  std::uint64_t corr = 0;
  f = expect_acks(targets, corr);
  for (NodeId n : targets) ns_.send_update(n, id_, key, e, corr);
  // A node lost meanwhile will never answer.
  for (NodeId n : targets)
    if (!cl->alive(n)) acked(corr, n);
  return f;
}

std::optional<ReplEntry> ReplicatedMap::get(const std::string& key) const {
  std::lock_guard lk(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.tombstone) return std::nullopt;
  return it->second;
}

std::vector<std::pair<std::string, ReplEntry>> ReplicatedMap::scan(const std::string& prefix) const {
  std::vector<std::pair<std::string, ReplEntry>> out;
  std::lock_guard lk(mu_);
  for (auto it = entries_.lower_bound(prefix); it != entries_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
       ++it)
    if (!it->second.tombstone) out.emplace_back(*it);
  return out;
}

std::vector<std::pair<std::string, ReplEntry>> ReplicatedMap::everything_for(NodeId n) const {
  const auto st = view();
  std::vector<std::pair<std::string, ReplEntry>> out;
  std::lock_guard lk(mu_);
  for (auto& kv : entries_)
    if (kept_on(scope_of(kv.first), n, st)) out.push_back(kv);
  return out;
}

bool ReplicatedMap::apply(const std::string& key, ReplEntry e, NodeId from) {
  Cluster* cl = ns_.cluster();
  {
    std::lock_guard lk(mu_);
    // Under the lock: node_lost() scans the entries under it, after the node
    // left the live set. Checked before taking the lock, a node lost in
    // between would keep this entry here for ever.
    // An owner this node does not know yet (an id past its view: a node being
    // added, written about by a member that took it in first) is not lost.
    if (!e.tombstone && e.owner != kInvalidNode && cl != nullptr && e.owner < cl->size() && !cl->alive(e.owner)) {
      e.tombstone = true;  // points at a lost node: it is gone, and stays gone
      e.value.clear();
    }
    std::optional<ReplEntry> before;
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      if (!e.beats(it->second)) return false;
      if (!it->second.tombstone) before = it->second;
      it->second = e;
    } else {
      entries_.emplace(key, e);
    }
    // Under the lock, so listeners see changes in the order they were applied
    // (they only queue the news).
    const ReplEntry* after = e.tombstone ? nullptr : &e;
    if (listener_ && (before || after)) listener_(key, before ? &*before : nullptr, after);
  }
  if (!e.tombstone && e.owner == ns_.self() && e.actor != 0) watch_owner_actor(key, e);
  // A write of a node lost meanwhile that was new here: it goes on through
  // the key's relay. Not only the relay's job: this node may have read it
  // from the lost node just before the loss and applied it after node_lost()
  // looked, and the relay may never have had it.
  if (cl != nullptr && e.origin != ns_.self() && e.origin < cl->size() && !cl->alive(e.origin))
    forward({{key, e}}, from);
  return true;
}

void ReplicatedMap::watch_owner_actor(const std::string& key, const ReplEntry& e) {
  const ActorId actor = e.actor;
  const NodeId self = ns_.self();
  // Short of memory, tried again (nothing of a failed try is kept), for the
  // memory patience at most: thrown out of apply(), it left the entry
  // applied, unwatched for good (a later write of it saw it watched), and a
  // write from another node unacknowledged, its put waiting for ever.
  const bool watched = retry_while_short_of_memory(
      [&] {
        decltype(watched_)::iterator mark;
        {
          std::lock_guard lk(mu_);
          auto [at, fresh] = watched_.insert({key, actor});
          if (!fresh) return;  // watched already
          mark = at;
        }
        try {
          auto on_exit = [this, life = ns_.life(), key, actor, self] {
            if (life.expired()) return;  // the runtime's name services are gone
            std::optional<ReplEntry> current;
            {
              std::lock_guard lk(mu_);
              watched_.erase({key, actor});
              auto it = entries_.find(key);
              if (it != entries_.end() && !it->second.tombstone && it->second.owner == self &&
                  it->second.actor == actor)
                current = it->second;
            }
            // Delete that version only: a newer binding written elsewhere meanwhile wins.
            if (current) remove_version(key, *current);
          };
          if (auto cell = ns_.core().find_cell(actor)) {
            cell->add_monitor([on_exit](const ExitInfo&) mutable { on_exit(); });
          } else {
            ns_.core().post(std::move(on_exit));  // already gone
          }
        } catch (const std::bad_alloc&) {
          std::lock_guard lk(mu_);
          watched_.erase(mark);  // (only this call erases it: nothing watches the actor for it yet)
          throw;                 // the next try, or a later write of it, watches it again
        }
      },
      [] { return true; });
  if (!watched)
    std::fprintf(stderr, "troupe: node %u: no memory to watch the actor behind '%s'; its entry stays when it exits\n",
                 self, key.c_str());
}

void ReplicatedMap::acked(std::uint64_t corr, NodeId from) {
  // No allocation: an ack must end its wait even when memory is out.
  std::unique_lock lk(mu_);
  auto it = waits_.find(corr);
  if (it == waits_.end()) return;
  it->second.nodes.erase(from);
  if (!it->second.nodes.empty()) return;
  Promise<void> done = std::move(it->second.promise);
  waits_.erase(it);
  lk.unlock();
  done.set_value();
}

void ReplicatedMap::end_waits_on(NodeId n) {
  std::unique_lock lk(mu_);
  for (auto& [corr, w] : waits_) w.nodes.erase(n);
  // One at a time, outside the lock (a promise may run a continuation).
  for (auto it = waits_.begin(); it != waits_.end();) {
    if (!it->second.nodes.empty()) {
      ++it;
      continue;
    }
    Promise<void> p = std::move(it->second.promise);
    waits_.erase(it);
    lk.unlock();
    p.set_value();
    lk.lock();
    it = waits_.begin();  // (changed meanwhile, maybe)
  }
}

void ReplicatedMap::forward(const std::vector<std::pair<std::string, ReplEntry>>& entries, NodeId came_from) {
  if (entries.empty() || ns_.cluster() == nullptr) return;
  const auto st = view();
  for (auto& [key, e] : entries) {
    const std::string scope = scope_of(key);
    // The relay: the lowest live node that keeps the key. The others send it
    // what they have; it alone sends on to all, once per version it did not
    // have (about 2·N messages per entry, not N²).
    NodeId relay = kInvalidNode;
    for (NodeId m = 0; m < st.size() && relay == kInvalidNode; ++m)
      if (kept_on(scope, m, st)) relay = m;
    if (relay == kInvalidNode) continue;
    if (relay != ns_.self()) {
      // To the relay: what this node has of a lost node (came_from none), or
      // read from the lost writer itself, late. Not what another node sent
      // on (the relay, or a newcomer's copy source: they pass it on themselves).
      if (came_from == kInvalidNode || came_from == e.origin) ns_.send_update(relay, id_, key, e, 0);
      continue;
    }
    for (NodeId m = 0; m < st.size(); ++m)
      if (m != ns_.self() && m != came_from && kept_on(scope, m, st)) ns_.send_update(m, id_, key, e, 0);
  }
}

void ReplicatedMap::node_lost(NodeId n) {
  // What n wrote, as this node has it: n may have died before its write
  // reached every node, and nobody else would ever send it. Every survivor
  // sends what it has to the key's relay, which sends on what was new to it;
  // the largest version wins everywhere, so they converge. What nodes lost
  // earlier wrote goes again: n may have been the relay of some of it.
  Cluster* cl = ns_.cluster();
  std::vector<std::pair<std::string, ReplEntry>> written_by_lost;
  auto gone = [n](const ReplEntry& e) { return !e.tombstone && e.owner == n; };
  std::unique_lock lk(mu_);
  // All or nothing: what needs memory first (the copies to pass on, as they
  // will be once n's entries are gone), tried again while memory is short;
  // then the changes, which need none. Stopped half way, some of n's entries
  // would stay, pointing at nothing. The waits n's ack would end, end anyway.
  const auto give_up = std::chrono::steady_clock::now() + memory_patience();
  for (;;) {
    try {
      for (auto& [key, e] : entries_) {
        if (e.origin != n && (cl == nullptr || e.origin == ns_.self() || cl->alive(e.origin))) continue;
        written_by_lost.emplace_back(key, e);
        if (gone(e)) {
          written_by_lost.back().second.tombstone = true;
          written_by_lost.back().second.value.clear();
        }
      }
      break;
    } catch (const std::bad_alloc&) {
      written_by_lost.clear();
      if (std::chrono::steady_clock::now() >= give_up) {
        std::fprintf(stderr, "troupe: node %u: no memory to remove what node %u kept in a replicated map\n",
                     ns_.self(), n);
        lk.unlock();
        end_waits_on(n);
        return;
      }
      lk.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      lk.lock();
    }
  }
  for (auto& [key, e] : entries_) {
    if (!gone(e)) continue;
    if (listener_) listener_(key, &e, nullptr);  // (never throws)
    e.tombstone = true;  // keeps its timestamp: older writes stay beaten
    e.value.clear();
  }
  lk.unlock();
  end_waits_on(n);
  forward(written_by_lost, kInvalidNode);
}

}  // namespace troupe::detail
