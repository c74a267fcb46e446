#!/usr/bin/env bash
# Runs one fault scenario under mpirun --enable-recovery and checks that every
# expected survivor wrote PASS (after MPI_Finalize). Dead ranks write nothing.
#   run_fault.sh MPIEXEC NP SCENARIO BINARY SURVIVORS(comma-separated) [TIMEOUT]
set -u
mpiexec=$1 np=$2 scenario=$3 bin=$4 survivors=$5 limit=${6:-150}
dir=$(mktemp -d)
export TROUPE_FAULT_DIR=$dir
timeout "$limit" "$mpiexec" --enable-recovery -np "$np" "$bin" "$scenario"
rc=$?
fail=0
if [[ $rc -eq 124 ]]; then echo "run_fault: $scenario timed out after ${limit}s"; fail=1; fi
for r in ${survivors//,/ }; do
  f=$dir/$scenario.$r
  if [[ ! -f $f ]]; then
    echo "run_fault: survivor rank $r left no verdict (it died or hung)"
    fail=1
  elif ! grep -q '^PASS' "$f"; then
    echo "run_fault: survivor rank $r: $(cat "$f")"
    fail=1
  fi
done
rm -rf "$dir"
[[ $fail -eq 0 ]] && echo "run_fault: $scenario: every survivor passed (mpirun exit code $rc)"
exit $fail
