// The transport engine on its own, under a handler of the test's: what its
// progress thread hands on. Runs on 2 ranks.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mpi/failing_new.hpp"
#include "mpi/polite_mpi.hpp"
#include "mpi/mpi_call_count.hpp"
#include "transport/engine.hpp"
#include "transport/stage_pool.hpp"
#include "troupe/testing.hpp"
#include "wire/envelope.hpp"

using namespace std::chrono_literals;
using troupe::detail::ByteBuffer;
using troupe::detail::Engine;
using troupe::detail::Envelope;
using troupe::detail::EnvelopeFault;
using troupe::detail::EnvelopeWriter;
using troupe::detail::Inbound;
using troupe::detail::InboundHandler;
using troupe::detail::InSegment;
using troupe::detail::Kind;
using troupe::detail::OutEnvelope;
using troupe::detail::OutSegment;
using troupe::NodeId;

namespace {

template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

/// A frame of one envelope (id told apart by the handler) declaring blocks of these sizes.
ByteBuffer frame_of(std::uint64_t id, std::vector<std::uint64_t> blocks) {
  ByteBuffer frame;
  frame.extend(troupe::detail::kFrameSlot);
  EnvelopeWriter w(frame);
  w.begin(Kind::control, 0, 0, 0, id, 0);
  w.finish(blocks.data(), static_cast<std::uint32_t>(blocks.size()));
  const auto len = static_cast<std::uint32_t>(frame.size() - troupe::detail::kFrameSlot);
  std::memcpy(frame.data(), &len, sizeof len);
  return frame;
}

/// Sends an envelope of no payload and no blocks (id told apart by the handler)
/// to node `to` through the engine, as a sender of the runtime does.
void send_control(Engine& engine, NodeId to, std::uint64_t id, bool urgent, NodeId from = 0) {
  auto d = troupe::detail::take_draft(to);
  EnvelopeWriter w(d->bytes);
  w.begin(Kind::control, from, 0, 0, id, 0);
  w.finish(nullptr, 0);
  engine.send(std::move(d), urgent);
}

/// A stub: [u32 kStubMark][u32 0][u64 size of the large frame that follows].
ByteBuffer stub_of(std::uint64_t size) {
  ByteBuffer s;
  const std::uint32_t head[2] = {troupe::detail::kStubMark, 0};
  s.append(head, sizeof head);
  s.append(&size, sizeof size);
  return s;
}

/// Records the order in which envelopes are delivered, each block in a buffer of its own.
class OrderSink final : public InboundHandler {
 public:
  std::mutex mu;
  std::vector<std::uint64_t> order;        // envelope ids, as delivered
  std::deque<std::vector<std::byte>> blocks;  // stable addresses
  std::atomic<int> read{0};                // envelopes read (their frames are in)
  std::atomic<int> abandoned{0};           // envelopes abandoned (never to be delivered)
  bool refuse_blocks_of_even_ids = false;  // their blocks are left to the engine (to drain)
  std::function<void()> on_read;           // called for each envelope read (in the engine's round)

