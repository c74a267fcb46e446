// Running out of memory with a whole runtime: replies that find no memory
// where they land (run on 2 ranks). A binary of its own: it replaces the
// global operator new (failing_new.cpp), which TSan's view of oneTBB's own
// allocations does not survive, so it stays out of the tsan phase.
#include <gtest/gtest.h>
#include <mpi.h>

#include <optional>
#include <string>

#include "failing_new.hpp"
#include "remote/remote_node.hpp"
#include "test_actors.hpp"
#include "troupe/mpi.hpp"
#include "troupe/testing.hpp"

using namespace std::chrono_literals;
using tt::Counter;

namespace {

struct Job {
  troupe::Runtime rt{troupe::adopt(MPI_COMM_WORLD)};
  troupe::NodeId me = rt.node();
};

/// An actor whose reply finds no memory: arm(k) makes the k-th allocation of
/// its thread from its return on fail; disarm() stops that and counts
/// whether it came (both run in one turn when one frame brings them).
struct Frail {
  std::string arm(long k) {
    tt::fail_allocation_after(k);
    return "armed";
  }
  void disarm() { hits += tt::stop_failing() ? 1 : 0; }
  int hit_count() const { return hits; }
  int hits = 0;
};
TROUPE_REMOTE(Frail, troupe::init<>, &Frail::arm, &Frail::disarm, &Frail::hit_count);

/// Sets how many tasks posted on its node, or monitors added or stops asked
/// there, find no memory (troupe::testing::fail_next_posts, fail_next_monitors,
/// fail_next_stops), and says how many were still to fail; and how long a
/// shortage is waited out there (troupe::testing::set_memory_patience, in ms),
/// saying the patience before.
struct PostFailer {
  int fail(int n) { return troupe::testing::fail_next_posts(n); }
  int fail_monitors(int n) { return troupe::testing::fail_next_monitors(n); }
  int fail_stops(int n) { return troupe::testing::fail_next_stops(n); }
  long patience(long ms) {
    return static_cast<long>(troupe::testing::set_memory_patience(std::chrono::milliseconds(ms)).count());
  }
};
TROUPE_REMOTE(PostFailer, troupe::init<>, &PostFailer::fail, &PostFailer::fail_monitors, &PostFailer::fail_stops,
              &PostFailer::patience);

}  // namespace

TEST(Remote, AnAskWhoseReplyFindsNoMemoryIsStillAnsweredOnce) {
  // Rank 0 asks a counter on rank 1 with its k-th allocation from then on
  // failing, for k = 0, 1, ... until an ask needs fewer. Rank 0's main thread
  // drives its engine while it waits, so it reads the replies itself, and the
  // allocation may fail anywhere on the way: the ask, the wait, reading the
  // reply. Each ask either fails with std::bad_alloc before it is sent (at
  // once, or through its future) or gets its answer, once: a reply that finds
  // no memory is read again later (the handler puts the ask's record back),
  // not lost.
  Job j;
  if (j.me == 0) {
    auto counter = j.rt.spawn_on<Counter>(1, 0).get_for(10s);
    int sent = 0;
    bool met = true;
    long k = 0;
    for (; met && k < 2000; ++k) {
      std::optional<troupe::Future<int>> f;
      int got = -1;
      bool timed_out = false, other = false;
      tt::fail_allocation_after(k);
      try {
        f.emplace(counter.ask<&Counter::add>(1));
        got = f->get_for(10s);
      } catch (const std::bad_alloc&) {
      } catch (const troupe::Timeout&) {
        timed_out = true;
      } catch (...) {
        other = true;
      }
      met = tt::stop_failing();
      EXPECT_FALSE(timed_out) << "allocation " << k << ": the reply never came";
      EXPECT_FALSE(other) << "allocation " << k << ": the ask failed";
      // The wait itself found no memory: the future is still there.
      if (f && f->valid() && got == -1 && !timed_out && !other) got = f->get_for(10s);
      // Answered, or failed before it was sent (at once, or through its
      // future, which get_for then consumed: std::bad_alloc, never sent).
      if (got != -1) {
        ++sent;
        EXPECT_EQ(got, sent) << "allocation " << k;
      }
    }
    EXPECT_FALSE(met) << "2000 allocations, and an ask needed more";
    EXPECT_GT(k, 3);
    // Nothing was answered twice or left behind: the counter saw each ask once.
    EXPECT_EQ(counter.ask<&Counter::value>().get_for(10s), sent);
  }
  EXPECT_EQ(j.rt.finish(), 0);
}

