// Fuzz target for the wire decoder: frames of envelopes, then their payloads
// decoded as the arguments of every registered method and as error replies.
// Built as a libFuzzer target with clang (preset `fuzz`), and otherwise as a
// test that feeds it a fixed number of pseudo-random and mutated inputs.
#include <cereal/types/optional.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "remote/wire_error.hpp"
#include "troupe/remote.hpp"
#include "wire/envelope.hpp"

namespace fz {

struct Point {
  double x = 0, y = 0;
  std::string label;
  template <class Ar>
  void serialize(Ar& ar) {
    ar(x, y, label);
  }
};

class Sink {
 public:
  Sink(int, std::string) {}
  int ints(int a, long b, unsigned char c) { return a + static_cast<int>(b) + c; }
  double doubles(std::vector<double> v) { return v.empty() ? 0 : v[0]; }
  std::size_t text(std::string s, std::vector<std::string> more) { return s.size() + more.size(); }
  std::size_t nested(std::map<std::string, std::vector<double>> m, std::vector<std::vector<int>> vv) {
    return m.size() + vv.size();
  }
  std::size_t points(std::vector<Point> ps, std::optional<Point> p) { return ps.size() + (p ? 1 : 0); }
  std::size_t refs(troupe::ActorRef<Sink> a, std::tuple<int, std::string, troupe::ActorRef<Sink>> t) {
    return a.id() + std::get<0>(t);
  }
};
TROUPE_REMOTE(Sink, troupe::init<int, std::string>, &Sink::ints, &Sink::doubles, &Sink::text, &Sink::nested,
              &Sink::points, &Sink::refs);

}  // namespace fz

namespace {

using namespace troupe::detail;

// Received vectors of 1 MiB or more are kept after their call and the next
// ones are made from them (troupe/detail/vector_recycler.hpp): on here, so
// decoding also runs through kept vectors of every size left behind.
[[maybe_unused]] const bool kRecycling = (set_recycle_budget(std::size_t{8} << 20), true);

const char* kMethods[] = {"Sink::ints", "Sink::doubles", "Sink::text", "Sink::nested", "Sink::points", "Sink::refs"};

void decode_payload(const std::byte* p, std::size_t n, const std::vector<std::uint64_t>& segs) {
  for (const char* name : kMethods) {
    const MethodEntry* m = WireRegistry::instance().method(fnv1a64(name));
    if (m == nullptr) __builtin_trap();
    try {
      WireInputArchive ar(p, n, segs.data(), segs.size());
      DecodingScope scope(nullptr);
      auto msg = m->decode_call(ar, RemoteCaller{});
      (void)ar.complete();
    } catch (const std::exception&) {
    }
  }
  try {
    WireInputArchive ar(p, n, nullptr, 0);
    WireError w;
    ar(w);
    (void)w.to_exception(1);
  } catch (const std::exception&) {
  }
  const ClassEntry* c = WireRegistry::instance().cls(fnv1a64("class Sink"));
  try {
    WireInputArchive ar(p, n, nullptr, 0);
    auto job = c->decode_init(ar);
  } catch (const std::exception&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* p = reinterpret_cast<const std::byte*>(data);
  std::size_t off = 0;
  while (off < size) {
    Envelope env;
    EnvelopeFault fault;
    // A small block limit: what a decoder would allocate for a corrupt claim
    // stays small, as kMaxSegmentBytes bounds it in production (2 MiB: room
    // for vectors that are kept and made from kept ones).
    const std::size_t n = parse_envelope(p + off, size - off, env, fault, /*max_segment=*/2 << 20);
    if (n == 0) {
      if (fault.frame_lost || fault.skip == 0) break;
      off += fault.skip;
      continue;
    }
    off += n;
    decode_payload(env.payload, env.payload_size, env.segment_sizes);
  }
  decode_payload(p, size, {});  // the bytes as a bare payload too
  return 0;
}

#ifndef TROUPE_LIBFUZZER
// Without libFuzzer: valid envelopes with random or mutated payloads, and
// random bytes, from a fixed seed.
int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 200000;
  std::mt19937_64 rng(12345);
  auto byte = [&] { return static_cast<std::uint8_t>(rng()); };
  // A few well-formed payloads to mutate.
  std::vector<ByteBuffer> seeds;
  {
    ByteBuffer b;
    WireOutputArchive ar(b, nullptr);
    ar(std::vector<double>{1, 2, 3}, std::string("hello"), std::vector<std::string>{"a", "bb"});
    seeds.push_back(std::move(b));
  }
  {
    ByteBuffer b;
    WireOutputArchive ar(b, nullptr);
    std::map<std::string, std::vector<double>> m{{"k", {1.0}}};
    ar(m, std::vector<std::vector<int>>{{1, 2}, {3}});
    seeds.push_back(std::move(b));
  }
  {
    ByteBuffer b;
    WireOutputArchive ar(b, nullptr);
    ar(std::vector<fz::Point>{{1, 2, "p"}}, std::optional<fz::Point>{fz::Point{3, 4, "q"}});
    seeds.push_back(std::move(b));
  }
  // Vectors of about 2 MiB, carried by a declared segment: kept after their
  // call, and the next ones made from them, shrunk or grown within a kept
  // vector's room.
  constexpr std::uint64_t kLarge = (std::uint64_t{2} << 20) / sizeof(double);
  constexpr std::uint64_t kShorter[] = {0, 1, 1000};
  for (const std::uint64_t d : kShorter) {
    const std::uint64_t n = kLarge - d;
    ByteBuffer b;
    WireOutputArchive ar(b, nullptr);
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(n)));
    seeds.push_back(std::move(b));
  }
  const std::size_t first_large = seeds.size() - 3;
  for (long it = 0; it < iterations; ++it) {
    ByteBuffer frame;
    const int envelopes = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < envelopes; ++e) {
      if (rng() % 4 == 0) {  // raw junk
        const std::size_t n = rng() % 64;
        for (std::size_t i = 0; i < n; ++i) {
          auto b = byte();
          frame.append(&b, 1);
        }
        continue;
      }
      EnvelopeWriter w(frame);
      w.begin(static_cast<Kind>(1 + rng() % 9), 0, rng(), rng(), rng(), rng());
      // The large vectors now and then (each decode as other types allocates too).
      const auto& seed = rng() % 256 == 0 ? seeds[first_large + rng() % 3] : seeds[rng() % first_large];
      ByteBuffer payload;
      payload.append(seed.data(), seed.size());
      const int flips = static_cast<int>(rng() % 6);
      for (int f = 0; f < flips && payload.size() > 0; ++f) payload.data()[rng() % payload.size()] = std::byte{byte()};
      if (rng() % 3 == 0) payload.resize(rng() % (payload.size() + 1));  // truncate
      frame.append(payload.data(), payload.size());
      std::vector<std::uint64_t> segs;
      if (rng() % 8 == 0) segs.push_back(kSegmentThreshold + rng() % 1000);
      if (&seed - seeds.data() >= static_cast<std::ptrdiff_t>(first_large))  // a large vector's block, of one of the three sizes
        segs.assign(1, (kLarge - kShorter[rng() % 3]) * sizeof(double));
      w.finish(segs.data(), static_cast<std::uint32_t>(segs.size()));
      if (rng() % 10 == 0) frame.data()[rng() % frame.size()] = std::byte{byte()};  // break a header
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(frame.data()), frame.size());
  }
  std::printf("decoder fuzz: %ld inputs, no crash\n", iterations);
  return 0;
}
#endif
