#!/usr/bin/env bash
# Distributed benchmarks beside raw MPI, measured in the same run, over shared
# memory (btl vader,self) and TCP loopback (btl tcp,self); then the dispatchers.
# Writes bench/results/dist.{json,md} and bench/results/dispatch.{json,md}.
#   bench/run_dist.sh [--quick | --report]   (--report: only rewrite the .md from the .json)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
quick=()
report_only=0
[[ "${1:-}" == --quick ]] && quick=(--quick)
[[ "${1:-}" == --report ]] && report_only=1  # only rewrite the .md files from the .json files
build=build/bench
# Not a failure-detection benchmark: while this VM hands out new memory slowly,
# raw MPI's fresh-vector baseline moves a 256 MiB window of 64 MiB vectors over
# TCP in over a second (165 MB/s measured), and troupe's heartbeats, sharing the
# socket, wait behind it: with the default 600 ms a live rank was declared lost
# and the run stopped (docs/benchmarks.md). The user's own setting wins.
export TROUPE_HEARTBEAT_TIMEOUT_MS=${TROUPE_HEARTBEAT_TIMEOUT_MS:-10000}
if ((!report_only)); then
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTROUPE_BUILD_TESTS=OFF -DTROUPE_BUILD_APPS=OFF >/dev/null
cmake --build $build --target bench_dist bench_dispatch -j2 >/dev/null
out=bench/results/dist.json
errlog=$build/bench_dist.stderr  # the ranks' messages (a run that stops says why here)
: >"$errlog"
trap 'echo "bench/run_dist.sh: a run failed; its ranks said:" >&2; tail -20 "$errlog" >&2' ERR
: >"$out"
for transport in shm tcp; do
  btl=vader,self
  [[ $transport == tcp ]] && btl=tcp,self
  OMPI_MCA_btl=$btl mpirun -x TROUPE_HEARTBEAT_TIMEOUT_MS -np 2 $build/bench/dist/bench_dist --label $transport "${quick[@]}" 2>>"$errlog" |
    grep '^{' >>"$out"
done
# Large vectors over shm once more with malloc asking for transparent huge pages
# (glibc's tunable, read at process start): the pages a sent vector sits on
# decide how fast the kernel's single copy reads it (docs/benchmarks.md). The
# raw baselines keep their own pages (explicit mmap, 4 KiB or huge as labelled).
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMPI_MCA_btl=vader,self \
  mpirun -x GLIBC_TUNABLES -x TROUPE_HEARTBEAT_TIMEOUT_MS -np 2 $build/bench/dist/bench_dist --label shm+thp --only bw --min 1048576 "${quick[@]}" \
  2>>"$errlog" | grep '^{' >>"$out"
# Blocks of up to 2 MiB over shm once more with staging on (Config::stage_blocks,
# off by default): copied through the engine's staging slots (docs/benchmarks.md).
TROUPE_STAGE_BLOCKS=1 OMPI_MCA_btl=vader,self \
  mpirun -x TROUPE_STAGE_BLOCKS -x TROUPE_HEARTBEAT_TIMEOUT_MS -np 2 $build/bench/dist/bench_dist --label shm+staged --only bw --min 16384 --max 1048576 \
  "${quick[@]}" 2>>"$errlog" | grep '^{' >>"$out"