  std::unique_ptr<Inbound> on_envelope(NodeId, Envelope& env) override {
    struct Recorded final : Inbound {
      Recorded(OrderSink& s, std::uint64_t i) : sink(s), id(i) {}
      void deliver() override {
        std::lock_guard lk(sink.mu);
        sink.order.push_back(id);
      }
      void reject(std::exception_ptr) override { ADD_FAILURE() << "envelope " << id << " had a block of a wrong size"; }
      void abandon() noexcept override { sink.abandoned.fetch_add(1); }
      OrderSink& sink;
      std::uint64_t id;
    };
    // Keeps nothing if an allocation fails (the engine reads the envelope
    // again later), as the engine asks of its handlers.
    auto in = std::make_unique<Recorded>(*this, env.id);
    if (refuse_blocks_of_even_ids && env.id % 2 == 0) return in;  // delivered, its blocks not taken
    in->segments.reserve(env.segment_sizes.size());
    std::size_t added = 0;
    try {
      for (auto size : env.segment_sizes) {
        blocks.emplace_back(size);
        ++added;
        in->segments.push_back(InSegment{blocks.back().data(), blocks.back().size()});
      }
    } catch (...) {
      for (; added != 0; --added) blocks.pop_back();
      throw;
    }
    read.fetch_add(1);
    if (on_read) on_read();
    return in;
  }
  void on_bad_envelope(NodeId, const EnvelopeFault& fault) override { ADD_FAILURE() << fault.what; }
  std::size_t delivered() {
    std::lock_guard lk(mu);
    return order.size();
  }
};

/// Rank 1 tells rank 0 that it has read what was sent so far; rank 0 waits for
/// that before it sends the blocks, so they arrive in later rounds for sure.
constexpr int kTagGo = 77;
void go_ahead() {
  char go = 1;
  MPI_Send(&go, 1, MPI_CHAR, 0, kTagGo, MPI_COMM_WORLD);
}
void wait_for_go_ahead() {
  char go = 0;
  MPI_Recv(&go, 1, MPI_CHAR, 1, kTagGo, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}
void go_ahead_to(int rank) {
  char go = 1;
  MPI_Send(&go, 1, MPI_CHAR, rank, kTagGo, MPI_COMM_WORLD);
}
void wait_for_go_ahead_from(int rank) {
  char go = 0;
  MPI_Recv(&go, 1, MPI_CHAR, rank, kTagGo, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

/// Rank 0's side of every test, by hand on the engine's communicator: one
/// frame per entry of `declared` (envelope ids 1, 2, ..., each declaring those
/// blocks); then, once rank 1 says it has read them, the blocks, each filled
/// with its byte.
void send_frames_then_blocks(Engine& engine, const std::vector<std::vector<std::uint64_t>>& declared,
                             const std::vector<std::pair<std::size_t, std::byte>>& blocks) {
  for (std::size_t i = 0; i < declared.size(); ++i) {
    const ByteBuffer f = frame_of(i + 1, declared[i]);
    MPI_Send(f.data(), static_cast<int>(f.size()), MPI_BYTE, 1, troupe::detail::kTagFrame, engine.comm());
  }
  wait_for_go_ahead();
  for (const auto& [size, fill] : blocks) {
    std::vector<std::byte> block(size, fill);
    MPI_Send(block.data(), static_cast<int>(size), MPI_BYTE, 1, troupe::detail::kTagSegment, engine.comm());
  }
}

bool filled_with(const std::vector<std::byte>& block, std::byte fill) {
  return std::all_of(block.begin(), block.end(), [fill](std::byte b) { return b == fill; });
}

/// An envelope of the out-of-memory tests: `payload` bytes, and a block of
/// `block` bytes (none if 0), staged if `staged`.
struct Shape {
  std::size_t payload = 0, block = 0;
  bool staged = false;
};

/// Envelopes to rank 1 of these shapes, ids from total + 1 on (total counts
/// them); each block is filled with its envelope's id, which `fills` records.
std::vector<OutEnvelope*> make_batch(const std::vector<Shape>& shapes, std::uint64_t& total,
                                     std::vector<std::uint64_t>& fills) {
  std::vector<OutEnvelope*> envs;
  for (const Shape& shape : shapes) {
    const std::uint64_t id = ++total;
    auto* e = new OutEnvelope();
    e->dest = 1;
    e->kind_tell = true;
    std::vector<std::uint64_t> sizes;
    if (shape.block != 0) {
      auto block = std::make_shared<std::vector<std::byte>>(shape.block, static_cast<std::byte>(id & 0xff));
      e->segments.push_back(OutSegment{block->data(), block->size(), false, shape.staged});
      e->keep.push_back(block);
      sizes.push_back(block->size() | (shape.staged ? troupe::detail::kSegmentPieced : 0));
      fills.push_back(id);
    }
    EnvelopeWriter w(e->bytes);
    w.begin(Kind::control, 0, 0, 0, id, 0);
    const std::vector<std::byte> payload(shape.payload, std::byte{7});
    e->bytes.append(payload.data(), payload.size());
    w.finish(sizes.data(), static_cast<std::uint32_t>(sizes.size()));
    envs.push_back(e);
  }
  return envs;
}

/// tt::bcast on rank 0 of the receiving tests, which drives its engine (it has
/// no progress thread) while it waits. (With one, under TSan, Open MPI copying a
/// frame that thread wrote, on the thread in the broadcast, reads as a race.)
void bcast_driving(Engine& engine, void* buf, int bytes, int root) {
  MPI_Request req;
  MPI_Ibcast(buf, bytes, MPI_BYTE, root, MPI_COMM_WORLD, &req);
  int done = 0;
  while (true) {
    engine.progress();
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done != 0) return;
    std::this_thread::sleep_for(50us);
  }
}

/// Rank 1's check: every envelope of ids 1..total delivered once, in order,
/// each block (of the envelopes `fills` names, in order) intact.
void expect_all_delivered(OrderSink& sink, std::uint64_t total, const std::vector<std::uint64_t>& fills) {
  std::lock_guard lk(sink.mu);
  EXPECT_EQ(sink.order.size(), total);
  for (std::size_t i = 0; i < std::min<std::size_t>(total, sink.order.size()); ++i) EXPECT_EQ(sink.order[i], i + 1);
  EXPECT_EQ(sink.blocks.size(), fills.size());
  for (std::size_t i = 0; i < std::min(fills.size(), sink.blocks.size()); ++i)
    EXPECT_TRUE(filled_with(sink.blocks[i], static_cast<std::byte>(fills[i] & 0xff))) << "block of envelope " << fills[i];
}

}  // namespace

TEST(Engine, ABlockArrivingAfterItsFrameHandsPollingToTheWorkers) {
  // Rank 0 sends, by hand on the engine's communicator, a frame whose envelope
  // declares a 4 MiB block, and the block itself once rank 1 has read the
  // frame: they reach rank 1 in two separate rounds of its progress thread.
  // Nobody else drives rank 1's engine, so the block's arrival must be
  // reported as activity too (the runtime then polls on a worker, which runs
  // the turn the block made ready at once instead of leaving it to the
  // scheduler).
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  std::atomic<int> activity{0}, after_delivery{0};  // outlive the engine's thread
  Engine engine(MPI_COMM_WORLD, sink);
  constexpr std::size_t kBlock = std::size_t{4} << 20;
  if (rank == 0) {
    send_frames_then_blocks(engine, {{kBlock}}, {{kBlock, std::byte{7}}});
  } else if (rank == 1) {
    engine.start_progress_thread(nullptr, 10ms, [&] {
      activity.fetch_add(1);
      if (sink.delivered() != 0) after_delivery.fetch_add(1);
    });
    // The frame's round reports its arrival after the frame was read.
    EXPECT_TRUE(wait_until([&] { return activity.load() >= 1; }, 10s)) << "the frame was never read";
    go_ahead();  // whatever happened: rank 0 must not wait forever
    const bool delivered = wait_until([&] { return sink.delivered() == 1; }, 10s);
    EXPECT_TRUE(delivered) << "the envelope was never delivered";
    // Delivery happens inside a progress round; the report follows it at once.
    EXPECT_TRUE(wait_until([&] { return after_delivery.load() >= 1; }, 1s))
        << "the block's arrival was not reported (activity reports: " << activity.load() << ")";
    EXPECT_GE(activity.load(), 2) << "the frame and the block arrive apart: two reports";
    engine.stop_progress_thread();
    EXPECT_EQ(sink.blocks.size(), 1u);
    if (delivered && sink.blocks.size() == 1) {  // (no ASSERT before the barrier: rank 0 would wait there forever)
      EXPECT_EQ(sink.blocks[0].size(), kBlock);
      EXPECT_TRUE(filled_with(sink.blocks[0], std::byte{7}));
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, ABlockThatCompletesCountsAsHearingFromItsSender) {
  // A sender's heartbeats may wait behind its blocks (MPI sends a pair's
  // messages in order): a completed block is news of its sender too. Rank 0
  // sends a frame declaring a 4 MiB block, and the block only once rank 1,
  // having read the frame, has waited 200 ms: no frame comes between, so only
  // the block can move rank 1's last news of rank 0 past the frame's.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  constexpr std::size_t kBlock = std::size_t{4} << 20;
  if (rank == 0) {
    send_frames_then_blocks(engine, {{kBlock}}, {{kBlock, std::byte{5}}});
  } else if (rank == 1) {
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    EXPECT_TRUE(wait_until([&] { return sink.read.load() == 1; }, 10s)) << "the frame was never read";
    const auto at_frame = engine.last_heard(0);
    std::this_thread::sleep_for(200ms);
    go_ahead();  // whatever happened: rank 0 must not wait forever
    EXPECT_TRUE(wait_until([&] { return sink.delivered() == 1; }, 10s)) << "the envelope was never delivered";
    const auto at_block = engine.last_heard(0);
    engine.stop_progress_thread();
    EXPECT_GE(at_block - at_frame, 190ms) << "the block's arrival did not count as news of its sender";
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, AFrameThatNeverEndsKeepsItsSenderAliveOnlyForAWhile) {
  // The failure detector's last check (heard_pending) looks for news of a
  // silent node that is waiting to be read. A sender that died in the middle
  // of a large frame leaves its receive pending for ever, and the blocks it
  // sent after it waiting in MPI behind it: neither may keep it alive for
  // ever, or it is never declared lost. Rank 0 sends a stub announcing a large
  // frame, then a message with the blocks' tag, and the frame itself only once
  // rank 1 has checked: evidence within the patience given (plus a microsecond
  // per announced byte), none after it; and the frame, once in, is news again.
  using troupe::detail::kPostedFrame;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  ByteBuffer frame;
  std::uint64_t ids = 0;
  while (frame.size() <= kPostedFrame) {
    const ByteBuffer f = frame_of(++ids, {});
    frame.append(f.data(), f.size());
  }
  const std::uint64_t stray = 42;
  if (rank == 0) {
    auto send = [&](const void* data, std::size_t size, int tag) {
      MPI_Send(data, static_cast<int>(size), MPI_BYTE, 1, tag, engine.comm());
    };
    const ByteBuffer stub = stub_of(frame.size());
    send(stub.data(), stub.size(), troupe::detail::kTagFrame);
    send(&stray, sizeof stray, troupe::detail::kTagSegment);
    wait_for_go_ahead();
    send(frame.data(), frame.size(), troupe::detail::kTagLargeFrame);
  } else if (rank == 1) {
    constexpr auto patience = 500ms;  // room for a sanitized build's slow first check
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    EXPECT_TRUE(wait_until([&] { return engine.stats().frames_received == 1; }, 10s)) << "the stub was never read";
    EXPECT_TRUE(wait_until(
        [&] {
          int flag = 0;
          MPI_Iprobe(0, troupe::detail::kTagSegment, engine.comm(), &flag, MPI_STATUS_IGNORE);
          return flag != 0;
        },
        10s))
        << "the stray block never came";
    EXPECT_TRUE(engine.heard_pending(0, patience)) << "a large frame just announced is not news of its sender";
    std::this_thread::sleep_for(patience + std::chrono::microseconds(frame.size()) + 30ms);
    EXPECT_FALSE(engine.heard_pending(0, patience)) << "a frame that never ends keeps its sender alive";
    const auto checked = engine.last_heard(0);
    go_ahead();  // whatever happened: rank 0 must not wait forever
    EXPECT_TRUE(wait_until([&] { return sink.delivered() == ids; }, 10s)) << "delivered " << sink.delivered();
    const auto after = engine.last_heard(0);
    engine.stop_progress_thread();
    EXPECT_GE(after - checked, patience) << "the large frame's arrival did not count as news of its sender";
    std::uint64_t got = 0;
    MPI_Recv(&got, 1, MPI_UINT64_T, 0, troupe::detail::kTagSegment, engine.comm(), MPI_STATUS_IGNORE);
    EXPECT_EQ(got, stray);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, AFrameWaitingForMemoryInItsSlotIsNewsOfItsSender) {
  // A frame that landed and found no memory to be read waits in its ring slot,
  // where neither a probe nor a look at the posted receives sees it. It is
  // news of its sender for the failure detector's last check, as a queued
  // frame is (its wait has a patience of its own): else a live node whose
  // last frame waits for memory would be declared lost.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  if (rank == 0) {
    wait_for_go_ahead();
    const ByteBuffer f = frame_of(1, {});
    MPI_Send(f.data(), static_cast<int>(f.size()), MPI_BYTE, 1, troupe::detail::kTagFrame, engine.comm());
    wait_for_go_ahead();
  } else if (rank == 1) {
    engine.progress();  // the ring's receives posted while there is memory
    go_ahead();
    tt::fail_allocations_from(0);  // the frame's envelope finds none
    const bool held = wait_until(
        [&] {
          engine.progress();
          return engine.stats().receive_waits != 0;
        },
        10s);
    tt::stop_failing();
    EXPECT_TRUE(held) << "the frame never came, or found memory";
    EXPECT_EQ(sink.delivered(), 0u);
    if (held) {
      EXPECT_TRUE(engine.heard_pending(0, 1s)) << "a frame waiting for memory in its slot is not news of its sender";
    }
    EXPECT_TRUE(wait_until(
        [&] {
          engine.progress();
          return sink.delivered() == 1;
        },
        10s));
    EXPECT_FALSE(engine.heard_pending(0, 1s)) << "news of a sender whose frame was read";
    go_ahead();
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, AFrameThatNeverFinishesArrivingDoesNotHoldUpTheShutdown) {
  // Frames up to kPostedFrame travel eagerly, so a posted receive completes as
  // it matches. A larger one sent directly (by a sender that breaks the
  // protocol, or on a transport whose eager limit is lower) moves by
  // rendezvous: once matched it can no longer be cancelled, and if its sender
  // stops midway it never completes. Rank 0 sends one, then stays out of MPI
  // (as if stopped) until rank 1's engine has stopped receiving, or 30 s
  // (told by a file, the ranks sharing a host: an MPI call would move the
  // frame on): rank 1 lets that receive
  // go rather than wait for it. (Shared memory moves it by rendezvous here:
  // the tests turn its single copy off.)
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  char done_file[96] = {};
  if (rank == 0)
    std::snprintf(done_file, sizeof done_file, "/tmp/troupe-engine-test-%ld-%lld", static_cast<long>(getpid()),
                  static_cast<long long>(std::chrono::steady_clock::now().time_since_epoch().count()));
  tt::bcast(done_file, sizeof done_file, 0);
  if (rank == 0) {
    ByteBuffer frame;
    std::uint64_t ids = 0;
    while (frame.size() < 32 * 1024) {
      const ByteBuffer f = frame_of(++ids, {});
      frame.append(f.data(), f.size());
    }
    wait_for_go_ahead();  // its receives are posted
    MPI_Request req = MPI_REQUEST_NULL;
    MPI_Isend(frame.data(), static_cast<int>(frame.size()), MPI_BYTE, 1, troupe::detail::kTagFrame, engine.comm(),
              &req);
    go_ahead_to(1);
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (!std::filesystem::exists(done_file) && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(10ms);
    EXPECT_TRUE(std::filesystem::exists(done_file)) << "rank 1 never stopped receiving";
    // Now MPI moves the frame (into the buffer rank 1 kept). Bounded: had the
    // frame's start not reached rank 1 before it stopped receiving, nothing
    // would ever take it (the send, and its bytes, are let go of then).
    int sent = 0;
    const auto until_sent = std::chrono::steady_clock::now() + 30s;
    while (!sent && std::chrono::steady_clock::now() < until_sent) {
      MPI_Test(&req, &sent, MPI_STATUS_IGNORE);
      if (!sent) std::this_thread::sleep_for(1ms);
    }
    EXPECT_TRUE(sent) << "the frame never left: rank 1 stopped receiving before it came";
    if (!sent) {
      MPI_Request_free(&req);
      (void)new ByteBuffer(std::move(frame));  // MPI may still read it
    }
  } else if (rank == 1) {
    engine.progress();
    go_ahead();
    wait_for_go_ahead_from(0);  // the frame was sent: its start is here, or on its way
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < 200ms) engine.progress();  // matched
    engine.stop_receiving();
    const auto took = std::chrono::steady_clock::now() - start - 200ms;
    std::FILE* f = std::fopen(done_file, "w");
    EXPECT_NE(f, nullptr) << done_file;
    if (f != nullptr) std::fclose(f);
    EXPECT_LT(took, 10s) << "stopping waited for a frame that never finished arriving";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) std::filesystem::remove(done_file);
  // A transport that moved the frame whole without its sender (eagerly, or
  // by single copy) let nothing be tested.
  if (rank == 1 && sink.delivered() != 0) GTEST_SKIP() << "the frame arrived whole without its sender";
}

TEST(Engine, AnEnvelopeWaitingForItsBlockHoldsBackWhatCameAfterIt) {
  // Per source, delivery follows arrival order. Rank 0 sends, by hand: envelope
  // 1 declaring a 2 MiB block, envelope 2 with none, envelope 3 declaring a
  // 64 KiB block, envelope 4 with none; then, once rank 1 has read all four,
  // the two blocks. Envelopes 2-4 are whole before envelope 1 is, and must
  // still wait.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  constexpr std::size_t kBig = std::size_t{2} << 20, kSmall = std::size_t{64} << 10;
  if (rank == 0) {
    send_frames_then_blocks(engine, {{kBig}, {}, {kSmall}, {}}, {{kBig, std::byte{1}}, {kSmall, std::byte{3}}});
  } else if (rank == 1) {
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    EXPECT_TRUE(wait_until([&] { return sink.read.load() == 4; }, 10s)) << "read " << sink.read.load();
    go_ahead();  // whatever happened: rank 0 must not wait forever
    EXPECT_TRUE(wait_until([&] { return sink.delivered() == 4; }, 10s)) << "delivered " << sink.delivered();
    engine.stop_progress_thread();
    std::lock_guard lk(sink.mu);
    EXPECT_EQ(sink.order, (std::vector<std::uint64_t>{1, 2, 3, 4}));
    EXPECT_EQ(sink.blocks.size(), 2u);
    if (sink.blocks.size() == 2) {  // (no ASSERT before the barrier: rank 0 would wait there forever)
      EXPECT_TRUE(filled_with(sink.blocks[0], std::byte{1}));
      EXPECT_TRUE(filled_with(sink.blocks[1], std::byte{3}));
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, WhileABlockIsInFlightTheProgressThreadNapsOnlyBriefly) {
  // MPI moves a message's bytes only inside MPI calls (Open MPI's TCP transport
  // does), so an engine that naps long while a receive is posted stretches the
  // transfer. Rank 1 reads a frame declaring a 4 MiB block and posts its
  // receive; rank 0 holds the block back until rank 1's engine has napped 50
  // more times, many more than it takes to lengthen its naps when nothing is
  // in flight. Every one of those naps must be the shortest. Polling in place
  // (without yielding the core) happens only then: an idle engine yields to
  // the threads it shares a core with.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  constexpr std::size_t kBlock = std::size_t{4} << 20;
  const auto shortest = static_cast<std::uint64_t>(troupe::detail::kShortestNap.count());
  if (rank == 0) {
    send_frames_then_blocks(engine, {{kBlock}}, {{kBlock, std::byte{5}}});
  } else if (rank == 1) {
    const auto started = engine.stats();
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    // The frame is read and the block's receive posted in one round: every nap
    // counted from here on falls while the receive is posted.
    const bool read = wait_until([&] { return sink.read.load() == 1; }, 10s);
    EXPECT_TRUE(read) << "the frame was never read";
    const auto at_read = engine.stats();
    const bool napped = read && wait_until([&] { return engine.stats().idle_naps >= at_read.idle_naps + 50; }, 10s);
    const auto in_flight = engine.stats();
    go_ahead();  // whatever happened: rank 0 must not wait forever
    EXPECT_TRUE(napped) << "the progress thread did not nap with the block's receive posted (spinning?)";
    const std::uint64_t naps = in_flight.idle_naps - at_read.idle_naps;
    const std::uint64_t nap_us = in_flight.idle_nap_us - at_read.idle_nap_us;
    EXPECT_EQ(nap_us, naps * shortest) << "the progress thread napped longer than " << shortest
                                       << " us with the block's receive posted (" << naps << " naps)";
    EXPECT_GT(in_flight.hot_polls, started.hot_polls) << "the progress thread never polled in place with a block in flight";
    EXPECT_TRUE(wait_until([&] { return sink.delivered() == 1; }, 10s)) << "the envelope was never delivered";
    engine.stop_progress_thread();
    if (sink.delivered() == 1) {
      EXPECT_TRUE(filled_with(sink.blocks[0], std::byte{5}));
    }
    // Once nothing is in flight, the naps lengthen again (an idle rank must cost little).
    const auto done = engine.stats();
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    EXPECT_TRUE(wait_until(
        [&] {
          const auto s = engine.stats();
          return s.idle_nap_us - done.idle_nap_us > (s.idle_naps - done.idle_naps) * shortest;
        },
        5s))
        << "an idle engine never lengthened its naps";
    engine.stop_progress_thread();
    EXPECT_EQ(engine.stats().hot_polls, done.hot_polls)
        << "the progress thread polled in place with nothing in flight (holding the core from the threads that share it)";
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, WhileAHelperDrivesTheProgressThreadRestsLongerAndTheLastHelperToStopWakesIt) {
  // Each time the progress thread wakes it takes a core from whoever polls;
  // while a helper keeps driving it rests longer and longer (200, 400, 800,
  // then kLongestRest), and a helper that stops wakes it rather than leave the
  // engine undriven for the rest of a rest. Rank 1 only. What is checked is the
  // schedule, not totals that depend on how often the machine lets the helper
  // run: three looks in a row that find the helper driving reach the longest.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  if (rank == 1) {
    using troupe::detail::kLongestRest;
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    // Drives for `span`, then stops; the stats as the drive ended.
    auto drive = [&](std::chrono::milliseconds span) {
      engine.helper_enter();
      const auto end = std::chrono::steady_clock::now() + span;
      while (std::chrono::steady_clock::now() < end) {
        engine.helper_progress();
        std::this_thread::yield();
      }
      const auto driven = engine.stats();
      engine.helper_stop();
      return driven;
    };
    // At least 3 drives of 60 ms; more (3 s in all at most) while the rests
    // have not yet reached the longest: a loaded machine (TSan, another
    // suite beside this one) may not run the helper at some look, which starts
    // the schedule over.
    const auto longest = static_cast<std::uint64_t>(kLongestRest.count());
    int rounds = 0;
    for (; rounds < 3 || (rounds < 50 && engine.stats().helper_rest_longest_us < longest); ++rounds) {
      const auto before = engine.stats();
      const auto driven = drive(60ms);
      EXPECT_GT(driven.helper_rests, before.helper_rests) << "the progress thread never rested while a helper drove";
      EXPECT_LE(driven.helper_rest_us - before.helper_rest_us,
                (driven.helper_rests - before.helper_rests) * static_cast<std::uint64_t>(kLongestRest.count()))
          << "a rest longer than the longest";
    }
    EXPECT_EQ(engine.stats().helper_rest_longest_us, longest)
        << "in " << rounds * 60 << " ms of a helper driving, the rests never lengthened to the longest";
    // A helper that stops wakes a resting progress thread. The thread may be
    // between two rests just then (awake: nothing to wake), so stops are tried
    // until one finds it resting, 20 at most; after a 5 ms drive it rests at
    // almost every moment.
    std::uint64_t woken = 0;
    for (int attempt = 0; attempt < 20 && woken == 0; ++attempt) {
      const auto driven = drive(5ms);
      wait_until([&] { return engine.stats().helper_rests_cut > driven.helper_rests_cut; }, 50ms);
      woken = engine.stats().helper_rests_cut - driven.helper_rests_cut;
    }
    EXPECT_GE(woken, 1u) << "no helper that stopped woke the resting progress thread";
    engine.stop_progress_thread();
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, ABusyCommunicatorDoesNotHoldBackAnother) {
  // Nodes that join later talk over a communicator of their own. A round of
  // the progress thread ends at the first frame it reads in place, so a round
  // that always began with the first communicator would read a busy stream on
  // it to its end before anything on the second. Here both ranks add a second
  // communicator (nodes 2 and 3 are the same two processes); rank 0 sends 400
  // frames on the first, then one on the second, all before rank 1's engine
  // starts. The second communicator's frame must be read among the first few.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  engine.add_nodes(Engine::duplicate_for_nodes(MPI_COMM_WORLD), {2, 3}, 4);  // collective
  constexpr std::uint64_t kBusy = 400, kOther = 1000;
  if (rank == 0) {
    for (std::uint64_t id = 1; id <= kBusy; ++id) {
      const ByteBuffer f = frame_of(id, {});
      MPI_Send(f.data(), static_cast<int>(f.size()), MPI_BYTE, 1, troupe::detail::kTagFrame, engine.comm());
    }
    const ByteBuffer f = frame_of(kOther, {});
    MPI_Send(f.data(), static_cast<int>(f.size()), MPI_BYTE, 1, troupe::detail::kTagFrame, engine.comm_at(1));
  } else if (rank == 1) {
    // The last frame is here (the stream, sent before it, is too) before the
    // engine starts: no arrival left to timing.
    MPI_Probe(0, troupe::detail::kTagFrame, engine.comm_at(1), MPI_STATUS_IGNORE);
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    EXPECT_TRUE(wait_until([&] { return sink.delivered() == kBusy + 1; }, 20s)) << "delivered " << sink.delivered();
    engine.stop_progress_thread();
    std::lock_guard lk(sink.mu);
    const auto at = std::find(sink.order.begin(), sink.order.end(), kOther);
    ASSERT_NE(at, sink.order.end());
    EXPECT_LT(at - sink.order.begin(), 8) << "the other communicator's frame waited behind the busy one";
    // The busy stream itself stayed in order.
    std::vector<std::uint64_t> busy;
    for (auto id : sink.order)
      if (id != kOther) busy.push_back(id);
    for (std::uint64_t i = 0; i < busy.size(); ++i) EXPECT_EQ(busy[i], i + 1);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, WhatIsSentToANodeBeingAddedWaitsForItAndLeavesInOrder) {
  // Runtime::add_nodes makes new nodes alive in the cluster layer a moment
  // before their engine joins them (Engine::add_nodes, after the collective
  // duplicate_for_nodes), and what is sent to them in between is counted as
  // work: it must not be lost. Here rank 0 sends to node 3 (rank 1 on a second
  // communicator, not yet added) before either step, and between the two:
  // urgent drafts (straight to MPI when the engine is free), tells that
  // coalesce, a tell written in place, a large draft, an envelope with a
  // block. After the join it sends more, urgent ones first (which must not
  // overtake what waited). Rank 1 gets every one, once, in send order.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  constexpr NodeId kJoining = 3;
  std::uint64_t id = 0;
  auto draft = [&](std::size_t payload, bool urgent) {
    auto d = troupe::detail::take_draft(kJoining);
    EnvelopeWriter w(d->bytes);
    w.begin(Kind::control, 0, 0, 0, ++id, 0);
    const std::vector<std::byte> bytes(payload, std::byte{3});
    d->bytes.append(bytes.data(), bytes.size());
    w.finish(nullptr, 0);
    engine.send(std::move(d), urgent);
  };
  auto in_place = [&] {
    const std::uint64_t mine = ++id;
    engine.send_in_place(kJoining, [mine](ByteBuffer& b) {
      EnvelopeWriter w(b);
      w.begin(Kind::control, 0, 0, 0, mine, 0);
      w.finish(nullptr, 0);
    });
  };
  auto with_block = [&] {
    std::uint64_t total = id;
    std::vector<std::uint64_t> fills;
    auto envs = make_batch({Shape{16, 256 * 1024, false}}, total, fills);
    id = total;
    envs[0]->dest = kJoining;
    engine.send(envs[0], /*urgent=*/false);
  };
  auto a_bit_of_everything = [&] {
    draft(8, true);
    draft(8, false);
    draft(8, false);
    in_place();
    draft(20 * 1024, false);  // larger than kSmallEnvelope: leaves alone
    with_block();
    draft(8, true);
    for (int i = 0; i < 5; ++i) engine.progress();  // taken out of the queue: kept for node 3
  };
  if (rank == 0) a_bit_of_everything();
  const MPI_Comm dup = Engine::duplicate_for_nodes(MPI_COMM_WORLD);  // collective
  if (rank == 0) a_bit_of_everything();  // the cluster layer's moment
  engine.add_nodes(dup, {2, 3}, 4);
  if (rank == 0) {
    draft(8, true);
    in_place();
    draft(8, true);
  }
  std::uint64_t sent = id;
  tt::bcast(&sent, sizeof sent, 0);
  engine.start_progress_thread(nullptr, 10ms, nullptr);
  if (rank == 1) {
    EXPECT_TRUE(wait_until([&] { return sink.delivered() >= sent; }, 20s))
        << "delivered " << sink.delivered() << " of " << sent;
    std::this_thread::sleep_for(50ms);  // and nothing more
    std::lock_guard lk(sink.mu);
    std::vector<std::uint64_t> expected(sent);
    for (std::uint64_t i = 0; i < sent; ++i) expected[i] = i + 1;
    EXPECT_EQ(sink.order, expected);
  }
  tt::barrier();
  engine.stop_progress_thread();
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, AddingNodesThatFindsNoMemoryChangesNothingAndCanBeTriedAgain) {
  // Engine::add_nodes with its k-th allocation failing, k = 0, 1, ... until
  // it needs fewer: each failure reaches its caller as std::bad_alloc with
  // nothing changed (a communicator listed without its ranks' nodes was read
  // past rank_node_'s end once a frame landed on it), and the call made again
  // joins the nodes: what rank 0 then sends node 3 (rank 1) arrives, in order.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  constexpr NodeId kJoining = 3;
  const MPI_Comm dup = Engine::duplicate_for_nodes(MPI_COMM_WORLD);  // collective
  bool added = false;
  long k = 0;
  for (; !added && k < 100; ++k) {
    tt::fail_allocation_after(k);
    try {
      engine.add_nodes(dup, {2, kJoining}, 4);
      added = true;
    } catch (const std::bad_alloc&) {
    }
    const bool failed = tt::stop_failing();
    if (!added) {
      EXPECT_TRUE(failed);
      EXPECT_EQ(engine.comm_at(1), MPI_COMM_NULL) << "allocation " << k << ": the communicator was listed";
      EXPECT_EQ(engine.nodes(), 2u) << "allocation " << k;
    }
  }
  ASSERT_TRUE(added);
  EXPECT_GT(k, 1) << "add_nodes never found its allocations failing";
  EXPECT_EQ(engine.comm_at(1), dup);
  EXPECT_EQ(engine.nodes(), 4u);
  constexpr std::uint64_t kSent = 10;
  if (rank == 0)
    for (std::uint64_t id = 1; id <= kSent; ++id) send_control(engine, kJoining, id, /*urgent=*/id % 3 == 0);
  engine.start_progress_thread(nullptr, 10ms, nullptr);
  if (rank == 1) {
    EXPECT_TRUE(wait_until([&] { return sink.delivered() >= kSent; }, 20s)) << "delivered " << sink.delivered();
    std::lock_guard lk(sink.mu);
    std::vector<std::uint64_t> expected(kSent);
    for (std::uint64_t i = 0; i < kSent; ++i) expected[i] = i + 1;
    EXPECT_EQ(sink.order, expected);
  }
  tt::barrier();
  engine.stop_progress_thread();
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, AJoinWhoseRoomWasReservedCannotFail) {
  // Runtime::add_nodes makes the engine's room (reserve_join) before the
  // cluster layer counts the new nodes alive: the engine's own step must then
  // not fail, or what is sent to them waits for a join that never comes (and
  // the engine is never quiet again). With the room made, the join goes
  // through with every allocation of its thread failing.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  const MPI_Comm dup = Engine::duplicate_for_nodes(MPI_COMM_WORLD);  // collective
  EXPECT_THROW(engine.reserve_join(1u << 30), std::runtime_error) << "room for more nodes than it can hold";
  engine.reserve_join(4);
  std::vector<NodeId> ranks{2, 3};
  bool added = false;
  tt::fail_allocations_from(0);
  try {
    engine.add_nodes(dup, std::move(ranks), 4);
    added = true;
  } catch (const std::bad_alloc&) {
  }
  const bool failed = tt::stop_failing();
  EXPECT_TRUE(added) << "the join failed for want of memory";
  EXPECT_FALSE(failed) << "the join allocated";
  EXPECT_EQ(engine.nodes(), 4u);
  EXPECT_EQ(engine.comm_at(1), dup);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, AnUnreadableEnvelopeIsAnnouncedBeforeTheOnesAfterIt) {
  // The handler joins consecutive calls into one batch; an envelope between
  // them that cannot be read (another protocol version) is reported at
  // delivery, so a call after it must not join a batch made before it, or it
  // would run before the report. The engine tells the handler, in its place
  // in the frame (on_unreadable).
  struct SeenSink final : InboundHandler {
    std::mutex mu;
    std::vector<std::int64_t> seen;  // ids read, and -1 where one was unreadable
    std::atomic<int> reports{0};
    std::unique_ptr<Inbound> on_envelope(NodeId, Envelope& env) override {
      std::lock_guard lk(mu);
      seen.push_back(static_cast<std::int64_t>(env.id));
      return nullptr;
    }
    void on_bad_envelope(NodeId, const EnvelopeFault&) override { reports.fetch_add(1); }
    void on_unreadable(NodeId) noexcept override {
      std::lock_guard lk(mu);
      seen.push_back(-1);
    }
  };
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  SeenSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  if (rank == 0) {
    ByteBuffer frame;
    for (std::uint64_t id = 1; id <= 3; ++id) {
      ByteBuffer one = frame_of(id, {});
      if (id == 2) std::memcpy(one.data() + troupe::detail::kFrameSlot + 2, "\x63", 1);  // version 99
      frame.append(one.data(), one.size());
    }
    MPI_Send(frame.data(), static_cast<int>(frame.size()), MPI_BYTE, 1, troupe::detail::kTagFrame, engine.comm());
  } else if (rank == 1) {
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    EXPECT_TRUE(wait_until(
        [&] {
          std::lock_guard lk(sink.mu);
          return sink.reports.load() == 1 && sink.seen.size() == 3;
        },
        20s));
    engine.stop_progress_thread();
    std::lock_guard lk(sink.mu);
    EXPECT_EQ(sink.seen, (std::vector<std::int64_t>{1, -1, 3}));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, LargeFramesFollowTheirStubsInOrderAndBadFramesAreDropped) {
  // Frames land in a receive posted ahead, of kFrameLimit bytes; a sender
  // sends larger than kPostedFrame ones after a stub, with a tag of their own.
  // Rank 0 sends, by hand: frame 1; a frame of envelopes 100..199, larger than
  // kPostedFrame, sent directly (as an older sender would: still read); stubs
  // announcing 2^40 bytes and 10 bytes (malformed); under Open MPI a frame too
  // large for the posted receive (MPICH raises that error on MPI_COMM_WORLD,
  // the application's); a stub, then frame 7, then, once rank 1 has taken
  // frame 7 in (and must hold it back), the stub's large frame of envelopes
  // 200..299. Rank 1 gets 1, 100..299, 7 in that order, and nothing else.
  using troupe::detail::kFrameLimit;
  using troupe::detail::kPostedFrame;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  auto stub = stub_of;
  auto send = [&](const ByteBuffer& b, int tag) {
    MPI_Send(b.data(), static_cast<int>(b.size()), MPI_BYTE, 1, tag, engine.comm());
  };
  std::vector<std::uint64_t> expected{1};
  auto frame_of_ids = [&](std::uint64_t first, std::uint64_t end) {
    ByteBuffer frame;
    for (std::uint64_t id = first; id < end; ++id) {
      const ByteBuffer f = frame_of(id, {});
      frame.append(f.data(), f.size());
      expected.push_back(id);
    }
    return frame;
  };
  const ByteBuffer direct = frame_of_ids(100, 200), announced = frame_of_ids(200, 300);
  expected.push_back(7);
  ASSERT_GT(direct.size(), kPostedFrame);  // on both ranks alike
  ASSERT_GT(announced.size(), kPostedFrame);
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(version, &len);
  const bool open_mpi = std::string(version, static_cast<std::size_t>(len)).find("Open MPI") != std::string::npos;
  if (rank == 0) {
    send(frame_of(1, {}), troupe::detail::kTagFrame);
    send(direct, troupe::detail::kTagFrame);
    send(stub(std::uint64_t{1} << 40), troupe::detail::kTagFrame);
    send(stub(10), troupe::detail::kTagFrame);
    if (open_mpi) {
      ByteBuffer oversized;
      oversized.resize(kFrameLimit + 100);
      std::memset(oversized.data(), 0x5a, oversized.size());
      send(oversized, troupe::detail::kTagFrame);
    }
    send(stub(announced.size()), troupe::detail::kTagFrame);
    send(frame_of(7, {}), troupe::detail::kTagFrame);
    wait_for_go_ahead();  // frame 7 is in, and must wait for the frame announced before it
    send(announced, troupe::detail::kTagLargeFrame);
  } else if (rank == 1) {
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    // Frames taken in: 1, the direct one, the stub's (counted when its receive
    // is posted) and 7; the malformed and oversized ones are not counted.
    EXPECT_TRUE(wait_until([&] { return engine.stats().frames_received == 4; }, 10s))
        << "frames " << engine.stats().frames_received;
    EXPECT_TRUE(wait_until([&] { return sink.delivered() >= 101; }, 10s)) << "delivered " << sink.delivered();
    std::this_thread::sleep_for(20ms);  // were frame 7 read at once, it would be delivered by now
    EXPECT_EQ(sink.delivered(), 101u) << "frame 7 went ahead of the frame announced before it";
    go_ahead();  // whatever happened: rank 0 must not wait forever
    EXPECT_TRUE(wait_until([&] { return sink.delivered() == expected.size(); }, 10s))
        << "delivered " << sink.delivered();
    std::this_thread::sleep_for(50ms);  // anything more would show up now
    engine.stop_progress_thread();
    std::lock_guard lk(sink.mu);
    EXPECT_EQ(sink.order, expected);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

/// Records envelopes (id, and the first byte of each block) and reports of
/// bad ones (what, whether they had a prefix), in delivery order.
class FaultSink final : public InboundHandler {
 public:
  std::mutex mu;
  std::vector<std::string> log;  // "id:<id>[/<first byte of each block>]" or "bad:<what>"
  std::deque<std::vector<std::byte>> blocks;
  std::unique_ptr<Inbound> on_envelope(NodeId, Envelope& env) override {
    struct Recorded final : Inbound {
      Recorded(FaultSink& s, std::uint64_t i) : sink(s), id(i) {}
      void deliver() override {
        std::lock_guard lk(sink.mu);
        std::string entry = "id:" + std::to_string(id);
        for (auto* b : mine) entry += "/" + std::to_string(static_cast<int>(b->empty() ? std::byte{0} : (*b)[0]));
        sink.log.push_back(entry);
      }
      void reject(std::exception_ptr) override {
        std::lock_guard lk(sink.mu);
        sink.log.push_back("rejected:" + std::to_string(id));
      }
      FaultSink& sink;
      std::uint64_t id;
      std::vector<std::vector<std::byte>*> mine;
    };
    auto in = std::make_unique<Recorded>(*this, env.id);
    std::lock_guard lk(mu);
    for (auto size : env.segment_sizes) {
      blocks.emplace_back(size);
      in->mine.push_back(&blocks.back());
      in->segments.push_back(InSegment{blocks.back().data(), blocks.back().size()});
    }
    return in;
  }
  void on_bad_envelope(NodeId, const EnvelopeFault& fault) override {
    std::lock_guard lk(mu);
    log.push_back(std::string(fault.have_prefix ? "bad:" : "bad-no-prefix:") + fault.what);
  }
  std::vector<std::string> seen() {
    std::lock_guard lk(mu);
    return log;
  }
};

TEST(Engine, AnUnreadableEnvelopeWithBlocksBreaksItsSourceRatherThanMisplaceTheBlocks) {
  // Envelope 1's lengths disagree (it cannot be read), yet its prefix says it
  // has a block of 20000 bytes, which its sender sends (all 0xAA); envelope 2
  // declares a block of the same size (0xBB). Were envelope 1 merely skipped,
  // 0xAA would land in envelope 2's receive and it would run on the wrong
  // bytes. Envelope 1 is reported, and nothing more from rank 0 is read: the
  // source is broken (the cluster then counts rank 0 lost).
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  FaultSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  if (rank == 0) {
    ByteBuffer frame = frame_of(1, {20000});
    std::uint32_t payload = 0;
    std::memcpy(&payload, frame.data() + troupe::detail::kFrameSlot + 48, sizeof payload);
    payload += 1;  // the payload's length no longer adds up with the envelope's
    std::memcpy(frame.data() + troupe::detail::kFrameSlot + 48, &payload, sizeof payload);
    const ByteBuffer second = frame_of(2, {20000});
    frame.append(second.data(), second.size());
    MPI_Send(frame.data(), static_cast<int>(frame.size()), MPI_BYTE, 1, troupe::detail::kTagFrame, engine.comm());
    for (const auto fill : {std::byte{0xAA}, std::byte{0xBB}}) {
      std::vector<std::byte> block(20000, fill);
      MPI_Send(block.data(), static_cast<int>(block.size()), MPI_BYTE, 1, troupe::detail::kTagSegment, engine.comm());
    }
  } else if (rank == 1) {
    std::vector<NodeId> broken;
    engine.start_progress_thread(
        [&] {
          for (auto n : engine.newly_broken()) broken.push_back(n);
        },
        10ms, nullptr);
    EXPECT_TRUE(wait_until([&] { return !sink.seen().empty(); }, 10s));
    std::this_thread::sleep_for(100ms);  // envelope 2, were it read, would be delivered by now
    engine.stop_progress_thread();
    const auto seen = sink.seen();
    EXPECT_EQ(seen.size(), 1u);
    if (!seen.empty()) {
      EXPECT_NE(seen[0].find("bad:troupe: inconsistent envelope lengths"), std::string::npos) << seen[0];
    }
    EXPECT_EQ(broken, std::vector<NodeId>{0}) << "rank 0's source was not broken";
    // Neither block was taken by the engine; the test takes what is left, so
    // that rank 0's sends end.
    std::vector<std::byte> left;
    for (int k = 0; k < 2; ++k) {
      int there = 0;
      for (int i = 0; i < 400 && !there; ++i) {
        MPI_Iprobe(0, troupe::detail::kTagSegment, engine.comm(), &there, MPI_STATUS_IGNORE);
        if (!there) std::this_thread::sleep_for(5ms);
      }
      if (!there) break;
      std::vector<std::byte> block(20000);
      MPI_Recv(block.data(), static_cast<int>(block.size()), MPI_BYTE, 0, troupe::detail::kTagSegment, engine.comm(),
               MPI_STATUS_IGNORE);
      left.push_back(block[0]);
    }
    EXPECT_EQ(left, (std::vector<std::byte>{std::byte{0xAA}, std::byte{0xBB}})) << "the engine took a block";
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, AnEnvelopeCutShortByItsFramesEndIsReportedNotDroppedInSilence) {
  // A large frame shorter than its stub announced (its sender is broken):
  // envelopes 1..100 are whole, envelope 101 is cut 20 bytes short. The whole
  // ones are delivered, and the cut one is reported (its sender gets a
  // DecodeError, and its work is counted), not dropped without a word.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  FaultSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  ByteBuffer large;
  for (std::uint64_t id = 1; id <= 101; ++id) {
    const ByteBuffer f = frame_of(id, {});
    large.append(f.data(), f.size());
  }
  ASSERT_GT(large.size() - 20, troupe::detail::kPostedFrame);
  if (rank == 0) {
    const ByteBuffer stub = stub_of(large.size());
    MPI_Send(stub.data(), static_cast<int>(stub.size()), MPI_BYTE, 1, troupe::detail::kTagFrame, engine.comm());
    MPI_Send(large.data(), static_cast<int>(large.size() - 20), MPI_BYTE, 1, troupe::detail::kTagLargeFrame,
             engine.comm());
  } else if (rank == 1) {
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    EXPECT_TRUE(wait_until([&] { return sink.seen().size() >= 101; }, 10s)) << sink.seen().size() << " of 101";
    std::this_thread::sleep_for(50ms);
    engine.stop_progress_thread();
    const auto seen = sink.seen();
    ASSERT_EQ(seen.size(), 101u);
    for (std::size_t i = 0; i < 100; ++i) EXPECT_EQ(seen[i], "id:" + std::to_string(i + 1));
    EXPECT_NE(seen[100].find("bad:troupe: truncated envelope"), std::string::npos) << seen[100];
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, ExpelNoticesThatFindNoMemoryGoAndAreReadOnceThereIsSome) {
  // The notice telling a node it was declared lost, and the receive posted for
  // it, make their room before MPI holds a buffer of theirs. With the k-th
  // allocation failing, for k = 0, 1, ... until they need fewer, nothing
  // throws (an expel notice's sending threw once MPI held its buffer, which
  // was then freed under it), no receive is left posted but unlisted (it
  // would take the notice, and the listed one wait for ever), and the notice
  // goes and is read once there is memory.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  long k = 0;
  bool met = true;
  if (rank == 0) {
    for (; met && k < 100; ++k) {
      tt::fail_allocation_after(k);
      EXPECT_NO_THROW(engine.send_expel(1)) << "allocation " << k;
      met = tt::stop_failing();
    }
  } else if (rank == 1) {
    bool expelled = false;  // (true once: the receive is done then)
    for (; met && k < 100 && !expelled; ++k) {
      tt::fail_allocation_after(k);
      EXPECT_NO_THROW(expelled = engine.expel_received()) << "allocation " << k;
      met = tt::stop_failing();
    }
    EXPECT_TRUE(wait_until([&] { return expelled || (expelled = engine.expel_received()); }, 10s))
        << "the notice was never read";
  }
  EXPECT_FALSE(met) << "100 allocations, and they needed more";
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, RunningOutOfMemoryWhileMarkingANodeLostLeavesNothingHalfDone) {
  // Rank 0 has two 1 MiB blocks on their way to rank 1, which does not read
  // yet: their sends stay pending. Marking rank 1 lost with the first
  // allocation failing must not throw and must leave the request arrays
  // whole (a request freed but still listed, or listed twice, breaks the
  // next MPI_Testsome): nothing is pending afterwards, and the blocks' memory
  // stays for MPI, so rank 1 still receives them intact.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  constexpr int kTagDone = 78;
  char token = 1;
  if (rank == 0) {
    std::uint64_t total = 0;
    std::vector<std::uint64_t> fills;
    for (OutEnvelope* e : make_batch({{8, 1 << 20}, {8, 1 << 20}}, total, fills)) engine.send(e, /*urgent=*/false);
    engine.flush();
    for (int i = 0; i < 100; ++i) engine.progress();
    EXPECT_TRUE(engine.sends_pending()) << "the blocks left before the test could begin";
    tt::fail_allocation_after(0);
    EXPECT_NO_THROW(engine.mark_lost(1));
    EXPECT_TRUE(tt::stop_failing()) << "no allocation failed";
    EXPECT_NO_THROW(engine.progress());
    EXPECT_FALSE(engine.sends_pending());
    MPI_Send(&token, 1, MPI_CHAR, 1, kTagGo, MPI_COMM_WORLD);
    MPI_Recv(&token, 1, MPI_CHAR, 1, kTagDone, MPI_COMM_WORLD, MPI_STATUS_IGNORE);  // MPI moves the blocks meanwhile
  } else if (rank == 1) {
    MPI_Recv(&token, 1, MPI_CHAR, 0, kTagGo, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    EXPECT_TRUE(wait_until([&] { return sink.delivered() == 2; }, 20s)) << "delivered " << sink.delivered();
    engine.stop_progress_thread();
    MPI_Send(&token, 1, MPI_CHAR, 0, kTagDone, MPI_COMM_WORLD);
    std::lock_guard lk(sink.mu);
    ASSERT_EQ(sink.blocks.size(), 2u);
    EXPECT_TRUE(filled_with(sink.blocks[0], std::byte{1}));
    EXPECT_TRUE(filled_with(sink.blocks[1], std::byte{2}));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, ACallToProgressReturnsWhileAnotherThreadKeepsSending) {
  // A sender that finds the engine busy queues its envelope for whoever holds
  // it, who takes it in one more round. Senders that keep queueing must not
  // keep the caller in one progress() call: the progress thread runs failure
  // detection (its heartbeats) between calls. Rank 1 sends rank 0 2,000
  // frames by hand; on rank 0, each envelope read makes another thread send
  // one back while the engine is held, so every round leaves one queued. One
  // progress() call must not read them all.
  constexpr std::uint64_t kFrames = 2000;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  if (rank == 0) {
    std::atomic<int> want{0};  // 1: send one now; 2: stop
    std::thread sender([&] {
      for (std::uint64_t id = 1;; ++id) {
        int w = 0;
        while ((w = want.load()) == 0) std::this_thread::yield();
        if (w == 2) return;
        send_control(engine, 1, id, /*urgent=*/true);  // the engine is held: queued
        want.store(0);
      }
    });
    sink.on_read = [&] {  // inside a round, the engine held
      want.store(1);
      while (want.load() == 1) std::this_thread::yield();
    };
    tt::barrier();  // rank 1's frames are sent
    EXPECT_TRUE(wait_until(
        [&] {
          int flag = 0;
          MPI_Iprobe(1, troupe::detail::kTagFrame, engine.comm(), &flag, MPI_STATUS_IGNORE);
          return flag != 0;
        },
        10s))
        << "rank 1's frames never came";
    engine.progress();
    const int read_in_one_call = sink.read.load();
    EXPECT_TRUE(wait_until(
        [&] {
          engine.progress();
          return sink.read.load() == static_cast<int>(kFrames);
        },
        20s))
        << "read " << sink.read.load();
    sink.on_read = nullptr;
    want.store(2);
    sender.join();
    EXPECT_LT(read_in_one_call, static_cast<int>(kFrames) / 2)
        << "one progress() call kept going while another thread queued";
    EXPECT_GT(read_in_one_call, 0);
    engine.flush();
    tt::barrier();  // polled: rank 1 takes in the replies meanwhile
  } else if (rank == 1) {
    for (std::uint64_t id = 1; id <= kFrames; ++id) {
      const ByteBuffer f = frame_of(id, {});
      MPI_Send(f.data(), static_cast<int>(f.size()), MPI_BYTE, 0, troupe::detail::kTagFrame, engine.comm());
    }
    tt::barrier();
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    EXPECT_TRUE(wait_until([&] { return sink.delivered() == kFrames; }, 20s)) << "delivered " << sink.delivered();
    tt::barrier();
    engine.stop_progress_thread();
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, SmallEnvelopesQueuedTogetherLeaveInFewFrames) {
  // Rank 0 queues 2,000 small envelopes, none urgent, from a thread that is
  // no actor's, then drives its engine until rank 1 has them: they share
  // frames (one MPI message each), and arrive once each, in order.
  constexpr std::uint64_t kEnvelopes = 2000;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  if (rank == 0) {
    for (std::uint64_t id = 1; id <= kEnvelopes; ++id) {
      send_control(engine, 1, id, /*urgent=*/false);
    }
    int all_in = 0;
    bcast_driving(engine, &all_in, sizeof all_in, 1);
    EXPECT_EQ(all_in, 1);
    const auto st = engine.stats();
    EXPECT_EQ(st.envelopes_sent, kEnvelopes);
    EXPECT_LE(st.frames_sent * 10, kEnvelopes) << st.frames_sent << " frames";
  } else if (rank == 1) {
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    const bool all_in = wait_until([&] { return sink.delivered() == kEnvelopes; }, 20s);
    EXPECT_TRUE(all_in) << "delivered " << sink.delivered();
    int flag = all_in ? 1 : 0;
    tt::bcast(&flag, sizeof flag, 1);
    expect_all_delivered(sink, kEnvelopes, {});
    const auto st = engine.stats();
    EXPECT_EQ(st.envelopes_received, kEnvelopes);
    EXPECT_LE(st.frames_received * 10, kEnvelopes) << st.frames_received << " frames";
    engine.stop_progress_thread();
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

namespace {

/// Per pair of nodes, messages arrive in send order or not at all: a send
/// that fails leaves a gap, so nothing after it may go (a later frame would be
/// read out of order, a later stub's frame land in the wrong receive), and the
/// cluster is to declare the peer lost. Rank 0 sends envelope 1; once rank 1
/// has it, `arm` makes envelope 2's send fail, and once rank 0's engine has
/// seen that (`seen`), envelope 3 must not follow, and the engine reports
/// rank 1 as broken. Rank 1 gets `expected`: envelope 2 too when MPI did send
/// its bytes before it reported the failure.
void expect_a_failed_send_to_end_the_stream(bool urgent, const std::function<void()>& arm,
                                            const std::function<bool()>& seen,
                                            const std::vector<std::uint64_t>& expected) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  if (rank == 0) {
    auto send_one = [&](std::uint64_t id) {
      send_control(engine, 1, id, urgent);
      engine.flush();
    };
    send_one(1);
    wait_for_go_ahead();  // rank 1 has it
    EXPECT_TRUE(engine.newly_broken().empty());
    arm();
    send_one(2);
    EXPECT_TRUE(wait_until(
        [&] {
          engine.flush();
          return seen();
        },
        10s))
        << "envelope 2's send never failed";
    send_one(3);
    tt::g_refuse_isend_tag.store(-1);
    tt::g_refuse_isends.store(0);
    tt::g_fail_send_tag.store(-1);
    tt::g_fail_sends.store(0);
    EXPECT_EQ(engine.newly_broken(), std::vector<NodeId>{1});
    go_ahead_to(1);
  } else if (rank == 1) {
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    EXPECT_TRUE(wait_until([&] { return sink.delivered() == 1; }, 10s)) << "envelope 1 never came";
    go_ahead_to(0);
    wait_for_go_ahead_from(0);
    EXPECT_TRUE(wait_until([&] { return sink.delivered() >= expected.size(); }, 10s)) << "envelope 2 never came";
    std::this_thread::sleep_for(100ms);  // envelope 3 would be here by now
    engine.stop_progress_thread();
    std::lock_guard lk(sink.mu);
    EXPECT_EQ(sink.order, expected) << "something went after a failed send";
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace

TEST(Engine, ASendMpiRefusesEndsTheStreamToItsPeerAndIsReported) {
  expect_a_failed_send_to_end_the_stream(
      /*urgent=*/true,
      [] {
        tt::g_refuse_isend_tag.store(troupe::detail::kTagFrame);
        tt::g_refuse_isends.store(1);
      },
      [] { return tt::g_refuse_isends.load() == 0; }, {1});
}

TEST(Engine, ASendThatCompletesInErrorEndsTheStreamToItsPeerAndIsReported) {
  // MPI took the send, and reports later, as it completes, that it failed:
  // alone and urgent (tested at once, MPI_Test), or in a frame (tested with
  // the others, MPI_Testsome). Such a failure was only logged, and what came
  // after it went on.
  for (const bool urgent : {true, false}) {
    SCOPED_TRACE(urgent ? "alone" : "in a frame");
    expect_a_failed_send_to_end_the_stream(
        urgent,
        [] {
          tt::g_fail_send_tag.store(troupe::detail::kTagFrame);
          tt::g_fail_sends.store(1);
        },
        [] { return tt::g_fail_sends.load() == 0 && tt::failing_sends_left() == 0; }, {1, 2});
  }
}

TEST(Engine, OnceShutWhatWaitsForItsBlocksIsAbandonedNotLeftWaiting) {
  // A runtime that goes without finish() shuts its engine while an envelope
  // (an ask's reply, say) waits for its block: nobody will receive the block
  // now, so whoever waits for the envelope must learn so. Rank 0 sends a
  // frame declaring a 64 KiB block; rank 1 reads it and shuts its engine;
  // only then does the block come.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  constexpr std::size_t kBlock = std::size_t{64} << 10;
  if (rank == 0) {
    send_frames_then_blocks(engine, {{kBlock}}, {{kBlock, std::byte{5}}});
  } else if (rank == 1) {
    engine.start_progress_thread(nullptr, 10ms, nullptr);
    EXPECT_TRUE(wait_until([&] { return sink.read.load() == 1; }, 10s)) << "the frame was never read";
    engine.stop_progress_thread();
    engine.shut();
    EXPECT_EQ(sink.abandoned.load(), 1) << "an envelope that will never be delivered was not abandoned";
    EXPECT_EQ(sink.delivered(), 0u);
    go_ahead();  // the block may come now (into the receive posted for it)
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

/// The end of a pass of a test that makes a new engine per pass: rank 1 tells
/// rank 0 whether another pass follows (`more`), rank 0's sends of this pass
/// are done, and both ranks meet before the engine goes.
void end_pass(Engine& engine, int rank, std::int32_t& more, long pass) {
  if (rank == 0) {
    bcast_driving(engine, &more, sizeof more, 1);
    EXPECT_TRUE(wait_until(
        [&] {
          engine.progress();
          return !engine.sends_pending();
        },
        20s))
        << "pass " << pass;
  } else {
    tt::bcast(&more, sizeof more, 1);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, OnceShutWhatFoundNoRoomInTheReadyListIsAbandonedNotLeftWaiting) {
  // An envelope read whole waits for room in the ready list when memory is
  // short. If the engine was shut meanwhile, it stayed there: an ask's reply
  // among them had left its ask's table, so that ask waited until the runtime
  // went. Each pass has a new engine: rank 1 reads rank 0's frame of 20
  // envelopes with every allocation from its k-th on failing, and shuts its
  // engine still failing. Whatever it read is delivered or abandoned.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::int32_t more = 1;
  int stranded = 0;  // rank 1: passes that read envelopes they had not delivered when shut()
  for (long k = 0; more != 0 && k < 200; ++k) {
    OrderSink sink;
    sink.order.reserve(64);  // delivery allocates nothing (it is not the engine's to retry)
    Engine engine(MPI_COMM_WORLD, sink);  // collective
    std::uint64_t total = 0;
    std::vector<std::uint64_t> fills;
    const auto envs = make_batch(std::vector<Shape>(20, Shape{40}), total, fills);  // one frame
    if (rank == 0) {
      for (OutEnvelope* e : envs) engine.send(e, /*urgent=*/false);
      engine.flush();
    } else {
      for (OutEnvelope* e : envs) delete e;
      tt::fail_allocations_from(k);
      // Until all is read, or the shortage came (then a little longer: what
      // can be read without memory is), however late rank 0's frame is.
      wait_until(
          [&] {
            engine.progress();
            return sink.read.load() == 20 || tt::failed_yet();
          },
          20s);
      const auto until = std::chrono::steady_clock::now() + 20ms;
      while (sink.read.load() != 20 && std::chrono::steady_clock::now() < until) engine.progress();
      if (static_cast<std::size_t>(sink.read.load()) > sink.delivered()) ++stranded;
      engine.shut();
      more = tt::stop_failing() ? 1 : 0;
      EXPECT_EQ(sink.read.load(), static_cast<int>(sink.delivered()) + sink.abandoned.load())
          << "allocations from " << k << " on failing: an envelope read was neither delivered nor abandoned";
    }
    end_pass(engine, rank, more, k);
  }
  EXPECT_EQ(more, 0) << "200 allocations, and one frame needed more";
  if (rank == 1) {
    EXPECT_GT(stranded, 0) << "no pass left an envelope waiting for the ready list";
  }
}

TEST(Engine, OnceShutNoThreadCallsMpiThroughIt) {
  // The runtime shuts its engine before MPI_Finalize (or before an application
  // that lent it MPI goes on alone). A thread that is waiting on a future, and
  // so drives the engine, or that sends at that moment must not call MPI after
  // it. Here two threads drive and send between the ranks while the main
  // thread shuts the engine; from then on neither of them, nor any other entry
  // point of the engine, makes an MPI call (counted through MPI's profiling
  // interface, mpi_call_count.cpp).
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const NodeId peer = rank == 0 ? 1 : 0;
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  auto send_one = [&](std::uint64_t id) {
    // Straight to MPI when the engine is free.
    send_control(engine, peer, id, /*urgent=*/true, static_cast<NodeId>(rank));
  };
  std::atomic<bool> stop{false};
  std::atomic<long> sent{0}, limit{1L << 40};
  std::thread driver([&] {
    while (!stop.load()) engine.helper_progress();
  });
  std::thread sender([&] {
    for (std::uint64_t id = 1; !stop.load();) {
      if (sent.load() >= limit.load()) {
        std::this_thread::sleep_for(1ms);
        continue;
      }
      send_one(id++);
      sent.fetch_add(1);
    }
  });
  // Traffic both ways first: the engine works, and the two threads are busy
  // in it. Both ranks have seen theirs before either shuts.
  EXPECT_TRUE(wait_until([&] { return sink.delivered() >= 100 && sent.load() >= 100; }, 20s))
      << "delivered " << sink.delivered() << ", sent " << sent.load() << ", frames out "
      << engine.stats().frames_sent << ", envelopes out " << engine.stats().envelopes_sent << ", frames in "
      << engine.stats().frames_received << ", envelopes in " << engine.stats().envelopes_received;
  tt::barrier();  // polled: the two threads are in MPI meanwhile
  engine.shut();
  tt::g_mpi_calls.store(0);
  tt::g_count_mpi.store(true);
  const long sent_at_shut = sent.load();
  limit.store(sent_at_shut + 100);
  EXPECT_TRUE(wait_until([&] { return sent.load() >= sent_at_shut + 100; }, 20s));  // still sending, into a shut engine
  std::this_thread::sleep_for(20ms);
  engine.progress();
  engine.flush();
  send_one(0);
  EXPECT_FALSE(engine.heard_pending(peer, 1s));
  EXPECT_FALSE(engine.expel_received());
  engine.send_expel(peer);
  engine.mark_lost(peer);
  tt::g_count_mpi.store(false);
  EXPECT_EQ(tt::g_mpi_calls.load(), 0) << "MPI calls through the engine after shut()";
  stop.store(true);
  driver.join();
  sender.join();
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, RunningOutOfMemoryWhileSendingLosesNothingAndSendsNothingHalf) {
  // Any allocation on the sending side may fail. Rank 0 sends a batch to rank
  // 1 with its first allocation from then on failing, then the same batch
  // again (new ids) with the second failing, and so on, until the batch needs
  // fewer allocations than it was allowed; then once more with every
  // allocation failing while it is sent, flushed and polled (failing_new.cpp).
  // Nothing is thrown at the sender, and no call spins while memory is short:
  // what finds no memory stays queued for the next try. Rank 1 must get every
  // envelope once, in order, each block intact: a batch leaves whole or stays
  // queued. The batches:
  //  1. small envelopes coalesced into one frame larger than the receiver's
  //     posted receive (a stub goes first), blocks that leave whole from their
  //     own memory, a staged one, and one queued behind it;
  //  2. a hundred small ones: the outbox grows (an envelope taken from the
  //     send queue may find no room in it);
  //  3. envelopes too large to share a frame (their sends flush at once): one
  //     alone without blocks, one alone with a block.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  const std::vector<std::vector<Shape>> batches{
      {{40}, {40}, {8, 64 << 10}, {40}, {8, 300 << 10, true}, {8, 200 << 10}, {6000}, {40}},
      std::vector<Shape>(100, Shape{40}),
      {{70000}, {70000, 100 << 10}, {40}},
  };
  std::uint64_t total = 0;
  std::vector<std::uint64_t> fills;  // the id of each block's envelope, in order
  if (rank == 1) engine.start_progress_thread(nullptr, 10ms, nullptr);
  if (rank == 0) {
    engine.set_stage_blocks(1, true);
    auto make = [&](const std::vector<Shape>& shapes) { return make_batch(shapes, total, fills); };
    auto drain = [&](const std::string& what) {  // what is left (queued, staged pieces, queued blocks) goes out
      EXPECT_TRUE(wait_until(
          [&] {
            engine.progress();
            return !engine.sends_pending();
          },
          20s))
          << what;
    };
    for (std::size_t batch = 0; batch < batches.size(); ++batch) {
      long failures = 0;
      for (long k = 0; k < 10000; ++k) {
        auto envs = make(batches[batch]);
        tt::fail_allocation_after(k);
        for (OutEnvelope* e : envs) engine.send(e, /*urgent=*/false);  // a large one flushes at once
        engine.flush();
        const bool failed = tt::stop_failing();
        drain("batch " + std::to_string(batch) + ", allocation " + std::to_string(k));
        if (!failed) break;  // this time the batch needed fewer than k + 1 allocations
        ++failures;
      }
      EXPECT_GT(failures, 0) << "batch " << batch << ": no failing allocation met";
      // No memory at all for a while: every call returns, and the batch waits.
      auto envs = make(batches[batch]);
      tt::fail_allocations_from(0);
      for (OutEnvelope* e : envs) engine.send(e, /*urgent=*/false);
      engine.flush();
      for (int i = 0; i < 3; ++i) engine.progress();
      const bool failed = tt::stop_failing();
      EXPECT_TRUE(failed) << "batch " << batch << ": nothing allocated while memory was short";
      drain("batch " + std::to_string(batch) + " after memory came back");
    }
  }
  // Rank 1 learns how many envelopes (and which blocks) to expect.
  tt::bcast(&total, sizeof total, 0);
  std::uint64_t n_fills = fills.size();
  tt::bcast(&n_fills, sizeof n_fills, 0);
  fills.resize(n_fills);
  tt::bcast(fills.data(), static_cast<int>(n_fills * sizeof(std::uint64_t)), 0);
  if (rank == 1) {
    EXPECT_TRUE(wait_until([&] { return sink.delivered() == total; }, 20s)) << "delivered " << sink.delivered();
    std::this_thread::sleep_for(50ms);  // nothing more comes
    engine.stop_progress_thread();
    expect_all_delivered(sink, total, fills);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, RunningOutOfMemoryWhileReceivingLosesNothingAndReadsNothingTwice) {
  // The receiving side's turn: rank 1 drives its engine itself, with its k-th
  // allocation from then on failing (the engine's and its handler's), for k =
  // 0, 1, ... until a batch needs fewer; then with every allocation failing
  // for a while, as the batch arrives. Nothing is lost or read twice: a frame
  // whose envelope finds no memory waits, half read, in its ring slot or at
  // the front of its source's frames (and the ring behind it), and the
  // envelope is read again whole in a later round. The batches:
  //  1. small envelopes coalesced, with blocks of their own (one staged, one
  //     refused and drained) and without;
  //  2. 60 envelopes of 3000 bytes: several frames, so that frames queue
  //     behind one that waits;
  //  3. an envelope too large to share a frame, with a block, between small ones.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  sink.order.reserve(1 << 20);  // delivery allocates nothing (it is not the engine's to retry)
  sink.refuse_blocks_of_even_ids = true;  // so the engine drains some blocks itself
  Engine engine(MPI_COMM_WORLD, sink);
  const std::vector<std::vector<Shape>> batches{
      {{40}, {8, 64 << 10}, {40}, {8, 300 << 10, true}, {8, 100 << 10}, {40}},
      std::vector<Shape>(60, Shape{3000}),
      {{40}, {70000, 100 << 10}, {40}},
  };
  std::uint64_t total = 0;
  std::vector<std::uint64_t> fills;
  if (rank == 0) engine.set_stage_blocks(1, true);
  // Rank 1 says what comes next: the same batch again (1), the next batch (2), or the end (0).
  std::int32_t next = 2;
  std::size_t batch = 0;
  long k = 0;           // rank 1: the allocation that fails in this pass
  long failures = 0;    // rank 1: passes of this batch that met their failing allocation
  bool starving = false;  // rank 1: this pass fails every allocation
  auto receive = [&] {  // rank 1: what was sent so far comes in, whatever fails meanwhile
    return wait_until(
        [&] {
          engine.progress();
          return sink.delivered() == total;
        },
        20s);
  };
  for (int pass = 0; pass < 100000; ++pass) {
    if (rank == 0) {
      for (OutEnvelope* e : make_batch(batches[batch], total, fills)) engine.send(e, /*urgent=*/false);
      engine.flush();
    } else {
      // The same ids and fills as rank 0 (its envelopes, counted here too).
      const auto envs = make_batch(batches[batch], total, fills);
      for (OutEnvelope* e : envs) delete e;
      const std::string what = "batch " + std::to_string(batch) + (starving ? ", no memory" : ", allocation " + std::to_string(k));
      if (starving) {
        tt::fail_allocations_from(0);
        // 300 ms of rounds, and on until the batch's arrival met the shortage
        // (rank 0 may send late on a loaded machine).
        const auto start = std::chrono::steady_clock::now();
        while (std::chrono::steady_clock::now() - start < 300ms ||
               (!tt::failed_yet() && std::chrono::steady_clock::now() - start < 20s)) {
          engine.progress();
          std::this_thread::sleep_for(1ms);
        }
        EXPECT_TRUE(tt::stop_failing()) << what << ": nothing was allocated";
        EXPECT_TRUE(receive()) << what << ": delivered " << sink.delivered() << " of " << total;
        next = batch + 1 < batches.size() ? 2 : 0;
        EXPECT_GT(failures, 0) << "batch " << batch << ": no failing allocation met";
        starving = false;
        k = 0;
        failures = 0;
      } else {
        tt::fail_allocation_after(k);
        const bool received = receive();
        const bool failed = tt::stop_failing();  // (before a failure's message is made)
        EXPECT_TRUE(received) << what << ": delivered " << sink.delivered() << " of " << total;
        if (failed) {
          ++failures;
          ++k;
          next = 1;
        } else {
          starving = true;  // this pass needed fewer than k + 1: now none at all
          next = 1;
        }
      }
    }
    if (rank == 0) {
      bcast_driving(engine, &next, sizeof next, 1);
    } else {
      tt::bcast(&next, sizeof next, 1);
    }
    if (next == 0) break;
    if (next == 2) ++batch;
  }
  if (rank == 1) {
    // Nothing more comes (a frame read twice, say).
    const auto until = std::chrono::steady_clock::now() + 50ms;
    while (std::chrono::steady_clock::now() < until) engine.progress();
    std::vector<std::uint64_t> taken;  // the blocks the sink took: of odd ids
    for (auto id : fills)
      if (id % 2 != 0) taken.push_back(id);
    expect_all_delivered(sink, total, taken);
    EXPECT_GT(engine.stats().receive_waits, 0u) << "no frame ever waited for memory";
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, ALargeFrameThatFindsNoMemoryForLongerThanThePatienceBreaksItsSource) {
  // Rank 0 announces a large frame (a stub, then 256 KiB of envelopes under
  // their own tag); rank 1 can allocate nothing of 128 KiB or more (its ring's
  // buffers, of kFrameLimit, it can: under ASan none is pooled). The frame waits
  // in MPI, as memory may come back, for the engine's patience (cut to 200 ms
  // here); then rank 0's source is broken (the cluster then counts it lost):
  // reported once, and nothing of the frame is read. Waiting for ever, the
  // engine would never hear of rank 0 again and nobody would say why.
  using troupe::detail::kFrameLimit;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  Engine engine(MPI_COMM_WORLD, sink);
  ByteBuffer large;
  for (std::uint64_t id = 1; large.size() < (256u << 10); ++id) {
    const ByteBuffer f = frame_of(id, {});
    large.append(f.data(), f.size());
  }
  if (rank == 0) {
    const ByteBuffer stub = stub_of(large.size());
    MPI_Send(stub.data(), static_cast<int>(stub.size()), MPI_BYTE, 1, troupe::detail::kTagFrame, engine.comm());
    MPI_Send(large.data(), static_cast<int>(large.size()), MPI_BYTE, 1, troupe::detail::kTagLargeFrame,
             engine.comm());  // ends once rank 1 has taken it by hand
  } else if (rank == 1) {
    constexpr auto patience = 200ms;
    const auto before = troupe::testing::set_memory_patience(patience);
    std::vector<NodeId> broken;
    const auto start = std::chrono::steady_clock::now();
    static_assert(kFrameLimit < (128u << 10));
    tt::fail_large_allocations(128u << 10, 1L << 40);
    while (broken.empty() && std::chrono::steady_clock::now() - start < 10s) {
      engine.progress();
      for (auto n : engine.newly_broken()) broken.push_back(n);
      std::this_thread::sleep_for(1ms);
    }
    const auto took = std::chrono::steady_clock::now() - start;
    const bool refused = tt::stop_failing();
    troupe::testing::set_memory_patience(before);
    EXPECT_TRUE(refused) << "the large frame's buffer was never asked for";
    EXPECT_EQ(broken, std::vector<NodeId>{0}) << "the frame waited on";
    EXPECT_GE(took, patience - 10ms) << "given up before the patience was out";  // (a coarse clock's few ms)
    EXPECT_GT(engine.stats().receive_waits, 0u);
    for (int i = 0; i < 20; ++i) {
      engine.progress();
      for (auto n : engine.newly_broken()) broken.push_back(n);
    }
    EXPECT_EQ(broken.size(), 1u) << "reported more than once";
    EXPECT_EQ(sink.delivered(), 0u) << "part of the frame was read";
    // The large frame is taken by hand, so that rank 0's send ends; unless the
    // engine took it after all (it posted a receive for it: the test failed).
    int there = 0;
    for (int i = 0; i < 400 && !there; ++i) {
      MPI_Iprobe(0, troupe::detail::kTagLargeFrame, engine.comm(), &there, MPI_STATUS_IGNORE);
      if (!there) std::this_thread::sleep_for(5ms);
    }
    EXPECT_TRUE(there) << "the engine posted a receive for the frame";
    if (there) {
      ByteBuffer taken;
      taken.resize(large.size());
      MPI_Recv(taken.data(), static_cast<int>(taken.size()), MPI_BYTE, 0, troupe::detail::kTagLargeFrame,
               engine.comm(), MPI_STATUS_IGNORE);
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Engine, AStagingPoolThatCouldNotBeMappedIsTriedAgainLater) {
  // Rank 0's staging pool cannot be mapped at its first staged block: the
  // block leaves from its own memory, in the pieces its envelope announced,
  // and arrives whole. A shortage may pass: a staged block sent over a second
  // later goes through a pool again.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  OrderSink sink;
  sink.order.reserve(64);
  Engine engine(MPI_COMM_WORLD, sink);  // collective
  std::uint64_t total = 0;
  std::vector<std::uint64_t> fills;
  for (int round = 0; round < 2; ++round) {
    const auto envs = make_batch({{40}, {8, 300 << 10, true}, {40}}, total, fills);
    if (rank == 0) {
      engine.set_stage_blocks(1, true);
      if (round == 0) troupe::detail::StagePool::fail_next_makes_for_tests(1);
      if (round == 1)  // past the time it waits before trying again
        std::this_thread::sleep_for(troupe::detail::StagePool::kRetryAfter + 200ms);
      const auto staged_before = engine.stats().pieces_staged;
      for (OutEnvelope* e : envs) engine.send(e, /*urgent=*/false);
      engine.flush();
      EXPECT_TRUE(wait_until(
          [&] {
            engine.progress();
            return !engine.sends_pending();
          },
          20s))
          << "round " << round;
      troupe::detail::StagePool::fail_next_makes_for_tests(0);
      if (round == 0) {
        EXPECT_EQ(engine.stats().pieces_staged, staged_before) << "staged, with no pool?";
      } else {
        EXPECT_GT(engine.stats().pieces_staged, staged_before) << "the pool was never tried again";
      }
    } else {
      for (OutEnvelope* e : envs) delete e;
      EXPECT_TRUE(wait_until(
          [&] {
            engine.progress();
            return sink.delivered() == total;
          },
          20s))
          << "round " << round << ": delivered " << sink.delivered() << " of " << total;
      expect_all_delivered(sink, total, fills);
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

TEST(Engine, RunningOutOfMemoryOnItsFirstFramesLosesNothing) {
  // The test above grows the engine's lists once and for all in its first
  // passes. Here each pass has a new engine on both ranks, so that its k-th
  // allocation is also whatever grows for the first time (the ring's buffers,
  // the ready list, a source's queues): rank 0 sends a batch, rank 1 reads it
  // with its k-th allocation failing, for k = 0, 1, ... until one is not met.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::vector<Shape> batch{{40}, {8, 64 << 10}, {6000}, {40}, {8, 300 << 10, true}, {40}};
  std::int32_t more = 1;
  for (long k = 0; more != 0 && k < 200; ++k) {
    OrderSink sink;
    sink.order.reserve(64);
    Engine engine(MPI_COMM_WORLD, sink);  // collective
    std::uint64_t total = 0;
    std::vector<std::uint64_t> fills;
    const auto envs = make_batch(batch, total, fills);
    if (rank == 0) {
      engine.set_stage_blocks(1, true);
      for (OutEnvelope* e : envs) engine.send(e, /*urgent=*/false);
      engine.flush();
    } else {
      for (OutEnvelope* e : envs) delete e;
      tt::fail_allocation_after(k);
      const bool received = wait_until(
          [&] {
            engine.progress();
            return sink.delivered() == total;
          },
          20s);
      more = tt::stop_failing() ? 1 : 0;
      EXPECT_TRUE(received) << "allocation " << k << ": delivered " << sink.delivered() << " of " << total;
      expect_all_delivered(sink, total, fills);
      if (more == 0) {
        EXPECT_GT(k, 10) << "so few allocations to read the batch?";
      }
    }
    end_pass(engine, rank, more, k);
  }
  EXPECT_EQ(more, 0) << "200 allocations, and the batch needed more";
}