TEST(Remote, AResultWithABlockWaitsOutAShortageButNotAnAbsurdRequest) {
  // A result that travels as a block (100 KiB of doubles), which the reply's
  // decode allocates where it lands. Rank 0's main thread waits for it and
  // reads it. When that allocation fails and memory is short (the runtime's
  // probe of the message's size fails too), the reply waits and is read
  // again: answered. When only that allocation fails (memory is there: the
  // decode asked for too much), the asker gets a DecodeError at once.
  Job j;
  if (j.me == 0) {
    auto bulk = j.rt.spawn_on<tt::Bulk>(1).get_for(10s);
    std::vector<double> v(12800);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i);
    constexpr std::size_t kLarge = 96 << 10;  // the result's 100 KiB, not a frame's 64 KiB
    for (const long failures : {2L, 1L}) {
      int met = 0;  // passes whose failing allocations came (on this thread)
      for (int pass = 0; pass < 200 && met < 3; ++pass) {
        auto arg = v;
        std::optional<troupe::Future<std::vector<double>>> f;
        std::vector<double> got;
        bool decode_error = false, timed_out = false, other = false;
        tt::fail_large_allocations(kLarge, failures);
        try {
          f.emplace(bulk.ask<&tt::Bulk::scale>(std::move(arg), 2.0));
          got = f->get_for(10s);
        } catch (const std::bad_alloc&) {
        } catch (const troupe::DecodeError&) {
          decode_error = true;
        } catch (const troupe::Timeout&) {
          timed_out = true;
        } catch (...) {
          other = true;
        }
        const bool hit = tt::stop_failing();
        EXPECT_FALSE(timed_out) << failures << " failures, pass " << pass << ": the reply never came";
        EXPECT_FALSE(other) << failures << " failures, pass " << pass;
        if (!hit || !f) continue;  // read by another thread, or failed before it was sent
        if (got.empty() && !decode_error && !timed_out && !other) continue;  // failed on the way out
        ++met;
        if (failures == 2) {
          EXPECT_FALSE(decode_error) << "pass " << pass << ": a shortage was not waited out";
          ASSERT_EQ(got.size(), v.size()) << "pass " << pass;
          for (std::size_t i = 0; i < v.size(); ++i) ASSERT_EQ(got[i], 2.0 * v[i]) << "pass " << pass;
        } else {
          EXPECT_TRUE(decode_error) << "pass " << pass << ": an allocation the memory could hold failed, and "
                                    << (got.empty() ? "nothing came" : "the reply was read again");
        }
      }
      EXPECT_GE(met, 3) << failures << " failures: the main thread read too few of the replies";
    }
  }
  EXPECT_EQ(j.rt.finish(), 0);
}

TEST(Remote, AQueryWhoseSendingFindsNoMemoryFailsItsFutureAndLeavesNoAskBehind) {
  // A mailbox query by name (as least_busy dispatchers make) whose envelope
  // finds no memory for its name: its future fails with std::bad_alloc, and
  // no ask stays waiting in the table (its sending used to throw at the
  // caller after the ask was recorded, and the record stayed until the
  // runtime finished; spawns and monitors had the same path).
  Job j;
  if (j.me == 0) {
    auto& node = dynamic_cast<troupe::detail::RemoteNode&>(*j.rt.core().remote());
    const std::string name(512 * 1024, 'n');
    troupe::Promise<std::size_t> p(j.rt.core().waiter());
    auto f = p.get_future();
    tt::fail_large_allocations(256 * 1024, 1);
    try {
      node.mailbox_size_named(1, name, std::move(p));
    } catch (const std::bad_alloc&) {
      ADD_FAILURE() << "the query threw at its caller";
    }
    EXPECT_TRUE(tt::stop_failing()) << "nothing allocated that much";
    EXPECT_THROW(f.get_for(10s), std::bad_alloc);
    EXPECT_EQ(node.pending_asks(), 0u);
  }
  EXPECT_EQ(j.rt.finish(), 0);
}

