#!/usr/bin/env bash
# Where the shm ask round trip spends its time, stage by stage: builds
# bench_dist with TROUPE_STAGE_PROBES (build/stages; the probes cost a few ns
# each, so the round trip itself reads a little slower than in run_dist.sh)
# and runs its round-trip benchmark on 2 ranks over shared memory.
# Writes bench/results/stages.{json,md}.
#   bench/run_stages.sh [--rtt-iters N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
build=build/stages
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTROUPE_STAGE_PROBES=ON -DTROUPE_BUILD_TESTS=OFF \
  -DTROUPE_BUILD_APPS=OFF >/dev/null
cmake --build $build --target bench_dist -j2 >/dev/null
OMPI_MCA_btl=vader,self mpirun -np 2 $build/bench/dist/bench_dist --only rtt --label shm "$@" 2>/dev/null |
  grep '^{' >bench/results/stages.json
python3 - <<'PY'
import json
rows = [json.loads(l) for l in open("bench/results/stages.json")]
rtt = next(r for r in rows if r["bench"] == "rtt")
steps = [r for r in rows if r["bench"] == "stages"]
md = ["# The shm ask round trip, stage by stage", "",
      "Built with TROUPE_STAGE_PROBES; 2 ranks over shared memory; bench/run_stages.sh.",
      "Round trip in this run: troupe %.3f us, raw MPI %.3f us (medians of 7 rounds; the probes add a few ns each)."
      % (rtt["troupe"], rtt["mpi"]), "",
      "Each row: the mean time from one probe to the next on the same thread, over every time that step was taken",
      "(rank 0 asks from its main thread and waits, driving the engine; rank 1 answers on a worker's poll task).", ""]
# Follow each rank's chain from where its work starts.
starts = {0: "ask_begin", 1: "frame_landed"}
for rank in (0, 1):
    mine = {(s["from"], s["to"]): s for s in steps if s["rank"] == rank}
    md += ["## rank %d" % rank, "", "| from | to | times | ns |", "|---|---|--:|--:|"]
    at, seen, total, wait = starts[rank], set(), 0.0, 0.0
    while True:
        nxt = [s for (a, b), s in mine.items() if a == at and (a, b) not in seen]
        if not nxt:
            break
        s = max(nxt, key=lambda x: x["count"])  # the step taken most often from here
        seen.add((s["from"], s["to"]))
        if s["to"] == starts[rank]:
            break  # back at the start: the rest is waiting (or the raw rounds between)
        waiting = rank == 0 and s["to"] == "frame_landed"
        md.append("| %s | %s%s | %d | %.0f |" % (s["from"], s["to"], " (waiting for the reply)" if waiting else "",
                                                s["count"], s["ns"]))
        if waiting:
            wait = s["ns"]
        else:
            total += s["ns"]
        at = s["to"]
    md += ["", "Sum of the steps above%s: %.0f ns." % (", without the wait" if rank == 0 else "", total), ""]
open("bench/results/stages.md", "w").write("\n".join(md))
print("\n".join(md))
PY
