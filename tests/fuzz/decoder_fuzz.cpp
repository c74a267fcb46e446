// Fuzz target for the wire decoder: frames of envelopes, then their payloads
// decoded as a receiver decodes them:
//  - as the arguments of every registered method (decode_call), also after a
//    name (a call addressed "@name");
//  - run on a live actor of a local runtime (run_bytes, the way a receiver
//    runs a batch of calls): a call that decodes runs, and its reply must
//    decode on the asker's side (a failure there traps);
//  - as the result of every method (an asker's reply), as an error reply, and
//    as a spawn's constructor arguments.
// Built as a libFuzzer target with clang (preset `fuzz`), and otherwise as a
// test that feeds it a fixed number of pseudo-random and mutated inputs.
//
// Blocks are bounded at 2 MiB here, not at the production limit
// (kMaxSegmentBytes, 64 GiB): a receiver allocates what a frame declares, as
// it must for the bytes MPI then delivers, and a random claim near the
// production limit would only measure the machine's memory.
#include <cereal/types/optional.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
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
  int ints(int a, long b, unsigned char c) {  // any bytes run it: wraps, as unsigned sums do
    return static_cast<int>(static_cast<unsigned>(a) + static_cast<unsigned long>(b) + c);
  }
  double doubles(std::vector<double> v) { return v.empty() ? 0 : v[0]; }
  std::size_t text(std::string s, std::vector<std::string> more) { return s.size() + more.size(); }
  std::size_t nested(std::map<std::string, std::vector<double>> m, std::vector<std::vector<int>> vv) {
    return m.size() + vv.size();
  }
  std::size_t points(std::vector<Point> ps, std::optional<Point> p) { return ps.size() + (p ? 1 : 0); }
  std::size_t refs(troupe::ActorRef<Sink> a, std::tuple<int, std::string, troupe::ActorRef<Sink>> t) {
    return a.id() + std::get<0>(t);
  }
  // Results of every shape go back to the asker.
  Point moved(Point p, double dx) { return Point{p.x + dx, p.y, p.label}; }
  std::map<std::string, std::vector<double>> table(std::map<std::string, std::vector<double>> m) { return m; }
  std::vector<std::string> words(std::vector<std::string> w) { return w; }
  troupe::ActorRef<Sink> pass(troupe::ActorRef<Sink> r) { return r; }
  std::optional<Point> maybe(std::optional<Point> p) { return p; }
  void nothing(std::vector<int>) {}
};
TROUPE_REMOTE(Sink, troupe::init<int, std::string>, &Sink::ints, &Sink::doubles, &Sink::text, &Sink::nested,
              &Sink::points, &Sink::refs, &Sink::moved, &Sink::table, &Sink::words, &Sink::pass, &Sink::maybe,
              &Sink::nothing);

}  // namespace fz