TEST(Remote, AReplyThatFindsNoMemoryIsSentOnceThereIsSome) {
  // The replying rank runs short while it sends a reply: the k-th allocation
  // of the actor's thread after its method returned fails, for k = 0, 1, ...
  // until the reply needs fewer. The reply is tried again, not thrown into
  // the actor's turn (where it became a DecodeError for a call that had run,
  // or ended the process), and the asker gets its answer; or, if the result's
  // writer found no memory, a RemoteError that says so. Rank 0 sends each
  // arm(k) ask with a disarm() call behind it in one frame, so that both run
  // in the same turn, on the thread that was set to fail; and rank 1 has one
  // worker, so that a frame split between them changes nothing but the turn.
  troupe::Config one_worker;
  one_worker.threads = 1;
  struct {
    troupe::Runtime rt;
    troupe::NodeId me;
  } j{troupe::Runtime(troupe::adopt(MPI_COMM_WORLD), one_worker), 0};
  j.me = j.rt.node();
  if (j.me == 0) {
    auto& node = dynamic_cast<troupe::detail::RemoteNode&>(*j.rt.core().remote());
    auto frail = j.rt.spawn_on<Frail>(1).get_for(10s);
    const auto arm = troupe::detail::fnv1a64("Frail::arm");
    const auto disarm = troupe::detail::fnv1a64("Frail::disarm");
    ASSERT_NE(troupe::detail::WireRegistry::instance().method(disarm), nullptr);
    int hits = 0;
    long k = 0;
    for (; k < 200; ++k) {
      troupe::detail::ByteBuffer arg;
      arg.append(&k, sizeof k);  // a long, as the archive writes it
      auto f = node.raw_ask(1, troupe::detail::Kind::call, arm, frail.id(), arg, troupe::detail::kProtocolVersion,
                            /*coalesce=*/true);
      node.raw_ask(1, troupe::detail::Kind::call, disarm, frail.id(), {}, troupe::detail::kProtocolVersion,
                   /*coalesce=*/true);
      try {
        f.get_for(20s);
      } catch (const troupe::RemoteError& e) {
        // No memory for the result's writer: the asker learns so.
        EXPECT_NE(std::string(e.what()).find("bad_alloc"), std::string::npos) << "allocation " << k << ": " << e.what();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "allocation " << k << ": " << e.what();
      }
      const int now = frail.ask<&Frail::hit_count>().get_for(10s);
      if (now == hits) break;  // the reply needed fewer than k allocations
      hits = now;
    }
    EXPECT_GE(k, 2) << "the replies' allocations were never reached";  // its writer, and the writer shared
    EXPECT_LT(k, 200);
    EXPECT_EQ(frail.ask<&Frail::arm>(-1).get_for(10s), "armed");  // still answering (-1: nothing fails)
  }
  EXPECT_EQ(j.rt.finish(), 0);
}

TEST(Remote, ASpawnWhoseConstructorsTaskFindsNoMemoryIsStillAnswered) {
  // A remote spawn's delivery posts the constructor as a task. When that post
  // found no memory the delivery failed and the asker was never answered
  // (spawn_on's future waited for ever); now it is posted again once there
  // is memory, and the actor comes. (fail_next_posts counts every task
  // posted on node 1; nothing else posts there meanwhile in this test, and
  // the test failed at the spawn without the change.)
  Job j;
  if (j.me == 0) {
    auto failer = j.rt.spawn_on<PostFailer>(1).get_for(10s);
    for (const int n : {1, 3}) {
      EXPECT_EQ(failer.ask<&PostFailer::fail>(n).get_for(10s), 0);
      auto counter = j.rt.spawn_on<Counter>(1, 5).get_for(10s);  // troupe::Timeout before the change
      EXPECT_EQ(counter.ask<&Counter::add>(1).get_for(10s), 6);
      EXPECT_EQ(failer.ask<&PostFailer::fail>(0).get_for(10s), 0) << "the spawn's posts did not fail " << n << " times";
    }
  }
  EXPECT_EQ(j.rt.finish(), 0);
}

