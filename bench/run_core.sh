#!/usr/bin/env bash
# Builds and runs the core benchmarks of issue 2 (troupe's local runtime against
# CAF 0.17), then writes bench/results/core.json and bench/results/core.md.
#
#   bash bench/run_core.sh [--threads N] [--reps N] [--scale X] [--no-caf-sharing]
#                          [--quiet-wait S] [--skip-build] [--update-docs]
#
# --threads: worker threads of every runtime (default 2)
# --reps:    repetitions of every figure, each in a fresh process (default 5)
# --scale:   multiplies the problem sizes (default 1; 0.1 for a smoke run)
# --no-caf-sharing: do not also run CAF with its work-sharing scheduler
# --quiet-wait S: before each repetition, wait up to S seconds (default 15;
#            at most 150 s in all) for the machine to be idle (other processes
#            < 0.25 CPU); every repetition records how busy the rest was anyway
# --skip-build: use the executables already in build/bench
# --update-docs: also copy the table into docs/benchmarks.md (between its
#            core-table markers)
# Raw output: bench/results/core.raw.jsonl (one line per run) and core.machine.json.
# The whole run takes about 3-6 minutes on a 2-core machine.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build=${TROUPE_BENCH_BUILD:-$root/build/bench}
results=$here/results
threads=2
reps=5
scale=1
caf_sharing=1
skip_build=0
update_docs=0
quiet_wait=15
quiet_budget=150

while [[ $# -gt 0 ]]; do
  case $1 in
    --threads) threads=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --no-caf-sharing) caf_sharing=0; shift ;;
    --skip-build) skip_build=1; shift ;;
    --update-docs) update_docs=1; shift ;;
    --quiet-wait) quiet_wait=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "run_core.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

if [[ $skip_build == 0 ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DTROUPE_BUILD_TESTS=OFF -DTROUPE_BUILD_APPS=OFF -DTROUPE_BUILD_BENCH=ON
  cmake --build "$build" -j2 --target bench_core
fi
bin=$build/bench
mkdir -p "$results"
raw=$results/core.raw.jsonl   # one JSON line per invocation, kept for report.py reruns
machine=$results/core.machine.json
: >"$raw"

common=(--threads "$threads" --reps 1 --scale "$scale")
have_caf=1
[[ -x $bin/bench_pingpong_caf ]] || { have_caf=0; echo "run_core.sh: CAF side not built; troupe figures only" >&2; }

# CPUs kept busy by the whole machine over half a second (nothing of ours runs then).
busy_cpus() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  sleep 0.5
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN{split(a,x," "); split(b,y," "); t=y[2]-x[2]; print (t>0 ? n*(y[1]-x[1])/t : 0)}'
}
wait_quiet() {
  local t0 wait deadline
  t0=$(date +%s)
  wait=$(( quiet_wait < quiet_budget ? quiet_wait : quiet_budget ))
  deadline=$(( t0 + wait ))
  while true; do
    if awk -v b="$(busy_cpus)" 'BEGIN{exit !(b < 0.25)}'; then break; fi
    if (( $(date +%s) >= deadline )); then
      echo "   (machine still busy: running anyway)" >&2
      break
    fi
  done
  quiet_budget=$(( quiet_budget - ($(date +%s) - t0) ))
  (( quiet_budget < 0 )) && quiet_budget=0
  return 0
}

# The runtimes take turns, one repetition (one fresh process) at a time, so
# slow phases of a noisy machine hit all of them alike; the order alternates.
runtimes=(troupe)
if [[ $have_caf == 1 ]]; then
  runtimes+=(caf)
  [[ $caf_sharing == 1 ]] && runtimes+=(caf-sharing)
fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)
for ((rep = 1; rep <= reps; rep++)); do
  order=("${runtimes[@]}")
  if ((rep % 2 == 0)); then
    order=(); for ((i = ${#runtimes[@]} - 1; i >= 0; i--)); do order+=("${runtimes[i]}"); done
  fi
  for case in pingpong fanout spawn fanin; do
    for rt in "${order[@]}"; do
      [[ $quiet_wait -gt 0 ]] && wait_quiet
      echo "== repetition $rep/$reps: $case, $rt" >&2
      case $rt in
        troupe) "$bin/bench_${case}_troupe" "${common[@]}" >>"$raw" ;;
        caf) "$bin/bench_${case}_caf" "${common[@]}" >>"$raw" ;;
        caf-sharing) "$bin/bench_${case}_caf" "${common[@]}" --caf-policy sharing --label caf-sharing >>"$raw" ;;
      esac
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "benchmarks took $(( $(date +%s) - start )) s" >&2

caf_version=$(dpkg-query -W -f='${Version}' libcaf-dev 2>/dev/null || echo unknown)
tbb_version=$(dpkg-query -W -f='${Version}' libtbb-dev 2>/dev/null || echo unknown)
cpu=$(LC_ALL=C lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
hyp=$(LC_ALL=C lscpu 2>/dev/null | sed -n 's/^Hypervisor vendor: *//p' | head -1)
[[ -n $hyp ]] && cpu="$cpu ($hyp guest)"
os=$( . /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || uname -s)
compiler=$(c++ --version 2>/dev/null | head -1)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$root" status --porcelain --untracked-files=no -- runtime include 2>/dev/null) ]]; then commit="$commit+dirty"; fi
python3 - "$machine" <<EOF
import json, sys
json.dump({"threads": $threads, "reps": $reps, "scale": $scale, "cpus": $(nproc),
           "cpu": """$cpu""", "os": """$os""", "kernel": """$(uname -r)""",
           "compiler": """$compiler""", "tbb": "$tbb_version", "caf": "$caf_version",
           "commit": "$commit", "date": "$(date -u +%Y-%m-%dT%H:%MZ)",
           "loadavg_before": "$load_before", "loadavg_after": "$load_after"}, open(sys.argv[1], "w"))
EOF
python3 "$here/core/report.py" "$raw" "$machine" "$results/core.json" "$results/core.md"
cat "$results/core.md"
if [[ $update_docs == 1 ]]; then
  python3 "$here/core/update_docs.py" "$root/docs/benchmarks.md" "$results/core.md"
  echo "updated docs/benchmarks.md" >&2
fi
