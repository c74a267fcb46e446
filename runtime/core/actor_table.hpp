// ActorTable: this node's live actors by id. Sharded so spawns and lookups on
// many threads rarely meet on one lock.
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "troupe/detail/actor_cell.hpp"

namespace troupe::detail {

class ActorTable {
 public:
  void add(std::shared_ptr<ActorCell> cell) {
    auto& s = shard(cell->id());
    std::lock_guard lk(s.mu);
    s.map.emplace(cell->id(), std::move(cell));
  }
  void remove(ActorId id) noexcept {
    std::shared_ptr<ActorCell> victim;  // released outside the lock
    auto& s = shard(id);
    std::lock_guard lk(s.mu);
    auto it = s.map.find(id);
    if (it == s.map.end()) return;
    victim = std::move(it->second);
    s.map.erase(it);
  }
  std::shared_ptr<ActorCell> find(ActorId id) const {
    auto& s = shard(id);
    std::lock_guard lk(s.mu);
    auto it = s.map.find(id);
    return it == s.map.end() ? nullptr : it->second;
  }
  std::size_t size() const {
    std::size_t n = 0;
    for (auto& s : shards_) {
      std::lock_guard lk(s.mu);
      n += s.map.size();
    }
    return n;
  }
  std::vector<std::shared_ptr<ActorCell>> snapshot() const {
    std::vector<std::shared_ptr<ActorCell>> out;
    for (auto& s : shards_) {
      std::lock_guard lk(s.mu);
      for (auto& [id, c] : s.map) out.push_back(c);
    }
    return out;
  }

 private:
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<ActorId, std::shared_ptr<ActorCell>> map;
  };
  static constexpr std::size_t kShards = 64;
  Shard& shard(ActorId id) const { return shards_[id % kShards]; }
  mutable std::array<Shard, kShards> shards_;
};

}  // namespace troupe::detail
