// take_out: empties a table of what matches, where memory may run short (a
// node's loss failing the calls that waited for it).
#pragma once

#include <array>
#include <cstddef>
#include <mutex>

namespace troupe::detail {

/// Takes the entries `match` picks out of `map` (under `mu`) and hands each
/// one's node handle to `take` outside the lock, in batches of kBatch:
/// nothing is allocated (a node handle keeps its entry's own memory), so
/// memory running short cannot leave an entry behind. (An entry that matches
/// and is added meanwhile may be taken too.)
template <std::size_t kBatch = 32, class Map, class Match, class Take>
void take_out(std::mutex& mu, Map& map, Match&& match, Take&& take) {
  for (bool more = true; more;) {
    std::array<typename Map::node_type, kBatch> batch;
    std::size_t count = 0;
    more = false;
    {
      std::lock_guard lk(mu);
      for (auto it = map.begin(); it != map.end();) {
        if (!match(*it)) {
          ++it;
        } else if (count == kBatch) {
          more = true;
          break;
        } else {
          batch[count++] = map.extract(it++);
        }
      }
    }
    for (std::size_t i = 0; i < count; ++i) take(batch[i]);
  }
}

}  // namespace troupe::detail
