#!/usr/bin/env bash
# Instruction-level profiles of the core benchmarks with callgrind: each case
# runs twice (small and large size) on ONE worker thread, and
# callgrind_diff.py prints the marginal instructions per operation by function,
# so setup, teardown and thread timing cancel out. Deterministic, unlike the
# wall-clock figures of run_core.sh. Needs valgrind and a built bench tree
# (bash bench/run_core.sh or cmake --build build/bench).
#
#   bash bench/core/profile.sh [case...]     # cases: pingpong_tell pingpong_ask fanout_ask fanout_tell spawn fanin
# Output: bench/results/profile/<case>_<runtime>.txt
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${TROUPE_BENCH_BUILD:-$root/build/bench}/bench
out=$root/bench/results/profile
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# case -> binary, size option, small, large, ops between the two, extra options
declare -A exe=([pingpong_tell]=pingpong [pingpong_ask]=pingpong [fanout_ask]=fanout [fanout_tell]=fanout
                [spawn]=spawn [fanin]=fanin)
declare -A opt=([pingpong_tell]=round-trips [pingpong_ask]=round-trips [fanout_ask]=rounds [fanout_tell]=rounds
                [spawn]=actors [fanin]=messages)
declare -A small=([pingpong_tell]=20000 [pingpong_ask]=20000 [fanout_ask]=2 [fanout_tell]=2 [spawn]=20000 [fanin]=50000)
declare -A large=([pingpong_tell]=40000 [pingpong_ask]=40000 [fanout_ask]=4 [fanout_tell]=4 [spawn]=40000 [fanin]=100000)
# warm-up included: pingpong runs n + n/10; fanout runs r + 1 rounds of 10,000; fanin has 4 senders
declare -A ops=([pingpong_tell]=22000 [pingpong_ask]=22000 [fanout_ask]=20000 [fanout_tell]=20000 [spawn]=20000 [fanin]=200000)
declare -A unit=([pingpong_tell]="round trip" [pingpong_ask]="round trip" [fanout_ask]="request" [fanout_tell]="request"
                 [spawn]="actor spawned and stopped" [fanin]="message")

cases=("$@")
[[ ${#cases[@]} -gt 0 ]] || cases=(pingpong_tell pingpong_ask fanout_ask fanout_tell spawn fanin)
for c in "${cases[@]}"; do
  mode=()
  [[ $c == *_tell || $c == *_ask ]] && mode=(--mode "${c##*_}")
  for rt in troupe caf; do
    b=$bin/bench_${exe[$c]}_$rt
    [[ -x $b ]] || continue
    for size in "${small[$c]}" "${large[$c]}"; do
      valgrind --tool=callgrind --callgrind-out-file="$work/$c.$rt.$size.out" \
        "$b" --threads 1 --reps 1 --no-fork "${mode[@]}" --"${opt[$c]}" "$size" >/dev/null 2>"$work/log"
    done
    {
      echo "# $c, $rt, 1 worker thread: marginal instructions per ${unit[$c]}"
      echo "# (${opt[$c]} ${small[$c]} vs ${large[$c]}: ${ops[$c]} operations apart)"
      python3 "$here/callgrind_diff.py" "$work/$c.$rt.${small[$c]}.out" "$work/$c.$rt.${large[$c]}.out" "${ops[$c]}" 25
    } | tee "$out/${c}_$rt.txt"
  done
done