TEST(Remote, ARemoteWatchThatFindsNoMemoryIsAddedOnceThereIsSome) {
  // A watch from another node whose monitor finds no memory where its actor
  // lives is added again once there is some, and fires when the actor stops
  // (it never fired: the watch was dropped). The stop travels behind the
  // watch, so it is read only after the watch is in place. A monitor of a
  // local actor that finds no memory throws at its caller instead.
  Job j;
  if (j.me == 0) {
    auto failer = j.rt.spawn_on<PostFailer>(1).get_for(10s);
    auto counter = j.rt.spawn_on<Counter>(1, 0).get_for(10s);
    EXPECT_EQ(failer.ask<&PostFailer::fail_monitors>(3).get_for(10s), 0);
    troupe::Promise<troupe::ExitReason> ended(j.rt.core().waiter());
    auto reason = ended.get_future();
    j.rt.monitor(counter, [&ended](const troupe::ExitInfo& e) { ended.set_value(e.reason); });
    counter.stop();
    EXPECT_EQ(reason.get_for(10s), troupe::ExitReason::stopped);  // troupe::Timeout before the change
    EXPECT_EQ(failer.ask<&PostFailer::fail_monitors>(0).get_for(10s), 0) << "the watch did not fail 3 times";

    auto local = j.rt.spawn<Counter>(0);
    EXPECT_EQ(troupe::testing::fail_next_monitors(1), 0);
    EXPECT_THROW(j.rt.monitor(local, [](const troupe::ExitInfo&) {}), std::bad_alloc);
    EXPECT_EQ(troupe::testing::fail_next_monitors(0), 0);
  }
  EXPECT_EQ(j.rt.finish(), 0);
}

TEST(Remote, ARemoteWatchThatNeverFindsMemoryEndsOnceThePatienceIsOut) {
  // A watch from another node whose monitor finds no memory for longer than
  // the runtime's patience (cut to 150 ms on node 1; the delivery waits that
  // long, heartbeats with it) is given up: its watcher is told, with reason
  // `unknown`, rather than left waiting for an exit that no monitor will
  // report. The actor lives on, and a watch made once memory is back works.
  Job j;
  if (j.me == 0) {
    auto failer = j.rt.spawn_on<PostFailer>(1).get_for(10s);
    auto counter = j.rt.spawn_on<Counter>(1, 0).get_for(10s);
    EXPECT_EQ(failer.ask<&PostFailer::patience>(150).get_for(10s), 10000);
    EXPECT_EQ(failer.ask<&PostFailer::fail_monitors>(1 << 30).get_for(10s), 0);
    troupe::Promise<troupe::ExitReason> ended(j.rt.core().waiter());
    auto reason = ended.get_future();
    const auto asked = std::chrono::steady_clock::now();
    j.rt.monitor(counter, [&ended](const troupe::ExitInfo& e) { ended.set_value(e.reason); });
    EXPECT_EQ(reason.get_for(10s), troupe::ExitReason::unknown);  // troupe::Timeout: the watcher waited for ever
    EXPECT_GE(std::chrono::steady_clock::now() - asked, 150ms) << "given up before the patience was out";
    EXPECT_GT(failer.ask<&PostFailer::fail_monitors>(0).get_for(10s), 0) << "no monitor was refused";
    EXPECT_EQ(failer.ask<&PostFailer::patience>(10000).get_for(10s), 150);
    EXPECT_EQ(counter.ask<&Counter::add>(2).get_for(10s), 2) << "the watched actor was touched";

    troupe::Promise<troupe::ExitReason> stopped(j.rt.core().waiter());
    auto stop_reason = stopped.get_future();
    j.rt.monitor(counter, [&stopped](const troupe::ExitInfo& e) { stopped.set_value(e.reason); });
    counter.stop();
    EXPECT_EQ(stop_reason.get_for(10s), troupe::ExitReason::stopped);
  }
  EXPECT_EQ(j.rt.finish(), 0);
}

