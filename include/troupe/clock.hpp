// Hybrid logical clock (Kulkarni et al.): timestamps that follow physical time
// and never go backwards across messages. Every envelope carries the sender's
// clock; receiving one merges it.
#pragma once

#include <atomic>
#include <compare>
#include <cstdint>

namespace troupe {

/// 48 bits of wall-clock milliseconds since the Unix epoch, 16 bits of logical counter.
struct HlcTimestamp {
  std::uint64_t raw = 0;
  std::uint64_t physical_ms() const noexcept { return raw >> 16; }
  std::uint16_t logical() const noexcept { return static_cast<std::uint16_t>(raw & 0xffff); }
  friend auto operator<=>(const HlcTimestamp&, const HlcTimestamp&) = default;
};

class HybridClock {
 public:
  /// A timestamp for a local event or a send: greater than every timestamp this
  /// clock gave or merged before.
  HlcTimestamp now() noexcept;
  /// Merges a timestamp received from another node; returns the receive event's timestamp.
  HlcTimestamp merge(HlcTimestamp remote) noexcept;
  /// The last timestamp given, without advancing.
  HlcTimestamp peek() const noexcept { return HlcTimestamp{state_.load(std::memory_order_acquire)}; }

 private:
  std::atomic<std::uint64_t> state_{0};
};

}  // namespace troupe