namespace {

using namespace troupe::detail;

// Received vectors of 1 MiB or more are kept after their call and the next
// ones are made from them (troupe/detail/vector_recycler.hpp): on here, so
// decoding also runs through kept vectors of every size left behind.
[[maybe_unused]] const bool kRecycling = (set_recycle_budget(std::size_t{8} << 20), true);

/// What a method's reply looks like on the wire, caught as the receiver's
/// reply sink would send it.
class CaughtReply final : public ReplySink {
 public:
  void reply_value(troupe::NodeId, std::uint64_t, std::unique_ptr<PayloadWriter> value) override {
    bytes = ByteBuffer{};
    WireOutputArchive ar(bytes, nullptr);
    value->write(ar);
    kind = Kind::value;
  }
  void reply_bytes(troupe::NodeId, std::uint64_t, const void* data, std::size_t size) override {
    bytes = ByteBuffer{};
    bytes.append(data, size);
    kind = Kind::numbers;
  }
  void reply_error(troupe::NodeId, std::uint64_t, std::exception_ptr) override { kind = Kind::error; }
  enum class Kind { none, value, numbers, error } kind = Kind::none;
  ByteBuffer bytes;
};

/// The asker's side of method M: its result decoded from bytes.
template <auto M>
bool decode_result(const std::byte* p, std::size_t n, const std::vector<std::uint64_t>& segs, bool numbers) {
  using R = typename Method<M>::Result;
  TypedReply<R> reply{troupe::Promise<R>{}};
  if (numbers) {
    if (!reply.decode_bytes(p, n)) return false;
  } else {
    if (segs.empty() && reply.decode_bytes(p, n)) {  // the receiver's fast path first, as on_reply does
      reply.complete();
      return true;
    }
    WireInputArchive ar(p, n, segs.data(), segs.size());
    DecodingScope scope(nullptr);
    reply.decode(ar);
    if (!ar.complete()) return false;
  }
  reply.complete();
  return true;
}

struct MethodCase {
  const char* name;
  const MethodEntry* entry;
  bool (*decode_result)(const std::byte*, std::size_t, const std::vector<std::uint64_t>&, bool numbers);
};

template <auto M>
MethodCase method_case(const char* name) {
  const MethodEntry* m = WireRegistry::instance().method(fnv1a64(name));
  if (m == nullptr) __builtin_trap();
  return MethodCase{name, m, &decode_result<M>};
}

const std::vector<MethodCase>& methods() {
  static const std::vector<MethodCase> all{
      method_case<&fz::Sink::ints>("Sink::ints"),       method_case<&fz::Sink::doubles>("Sink::doubles"),
      method_case<&fz::Sink::text>("Sink::text"),       method_case<&fz::Sink::nested>("Sink::nested"),
      method_case<&fz::Sink::points>("Sink::points"),   method_case<&fz::Sink::refs>("Sink::refs"),
      method_case<&fz::Sink::moved>("Sink::moved"),     method_case<&fz::Sink::table>("Sink::table"),
      method_case<&fz::Sink::words>("Sink::words"),     method_case<&fz::Sink::pass>("Sink::pass"),
      method_case<&fz::Sink::maybe>("Sink::maybe"),     method_case<&fz::Sink::nothing>("Sink::nothing"),
  };
  return all;
}

/// A local runtime and one Sink on it: calls that decode run on it.
troupe::detail::ActorCell& live_sink() {
  static troupe::Runtime* rt = new troupe::Runtime(troupe::Config{});  // kept: its threads live to the end
  static std::shared_ptr<troupe::detail::ActorCell> cell = rt->spawn<fz::Sink>(1, std::string("fuzz")).cell();
  return *cell;
}

void decode_calls(const std::byte* p, std::size_t n, const std::vector<std::uint64_t>& segs) {
  for (const MethodCase& c : methods()) {
    try {
      WireInputArchive ar(p, n, segs.data(), segs.size());
      DecodingScope scope(nullptr);
      auto msg = c.entry->decode_call(ar, RemoteCaller{});
      (void)ar.complete();
    } catch (const std::exception&) {
    }
  }
}

long g_calls_ran = 0;  // calls that decoded, ran, and whose replies decoded

/// As a receiver runs a batch's calls (segment-free, inline payloads): a call
/// that decodes runs, and what it answers must decode on the asker's side.
void run_calls(const std::byte* p, std::size_t n) {
  troupe::detail::ActorCell& cell = live_sink();
  for (const MethodCase& c : methods()) {
    if (!c.entry->plain) continue;
    CaughtReply caught;
    try {
      c.entry->run_bytes(p, n, RemoteCaller{&caught, 1, /*corr=*/7}, cell);
    } catch (const std::exception&) {
      continue;  // undecodable: refused before the method ran (the receiver tells the asker)
    }
    if (caught.kind == CaughtReply::Kind::none) __builtin_trap();  // ran, and nobody was answered
    if (caught.kind == CaughtReply::Kind::error) continue;
    try {
      if (!c.decode_result(caught.bytes.data(), caught.bytes.size(), {}, caught.kind == CaughtReply::Kind::numbers))
        __builtin_trap();  // a reply the asker cannot read whole
    } catch (...) {
      __builtin_trap();
    }
    ++g_calls_ran;
  }
}

void decode_payload(const std::byte* p, std::size_t n, const std::vector<std::uint64_t>& segs) {
  decode_calls(p, n, segs);
  // "@name" calls: the name first, then the arguments.
  try {
    WireInputArchive ar(p, n, nullptr, 0);
    std::string name;
    ar(name);
    decode_calls(p + ar.position(), n - ar.position(), segs);
  } catch (const std::exception&) {
  }
  if (segs.empty()) run_calls(p, n);
  // The bytes as each method's result (a reply to an ask).
  for (const MethodCase& c : methods()) {
    try {
      (void)c.decode_result(p, n, segs, false);
    } catch (const std::exception&) {
    }
  }
  try {
    WireInputArchive ar(p, n, WireInputArchive::InlineBlocks{});
    WireError w;
    ar(w);
    (void)w.to_exception(1);
  } catch (const std::exception&) {
  }
  const ClassEntry* c = WireRegistry::instance().cls(fnv1a64("class Sink"));
  try {
    WireInputArchive ar(p, n, WireInputArchive::InlineBlocks{});
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
namespace {

/// Every file of a corpus folder (the libFuzzer target's findings, kept in
/// tests/fuzz/corpus), fed once each; returns how many.
long replay_corpus(const char* folder) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(folder))
    if (entry.is_regular_file()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());  // the same order every run
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  return static_cast<long>(files.size());
}

}  // namespace

// Without libFuzzer: the corpus folder's inputs if one is given, then valid
// envelopes with random or mutated payloads, and random bytes, from a fixed
// seed. With --write, the generated inputs are written to the folder instead
// (seeds for the libFuzzer target, which finds well-formed envelopes slowly).
//   unit_decoder_fuzz [iterations [corpus-folder]]
//   unit_decoder_fuzz --write folder count
int main(int argc, char** argv) {
  const bool write = argc > 1 && std::strcmp(argv[1], "--write") == 0;
  if (write && argc != 4) {
    std::fprintf(stderr, "usage: %s --write folder count\n", argv[0]);
    return 2;
  }
  const long iterations = write ? std::atol(argv[3]) : argc > 1 ? std::atol(argv[1]) : 200000;
  const long replayed = !write && argc > 2 ? replay_corpus(argv[2]) : 0;
  if (!write && argc > 2 && replayed == 0) {
    std::fprintf(stderr, "decoder fuzz: no inputs in %s\n", argv[2]);
    return 1;
  }
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
  {  // Sink::moved's arguments
    ByteBuffer b;
    WireOutputArchive ar(b, nullptr);
    ar(fz::Point{1, 2, "m"}, 0.5);
    seeds.push_back(std::move(b));
  }
  {  // Sink::words addressed by name: the name, then the arguments
    ByteBuffer b;
    WireOutputArchive ar(b, nullptr);
    ar(std::string("sink"), std::vector<std::string>{"w", "ords"});
    seeds.push_back(std::move(b));
  }
  {  // Sink::nothing's and Sink::maybe's
    ByteBuffer b;
    WireOutputArchive ar(b, nullptr);
    ar(std::vector<int>{1, 2, 3}, std::optional<fz::Point>{});
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
    if (write) {
      std::ofstream out(std::filesystem::path(argv[2]) / ("seed-" + std::to_string(it)), std::ios::binary);
      out.write(reinterpret_cast<const char*>(frame.data()), static_cast<std::streamsize>(frame.size()));
      continue;
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(frame.data()), frame.size());
  }
  if (write) return 0;
  std::printf("decoder fuzz: %ld corpus inputs and %ld generated, no crash; %ld calls decoded, ran, and their replies "
              "decoded\n",
              replayed, iterations, g_calls_ran);
  if (g_calls_ran == 0) return 1;  // the inputs never reached a method: the harness is broken
  return 0;
}
#endif
