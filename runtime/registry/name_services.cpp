#include "name_services.hpp"

#include <cereal/types/string.hpp>

#include <algorithm>
#include <cstdio>

#include "cluster/cluster.hpp"
#include "remote/remote_node.hpp"
#include "troupe/runtime.hpp"

namespace troupe::detail {

std::string scoped_group(const std::string& scope, const std::string& group) {
  return scope.empty() ? group : '\x1e' + scope + '\x1e' + group;
}

std::string group_key(const std::string& group, NodeId node, ActorId actor) {
  return group + '\x1f' + std::to_string(node) + ':' + std::to_string(actor);
}

std::string group_of_key(const std::string& key) { return key.substr(0, key.find('\x1f')); }

std::string scope_of_key(const std::string& key) {
  if (key.empty() || key[0] != '\x1e') return {};
  const auto end = key.find('\x1e', 1);
  return end == std::string::npos ? std::string{} : key.substr(1, end - 1);
}

std::pair<std::string, std::string> split_scoped_group(const std::string& scoped) {
  const std::string scope = scope_of_key(scoped);
  if (scope.empty()) return {std::string{}, scoped};
  return {scope, scoped.substr(scope.size() + 2)};
}

NodeId copy_source(const ClusterState& st, NodeId self, const std::string& role, NodeId first_of_batch) {
  // A node of its own role keeps everything it keeps (scoped groups too); a
  // node that joined with it is as empty as it is, so one from before comes
  // first (then, if every one of those is lost, one of the batch).
  NodeId best = kInvalidNode;
  int best_rank = 4;
  for (NodeId n = 0; n < st.size(); ++n) {
    if (n == self || !st.alive(n)) continue;
    const int rank = (n >= first_of_batch ? 2 : 0) + (st.node(n).role == role ? 0 : 1);
    if (rank < best_rank) {
      best = n;
      best_rank = rank;
    }
  }
  return best;
}

NameServices::NameServices(Runtime& rt)
    : rt_(rt),
      core_(rt.core()),
      registry_map_(*this, 1, nullptr),
      group_map_(
          *this, 2,
          [this](const std::string& key, const ReplEntry* before, const ReplEntry* after) {
            group_changed(key, before, after);
          },
          scope_of_key),
      registry_(*this),
      groups_(*this) {
  if (auto* node = dynamic_cast<RemoteNode*>(core_.remote())) {
    cluster_ = &node->cluster();
    // The listeners first: the messages that came before the handler are
    // applied when it is set, and a loss declared meanwhile must reach the
    // entries they bring.
    cluster_->on_lost([this, life = std::weak_ptr<bool>(life_)](NodeId n) {
      if (life.expired()) return;
      registry_map_.node_lost(n);
      group_map_.node_lost(n);
    });
    // New members get what this node wrote (a copy from one member could miss
    // writes still in flight to it).
    cluster_->on_added([this, life = std::weak_ptr<bool>(life_)](const std::vector<NodeId>& fresh) {
      if (life.expired()) return;
      registry_map_.push_own(fresh);
      group_map_.push_own(fresh);
    });
    cluster_->set_extra_control(
        [this](NodeId from, std::uint64_t type, WireInputArchive& ar) { on_control(from, type, ar); });
    // A node that joined later starts empty: it asks a live member for a copy.
    if (node->joined_later()) {
      const NodeId from = copy_source(cluster_->state(), self(), rt_.config().role, node->first_of_batch());
      if (from != kInvalidNode) cluster_->send_control(from, Control::replicate_sync, nullptr, /*work=*/true);
    }
  }
}

NameServices::~NameServices() {
  // First: a listener that looks from now on finds this gone; then wait for
  // the handler and listener calls under way to end.
  life_.reset();
  if (cluster_ != nullptr) cluster_->set_extra_control(nullptr);
}

NodeId NameServices::self() const noexcept { return core_.node(); }

void NameServices::send_update(NodeId to, std::uint8_t map, const std::string& key, const ReplEntry& e,
                               std::uint64_t corr) {
  if (to == drop_to_.load(std::memory_order_relaxed)) return;
  cluster_->send_control(
      to, Control::replicate, [&](WireOutputArchive& ar) { ar(map, key, e, corr); }, /*work=*/true);
}

void NameServices::on_control(NodeId from, std::uint64_t type, WireInputArchive& ar) {
  if (type == static_cast<std::uint64_t>(Control::replicate)) {
    std::uint8_t map = 0;
    std::string key;
    ReplEntry e;
    std::uint64_t corr = 0;
    ar(map, key, e, corr);
    (map == 1 ? registry_map_ : group_map_).apply(key, std::move(e), from);
    if (corr != 0)
      cluster_->send_control(
          from, Control::replicate_ack, [&](WireOutputArchive& out) { out(map, corr); }, /*work=*/true);
  } else if (type == static_cast<std::uint64_t>(Control::replicate_sync)) {
    for (auto* map : {&registry_map_, &group_map_})
      for (auto& [key, e] : map->everything_for(from)) send_update(from, map->id(), key, e, 0);
  } else if (type == static_cast<std::uint64_t>(Control::replicate_ack)) {
    std::uint8_t map = 0;
    std::uint64_t corr = 0;
    ar(map, corr);
    (map == 1 ? registry_map_ : group_map_).acked(corr, from);
  }
}

std::uint64_t NameServices::next_round_robin(const std::string& key) {
  std::lock_guard lk(mu_);
  return round_robin_[key]++;
}

void NameServices::add_dispatcher(const std::string& name, DispatchFn fn) {
  std::lock_guard lk(mu_);
  dispatchers_[name] = std::move(fn);
}

DispatchFn NameServices::dispatcher(const std::string& name) const {
  std::lock_guard lk(mu_);
  auto it = dispatchers_.find(name);
  return it == dispatchers_.end() ? DispatchFn{} : it->second;
}

std::uint64_t NameServices::subscribe(const std::string& group, std::function<void(const GroupEvent&)> fn) {
  std::uint64_t since = 0;
  {
    std::lock_guard lk(events_mu_);  // an event applied from here on is heard; one before, not
    since = events_seq_;
  }
  std::lock_guard lk(mu_);
  const auto token = next_token_++;
  subscribers_.emplace(token, Subscriber{group, since, std::move(fn)});
  return token;
}

void NameServices::unsubscribe(std::uint64_t token) {
  std::function<void(const GroupEvent&)> gone;  // destroyed after the lock: what it holds may unsubscribe too
  std::unique_lock lk(mu_);
  if (auto it = subscribers_.find(token); it != subscribers_.end()) {
    gone = std::move(it->second.fn);
    subscribers_.erase(it);
  }
  const auto me = std::this_thread::get_id();
  called_.wait(lk, [&] { return calling_ != token || calling_thread_ == me; });
  lk.unlock();
}

void NameServices::group_changed(const std::string& key, const ReplEntry* before, const ReplEntry* after) {
  if (before != nullptr && after != nullptr) return;  // rewritten, still a member
  const ReplEntry* e = after != nullptr ? after : before;
  // Never throws: it runs inside the map's edits (a lost owner's entries are
  // tombstoned in one loop), which must not stop half way.
  std::lock_guard lk(events_mu_);
  try {
    auto [scope, group] = split_scoped_group(group_of_key(key));
    events_.emplace_back(events_seq_++,
                         GroupEvent{std::move(group), e->owner, e->actor, after != nullptr, std::move(scope)});
  } catch (...) {
    std::fprintf(stderr, "troupe: no memory to note a change of group '%s': its subscribers here miss it\n",
                 key.c_str());
    return;
  }
  if (draining_) return;
  draining_ = true;
  bool taken = false;
  try {
    taken = core_.post([this, life = std::weak_ptr<bool>(life_)] {
      if (!life.expired()) drain_events();
    });
  } catch (...) {  // no memory for the task: the events wait for the next change's try
  }
  if (!taken) draining_ = false;  // (or the runtime is shut down: nothing will drain)
}

void NameServices::drain_events() {
  while (true) {
    std::uint64_t seq = 0;
    GroupEvent ev;
    {
      std::lock_guard lk(events_mu_);
      if (events_.empty()) {
        draining_ = false;
        return;
      }
      seq = events_.front().first;
      ev = std::move(events_.front().second);
      events_.pop_front();
    }
    std::vector<std::uint64_t> tokens;
    {
      std::lock_guard lk(mu_);
      const std::string scoped = scoped_group(ev.scope, ev.group);
      for (auto& [token, sub] : subscribers_)
        if (sub.group == scoped && seq >= sub.since) tokens.push_back(token);
    }
    for (const auto token : tokens) {
      std::function<void(const GroupEvent&)> fn;
      {
        std::lock_guard lk(mu_);
        auto it = subscribers_.find(token);
        if (it == subscribers_.end()) continue;  // unsubscribed meanwhile: not called again
        fn = it->second.fn;
        calling_ = token;
        calling_thread_ = std::this_thread::get_id();
      }
      try {
        fn(ev);
      } catch (const std::exception& x) {
        std::fprintf(stderr, "troupe: a group subscriber threw: %s\n", x.what());
      } catch (...) {
        // Anything else too: escaping, it would leave draining_ set, and no
        // subscriber here would hear of a group again.
        std::fprintf(stderr, "troupe: a group subscriber threw something other than a std::exception\n");
      }
      fn = nullptr;  // what it captured goes before unsubscribe() returns (outside the lock)
      {
        std::lock_guard lk(mu_);
        calling_ = 0;
      }
      called_.notify_all();
    }
  }
}

}  // namespace troupe::detail