TEST(Remote, AStopFromAnotherNodeThatFindsNoMemoryIsMadeOnceThereIsSome) {
  // Its delivery used to end the process (the stop message was made in a
  // noexcept function); now it is tried again, as a spawn's or a watch's is.
  Job j;
  if (j.me == 0) {
    auto failer = j.rt.spawn_on<PostFailer>(1).get_for(10s);
    auto counter = j.rt.spawn_on<Counter>(1, 0).get_for(10s);
    troupe::Promise<troupe::ExitReason> ended(j.rt.core().waiter());
    auto reason = ended.get_future();
    j.rt.monitor(counter, [&ended](const troupe::ExitInfo& e) { ended.set_value(e.reason); });
    EXPECT_EQ(counter.ask<&Counter::add>(1).get_for(10s), 1);  // (the watch is in place: it went first)
    EXPECT_EQ(failer.ask<&PostFailer::fail_stops>(3).get_for(10s), 0);
    counter.stop();
    EXPECT_EQ(reason.get_for(10s), troupe::ExitReason::stopped);
    EXPECT_EQ(failer.ask<&PostFailer::fail_stops>(0).get_for(10s), 0) << "the stop did not fail 3 times";
  }
  EXPECT_EQ(j.rt.finish(), 0);
}

TEST(Remote, ALargeVectorToldLeavesFromItsOwnMemory) {
  // A 16 MiB vector moved into a tell is sent from its own memory: no copy of
  // it is made on the way (every allocation of 1 MiB or more on this thread
  // fails meanwhile), and its bytes go out once.
  Job j;
  if (j.me == 0) {
    auto bulk = j.rt.spawn_on<tt::Bulk>(1).get_for(10s);
    auto& engine = dynamic_cast<troupe::detail::RemoteNode&>(*j.rt.core().remote()).engine();
    constexpr std::size_t kCount = 2 * 1024 * 1024;  // 16 MiB of doubles
    std::vector<double> v(kCount);
    for (std::size_t i = 0; i < kCount; ++i) v[i] = static_cast<double>(i % 1000) * 0.25;
    const double sum = tt::Bulk::checksum(v.data(), v.size());
    const auto before = engine.stats();
    tt::fail_large_allocations(std::size_t{1} << 20, 1);
    try {
      bulk.tell<&tt::Bulk::fold>(std::uint64_t{1}, std::move(v));
    } catch (const std::bad_alloc&) {
      ADD_FAILURE() << "the tell allocated 1 MiB or more";
    } catch (...) {
      tt::stop_failing();  // not left armed for what follows
      throw;
    }
    EXPECT_FALSE(tt::stop_failing()) << "the tell allocated 1 MiB or more";
    const auto folded = bulk.ask<&tt::Bulk::folded>().get_for(20s);
    ASSERT_EQ(folded.size(), 1u);
    EXPECT_EQ(folded[0].first, 1u);
    EXPECT_EQ(folded[0].second, sum);
    const auto sent = engine.stats().bytes_sent - before.bytes_sent;
    EXPECT_GE(sent, kCount * sizeof(double));
    EXPECT_LT(sent, kCount * sizeof(double) + 64 * 1024);
  }
  EXPECT_EQ(j.rt.finish(), 0);
}

TEST(Remote, AFinishThatFindsNoMemoryStillEndsTheJob) {
  // finish() with the k-th allocation of one node's calling thread failing,
  // for k = 0, 1, ...: on node 1, its answer to the coordinator's probe
  // (which it used to clear first, then let bad_alloc out of finish(): the
  // coordinator never probed again, and a second finish() waited for ever);
  // on node 0, the coordinator, its probes (a wave left open with a node not
  // probed never ends) and its "done" notices. Each time finish() returns 0
  // on both nodes.
  int hits = 0;
  for (int failing = 1; failing >= 0; --failing) {
    for (long k = 0; k < 6; ++k) {
      Job job;
      if (job.me == static_cast<troupe::NodeId>(failing)) tt::fail_allocation_after(k);
      int rc = -1;
      try {
        rc = job.rt.finish();
      } catch (const std::bad_alloc&) {
        tt::stop_failing();
        ADD_FAILURE() << "finish() on node " << job.me << " let out bad_alloc (allocation " << k << ")";
        rc = job.rt.finish();
      }
      if (tt::stop_failing()) ++hits;
      EXPECT_EQ(rc, 0) << "node " << failing << " failing allocation " << k;
    }
  }
  int all = 0;
  MPI_Allreduce(&hits, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_GT(all, 6) << "few failing allocations were met";
}
