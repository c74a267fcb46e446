#!/usr/bin/env bash
# Failure detection on this machine: detection latency over repeated kills,
# and a false-positive soak under full CPU load. Writes
# bench/results/fault_detect.{json,md}.
#   bench/fault/run.sh [--kills N] [--ranks N] [--soak-ranks N] [--soak-seconds S]
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
kills=20 ranks=4 soak_ranks=8 soak_seconds=60
while (($#)); do
  case $1 in
    --kills) kills=$2; shift ;;
    --ranks) ranks=$2; shift ;;
    --soak-ranks) soak_ranks=$2; shift ;;
    --soak-seconds) soak_seconds=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
build=build/bench
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTROUPE_BUILD_TESTS=OFF -DTROUPE_BUILD_APPS=OFF >/dev/null
cmake --build $build --target bench_detect -j2 >/dev/null
bin=$build/bench/fault/bench_detect
raw=$(mktemp)
# Each kill twice: heartbeats only (TROUPE_PMIX=0), and with the launcher's
# process table (PMIx) as faster evidence.
for mode in heartbeat pmix; do
  pmix=0
  [[ $mode == pmix ]] && pmix=1
  for ((i = 0; i < kills; i++)); do
    d=$(mktemp -d)
    victim=$((1 + i % (ranks - 1)))
    TROUPE_PMIX=$pmix TROUPE_BENCH_DIR=$d timeout 60 mpirun --enable-recovery -x TROUPE_PMIX -np "$ranks" "$bin" kill "$victim" \
      >/dev/null 2>&1 || true
    python3 - "$d" "$victim" "$ranks" "$mode" >>"$raw" <<'PY'
import sys, glob, json
d, victim, ranks, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
kill = int(open(d + "/kill").read())
det = [int(open(f).read()) for f in glob.glob(d + "/detect.*")]
ok = all(t > 0 for t in det) and len(det) == ranks - 1
lat = sorted((t - kill) / 1e6 for t in det if t > 0)
print(json.dumps({"mode": mode, "victim": victim, "survivors": len(det), "all_knew": ok,
                  "first_ms": lat[0] if lat else None, "last_ms": lat[-1] if lat else None}))
PY
    rm -rf "$d"
  done
done
d=$(mktemp -d)
TROUPE_BENCH_DIR=$d timeout $((soak_seconds + 60)) mpirun --enable-recovery -np "$soak_ranks" "$bin" soak "$soak_seconds" \
  >/dev/null 2>&1 || true
soak_lost=$(cat "$d"/soak.* 2>/dev/null | awk '{s += $1} END {print s + 0}')
soak_reported=$(ls "$d"/soak.* 2>/dev/null | wc -l)
rm -rf "$d"
python3 - "$raw" "$kills" "$ranks" "$soak_ranks" "$soak_seconds" "$soak_lost" "$soak_reported" <<'PY'
import sys, json, statistics
raw, kills, ranks, sranks, ssec, slost, srep = sys.argv[1], *map(int, sys.argv[2:])
runs = [json.loads(l) for l in open(raw)]
out = {"ranks": ranks, "kills": kills, "modes": {},
       "soak": {"ranks": sranks, "seconds": ssec, "ranks_reporting": srep, "false_losses": slost},
       "config": {"heartbeat_period_ms": 100, "heartbeat_timeout_ms": 600, "pmix_poll_ms": 50}, "runs": runs}
md = f"""# Failure detection on this machine (2 cores, loopback)

Rank SIGKILLed at a random moment, {ranks} ranks, {kills} kills per mode; heartbeat 100 ms, timeout 600 ms;
PMIx process table polled every 50 ms by the dead rank's watcher.

| mode | death -> first knows, median (ms) | worst | death -> last survivor knows, median (ms) | worst | all knew |
|---|--:|--:|--:|--:|--:|
"""
for mode in ("heartbeat", "pmix"):
    rs = [r for r in runs if r["mode"] == mode]
    first = [r["first_ms"] for r in rs if r["first_ms"] is not None]
    last = [r["last_ms"] for r in rs if r["last_ms"] is not None]
    knew = sum(r["all_knew"] for r in rs)
    out["modes"][mode] = {"first_ms": {"median": statistics.median(first), "worst": max(first)},
                          "last_ms": {"median": statistics.median(last), "worst": max(last)}, "all_knew": knew}
    md += f"| {mode} | {statistics.median(first):.0f} | {max(first):.0f} | {statistics.median(last):.0f} | {max(last):.0f} | {knew}/{len(rs)} |\n"
json.dump(out, open("bench/results/fault_detect.json", "w"), indent=1)
md += f"""
Soak: {sranks} ranks on 2 cores, every worker thread busy for {ssec} s:
{slost} node(s) declared lost (false positives), {srep} of {sranks} ranks reported.
"""
open("bench/results/fault_detect.md", "w").write(md)
print(md)
PY
rm -f "$raw"