// ---- Registry and Groups -----------------------------------------------------

namespace troupe {
using detail::Core;
using detail::Member;
using detail::RegistryValue;
using detail::ByteBuffer;
using detail::WireInputArchive;
using detail::WireOutputArchive;

Future<void> Registry::put_value(const std::string& name, const RegistryValue& v) {
  std::string bytes;
  {
    ByteBuffer buf;
    WireOutputArchive ar(buf, nullptr);
    ar(v);
    bytes.assign(reinterpret_cast<const char*>(buf.data()), buf.size());
  }
  return ns_->registry_map().write(name, std::move(bytes), v.kind == 1 ? v.node : kInvalidNode, v.actor, false);
}

Future<void> Registry::remove(const std::string& name) {
  return ns_->registry_map().write(name, {}, kInvalidNode, 0, true);
}

std::optional<RegistryValue> Registry::get_value(const std::string& name) const {
  auto e = ns_->registry_map().get(name);
  if (!e) return std::nullopt;
  RegistryValue v;
  WireInputArchive ar(reinterpret_cast<const std::byte*>(e->value.data()), e->value.size(),
                      WireInputArchive::InlineBlocks{});
  ar(v);
  return v;
}

std::optional<DispatchSpec> Registry::get_dispatcher(const std::string& name) const {
  auto v = get_value(name);
  if (!v || v->kind != 2) return std::nullopt;
  return v->spec;
}

std::vector<std::string> Registry::names() const {
  std::vector<std::string> out;
  for (auto& [k, e] : ns_->registry_map().scan("")) out.push_back(k);
  return out;
}

void Registry::check(const std::string& name, const RegistryValue& v, const char* type, int kind) {
  if (v.kind != kind)
    throw Error("troupe: registry name '" + name + "' holds " + (v.kind == 2 ? "a dispatcher" : "an actor"));
  if (v.type != type) throw Error("troupe: registry name '" + name + "' holds a " + v.type + ", not a " + type);
}

Core& Registry::core() const { return ns_->core(); }

namespace {

// \x1e and \x1f build group keys: a name holding one would read as another scope.
void check_group_name(const std::string& name, const char* what) {
  if (name.find_first_of("\x1e\x1f") != std::string::npos)
    throw Error(std::string("troupe: a ") + what + " name cannot hold the control characters \\x1e or \\x1f");
}

}  // namespace

void Groups::check_here(const char* what) const {
  if (scope_.empty()) return;
  const std::string& mine = ns_->runtime().config().role;
  if (mine != scope_)
    throw Error("troupe: " + std::string(what) + " groups scoped to role '" + scope_ + "' on node " +
                std::to_string(ns_->self()) + ", whose role is '" + mine + "': they are kept on that role's nodes only");
}

Future<void> Groups::update(const std::string& group, NodeId node, ActorId actor, const std::string& type, bool join) {
  try {
    check_group_name(group, "group");
    if (!scope_.empty()) {
      check_here(join ? "joining" : "leaving");
      const auto st = ns_->runtime().cluster();
      if (node >= st.size() || st.node(node).role != scope_)
        throw Error("troupe: node " + std::to_string(node) + " is not of role '" + scope_ +
                    "': its actors cannot join groups scoped to that role");
    }
  } catch (const Error&) {
    return make_error_future<void>(std::current_exception());
  }
  return ns_->group_map().write(detail::group_key(detail::scoped_group(scope_, group), node, actor), type, node, actor,
                                !join);
}

std::vector<Member> Groups::members_of(const std::string& group) const {
  check_group_name(group, "group");
  check_here("reading");
  std::vector<Member> out;
  for (auto& [k, e] : ns_->group_map().scan(detail::scoped_group(scope_, group) + '\x1f'))
    out.push_back(Member{e.owner, e.actor, e.value});
  std::sort(out.begin(), out.end(), [](const Member& a, const Member& b) {
    return a.node != b.node ? a.node < b.node : a.actor < b.actor;
  });
  return out;
}

std::vector<std::string> Groups::groups() const {
  check_here("listing");
  // Scoped keys start with \x1e and sort before every printable group name.
  const std::string prefix = scope_.empty() ? std::string{} : detail::scoped_group(scope_, "");
  std::vector<std::string> out;
  for (auto& [k, e] : ns_->group_map().scan(prefix)) {
    if (scope_.empty() && !k.empty() && k[0] == '\x1e') continue;  // another scope's
    auto g = detail::group_of_key(k).substr(prefix.size());
    if (out.empty() || out.back() != g) out.push_back(g);
  }
  return out;
}

std::uint64_t Groups::subscribe(const std::string& group, std::function<void(const GroupEvent&)> fn) {
  check_group_name(group, "group");
  check_here("subscribing to");
  return ns_->subscribe(detail::scoped_group(scope_, group), std::move(fn));
}

void Groups::unsubscribe(std::uint64_t token) { ns_->unsubscribe(token); }

Core& Groups::core() const { return ns_->core(); }

detail::NameServices& Runtime::names() {
  std::call_once(names_once_, [this] {
    names_ = std::unique_ptr<detail::NameServices, void (*)(detail::NameServices*)>(
        new detail::NameServices(*this), [](detail::NameServices* p) { delete p; });
  });
  return *names_;
}

Registry& Runtime::registry() { return names().registry(); }
Groups& Runtime::groups() { return names().groups(); }
void Runtime::register_dispatcher(const std::string& name, DispatchFn fn) { names().add_dispatcher(name, std::move(fn)); }

}  // namespace troupe