OMPI_MCA_btl=vader,self mpirun -x TROUPE_HEARTBEAT_TIMEOUT_MS -np 4 $build/bench/dist/bench_dispatch 2>>"$errlog" | grep '^{' >bench/results/dispatch.json
fi
python3 - <<'PY'
import json
rows = [json.loads(l) for l in open("bench/results/dist.json")]
md = ["# troupe vs raw MPI, 2 ranks on one host (2 cores)", "",
      "bw: raw MPI sends every message from one buffer into one buffer (OSU style; at 1-4 MiB both stay in cache);",
      "raw MPI, distinct buffers: every message from a buffer of its own into one buffer per window slot,",
      "the memory traffic of troupe's run (its tells move distinct data; its receiver reuses pooled Arrays);",
      "huge pages: the same distinct buffers on transparent huge pages, which troupe asks for when it maps a block of 1 MiB or more;",
      "raw MPI, window buffers: one buffer per window slot on each side, reused by every window (huge pages from 1 MiB),",
      "the memory traffic of 'Array pooled' (Arrays taken from troupe's pool as they are sent: the blocks the last window freed);",
      "raw MPI, troupe's protocol: window buffers, but each message announced by a 96-byte header first, the block's receive",
      "posted only once the header is in (what troupe does for a message with a block);",
      "raw MPI, fresh vectors (std::vector rows only): what a raw MPI program does to move each message out of a vector of its own",
      "and hand it over as a vector of its own, as a tell of a vector does: each sent vector freed once its send is done, and the",
      "receiver makes (allocates and zero-fills) a new vector for each message and receives into it.",
      "const&: the same vectors to a method that takes its vector by const&; the runtime keeps it after the call and makes",
      "the next received vector from it (Config::recycled_vector_bytes).",
      "shm+staged: shm again from 16 KiB to 1 MiB with TROUPE_STAGE_BLOCKS=1 (Config::stage_blocks, off by default): blocks",
      "copied through the engine's staging slots on their way (docs/benchmarks.md).",
      "shm+thp: shm again from 1 MiB, with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, so that malloc's memory (troupe's vectors",
      "on both sides, raw MPI's fresh vectors) asks for transparent huge pages; the other raw baselines keep their explicit pages.", "",
      "| transport | benchmark | case | troupe | raw MPI | unit | troupe/MPI | raw MPI, distinct buffers | troupe/distinct | raw MPI, distinct, huge pages | troupe/huge | raw MPI, window buffers | troupe/window | raw MPI, troupe's protocol | troupe/protocol | raw MPI, fresh vectors | troupe/fresh |",
      "|---|---|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
idle = [r for r in rows if r["bench"] == "idle"]
tail = [r for r in rows if r["bench"] == "rtt_tail"]
rows = [r for r in rows if r["bench"] not in ("idle", "rtt_tail")]
def ratio(r, prefix, base):
    """The median of the rounds' own ratios, and their range."""
    if prefix + "ratio_min" in r:
        return f"{r[prefix + 'ratio']:.2f} ({r[prefix + 'ratio_min']:.2f}-{r[prefix + 'ratio_max']:.2f})"
    return f"{r['troupe'] / base:.2f}"
for r in rows:
    d = r.get("mpi_distinct")
    h = r.get("mpi_distinct_huge")
    extra = f" {d:.4g} | {ratio(r, 'distinct_', d)} |" if d else " | |"
    extra += f" {h:.4g} | {ratio(r, 'huge_', h)} |" if h else " | |"
    w = r.get("mpi_window")
    extra += f" {w:.4g} | {ratio(r, 'window_', w)} |" if w else " | |"
    a = r.get("mpi_announced")
    extra += f" {a:.4g} | {ratio(r, 'announced_', a)} |" if a else " | |"
    f = r.get("mpi_fresh") if "Array" not in r["case"] else None
    extra += f" {f:.4g} | {ratio(r, 'fresh_', f)} |" if f else " | |"
    md.append(f"| {r['transport']} | {r['bench']} | {r['case']} | {r['troupe']:.4g} | {r['mpi']:.4g} | {r['unit']} | {ratio(r, '', r['mpi'])} |" + extra)
md += ["", "troupe and raw MPI: medians over rounds that alternate them (7 for rtt, 5 for rate, 3 for bw;",
       "in each bw round troupe's four payloads run in a rotating order, each between barriers;",
       "every bw stream, raw or troupe, sends one untimed window first, as OSU's benchmarks skip their first iterations);",
       "ratios: the median of each round's own troupe/raw ratio, with their range."]
for r in rows:
    if "mpi_alone" in r:
        md.append(f"{r['transport']} {r['bench']}: raw MPI measured alone before troupe started (5 runs, median): {r['mpi_alone']:.4g} {r['unit']}"
                  f" (in the paired rounds, beside an idle troupe runtime: {r['mpi']:.4g}).")
    if "mpi_nonblocking_alone" in r:
        md.append(f"{r['transport']} {r['bench']}: the same raw ping-pong made the way troupe's engine calls MPI (a receive"
                  f" from MPI_ANY_SOURCE posted ahead and polled with MPI_Test, MPI_Isend tested at once), alone:"
                  f" {r['mpi_nonblocking_alone']:.4g} {r['unit']}.")
if any("mpi_alone" in r for r in rows):
    md.append("The machine's speed can change between the two; an idle runtime itself cost raw MPI's shm message rate"
              " 1.5-2 % in a controlled check (docs/benchmarks.md).")
for r in rows:
    if r["bench"] == "rate" and "send_ns_per_tell" in r:
        md.append("")
        md.append(f"{r['transport']} rate: the sending thread spent {r['send_ns_per_tell']:.0f} ns per tell.")
if tail:
    md += ["", "Round trips one by one: after the rtt rounds, one more round of each in which every round trip is timed on its own",
           "(the clock reads are kept out of the rounds above). us; 'over 5 us': how many, and their share of the round's time",
           "(a measure for shm; over TCP every round trip takes longer than that, and the tail shows in p99 and p99.9).", "",
           "| transport | who | mean | p10 | p50 | p90 | p99 | p99.9 | max | over 5 us | their share |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in tail:
        for who, name in (("troupe", "troupe"), ("mpi", "raw MPI")):
            v = lambda k: r[f"{who}_{k}"]
            md.append(f"| {r['transport']} | {name} | {v('mean'):.3f} | {v('p10'):.3f} | {v('p50'):.3f} | {v('p90'):.3f} | "
                      f"{v('p99'):.3f} | {v('p999'):.3g} | {v('max'):.4g} | {v('over5us')} of {r['count']} | {v('over5us_share'):.3f} |")
if idle:
    md += ["", "Idle: CPU used over wall time, per rank (1 s each).", "",
           "| transport | case | rank 0 | rank 1 |", "|---|---|--:|--:|"]
    for r in idle:
        md.append(f"| {r['transport']} | {r['case']} | {r['rank0']:.3f} | {r['rank1']:.3f} |")
open("bench/results/dist.md", "w").write("\n".join(md) + "\n")
rows = [json.loads(l) for l in open("bench/results/dispatch.json")]
md = ["# Dispatchers, 1 sender + 3 worker ranks on one host", "", "| strategy | us/message | vs direct tell |", "|---|--:|--:|"]
for r in rows:
    if r["bench"] == "dispatch_cost":
        md.append(f"| {r['strategy']} | {r['us_per_message']:.3f} | {r['vs_direct']:.2f} |")
md += ["", "Skewed work (node 1 four times slower; 240 tasks of 1-8 units of 0.1 ms, one every 0.2 ms):", "",
       "| strategy | p50 latency (ms) | p99 latency (ms) | makespan (ms) | tasks on the slow node |", "|---|--:|--:|--:|--:|"]
for r in rows:
    if r["bench"] == "dispatch_skew":
        md.append(f"| {r['strategy']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['makespan_ms']:.0f} | {r['tasks_on_slow_node']} |")
open("bench/results/dispatch.md", "w").write("\n".join(md) + "\n")
print(open("bench/results/dist.md").read()); print(open("bench/results/dispatch.md").read())
PY
