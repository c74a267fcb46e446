#!/usr/bin/env bash
# Builds the failure-detector simulation (standalone C++20, standard library
# only) and runs every scenario, writing bench/results/fault_sim.json and
# bench/results/fault_sim.md. See docs/fault_tolerance_sim.md.
#
#   bash bench/fault_sim/run.sh [--quick | --full] [--no-1m] [--seed S] [--skip-build]
#
# --quick:      a few runs at 1,000 and 10,000 nodes only (seconds; smoke test)
# --full:       3 runs instead of 1 for 1% of 100,000 nodes, and 5x the
#               false-positive exposure (about 7 minutes in all)
# --no-1m:      leave out the 1,000,000-node runs (~25 s)
# --seed S:     base seed (default 20261124); every run's seed derives from it
# --skip-build: use build/fault_sim/fault_sim as it is
# The default run takes about 3 minutes on one core of a 2-core machine; it is
# single-threaded and builds with one g++ process.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build/fault_sim
results=$root/bench/results
bin=$build/fault_sim
suite_args=()
skip_build=0

while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) suite_args+=(--quick); shift ;;
    --full) suite_args+=(--full); shift ;;
    --no-1m) suite_args+=(--no-1m); shift ;;
    --seed) suite_args+=(--seed "$2"); shift 2 ;;
    --skip-build) skip_build=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

cxx=${CXX:-g++}
if [[ $skip_build == 0 ]]; then
  mkdir -p "$build"
  flags=(-O2 -std=c++20 -Wall -Wextra)
  [[ $(uname -m) == x86_64 ]] && flags+=(-mpopcnt)
  echo "building $bin" >&2
  "$cxx" "${flags[@]}" -o "$bin" "$here/fault_sim.cpp" "$here/sim.cpp"
fi

"$bin" selftest

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
os=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || uname -s)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$root" status --porcelain -- bench/fault_sim 2>/dev/null) ]] && commit="$commit+dirty"
mkdir -p "$results"
"$bin" suite "${suite_args[@]}" \
  --json "$results/fault_sim.json" --md "$results/fault_sim.md" \
  --meta "cpu=${cpu:-unknown} ($(nproc) CPUs)" \
  --meta "os=$os" \
  --meta "compiler=$("$cxx" --version | head -1) -O2" \
  --meta "commit=$commit" \
  --meta "date=$(date -u +%Y-%m-%dT%H:%MZ)" \
  --meta "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrote $results/fault_sim.json and $results/fault_sim.md" >&2
