#!/usr/bin/env bash
# Checks the commands troupe-run builds (--dry-run), without running anything:
#   check_troupe_run.sh TROUPE_RUN MPI_PROGRAM
# Each case runs in a clean environment, optionally faking a Slurm allocation.
set -euo pipefail
run="${1:?troupe-run path}"
prog="${2:?an MPI program}"
failures=0

# dry ENV... -- ARGS...: troupe-run --dry-run in a clean environment.
dry() {
  local envs=()
  while [[ "$1" != -- ]]; do envs+=("$1"); shift; done
  shift
  env -i PATH="$PATH" HOME="${HOME:-/root}" "${envs[@]}" bash "$run" --dry-run "$@" 2>&1
}
expect() {  # expect NAME OUTPUT REGEX...: every REGEX (grep -E) must match OUTPUT
  local name="$1" out="$2"; shift 2
  local re
  for re in "$@"; do
    if ! grep -Eq -- "$re" <<<"$out"; then
      echo "FAIL $name: no match for /$re/ in:"; sed 's/^/    /' <<<"$out"; failures=$((failures + 1)); return
    fi
  done
  echo "ok   $name"
}
refuse() {  # refuse NAME OUTPUT REGEX: OUTPUT must not match REGEX
  if grep -Eq -- "$3" <<<"$2"; then
    echo "FAIL $1: unexpected /$3/ in:"; sed 's/^/    /' <<<"$2"; failures=$((failures + 1))
  else
    echo "ok   $1"
  fi
}

plugin=pmix
ldd "$prog" 2>/dev/null | grep -q libmpich && plugin=pmi2

# Outside Slurm: Open MPI's mpirun with recovery, loopback, oversubscription.
out=$(dry TROUPE_MPIRUN=mpirun -- -n 3 -t 2 "$prog" a)
expect "local: mpirun --enable-recovery" "$out" \
  'TROUPE_THREADS=2' 'OMPI_MCA_btl_tcp_if_include=lo' 'OMPI_MCA_rmaps_base_oversubscribe=1' \
  "mpirun --enable-recovery -np 3 $prog a \$"
out=$(dry TROUPE_MPIRUN=mpirun -- --no-recovery -n 2 "$prog")
refuse "local: --no-recovery drops --enable-recovery" "$out" 'enable-recovery'
out=$(dry TROUPE_MPIRUN=mpirun -- --role coordinator=1 --role worker=3 "$prog" x)
expect "local: roles are mpirun app contexts" "$out" \
  "-np 1 $prog x --troupe-role=coordinator : -np 3 $prog x --troupe-role=worker"
if command -v mpiexec.mpich >/dev/null 2>&1; then
  out=$(dry TROUPE_MPIRUN=mpiexec.mpich -- --role a=1 --role b=2 "$prog")
  expect "local: MPICH flags" "$out" \
    "mpiexec.mpich -disable-auto-cleanup -n 1 $prog --troupe-role=a : -n 2 $prog --troupe-role=b"
  refuse "local: MPICH without --enable-recovery" "$out" 'enable-recovery'
fi

# Inside a (fake) two-node allocation: srun, the plugin of the program's MPI,
# --cpus-per-task from the job, no loopback, roles as a --multi-prog file.
slurm=(SLURM_JOB_ID=42 SLURM_JOB_NUM_NODES=2 SLURM_CPUS_PER_TASK=4)
out=$(dry "${slurm[@]}" -- -n 8 "$prog")
expect "slurm: srun" "$out" 'TROUPE_THREADS=4' \
  "srun --mpi=$plugin --kill-on-bad-exit=0 --no-kill -n 8 --cpus-per-task=4 $prog \$"
refuse "slurm: no loopback on two nodes" "$out" 'tcp_if_include'
out=$(dry "${slurm[@]}" -- --role coordinator=1 --role worker=2 "$prog" "it's %t")
expect "slurm: roles as --multi-prog" "$out" \
  "srun --mpi=$plugin .*-n 3 --cpus-per-task=4 --multi-prog" \
  "\| 0-0 '$prog' 'it'\\\\''s %t' '--troupe-role=coordinator'\$" \
  "\| 1-2 '$prog' 'it'\\\\''s %t' '--troupe-role=worker'\$"
out=$(dry "${slurm[@]}" -- --no-recovery "$prog")
expect "slurm: --no-recovery kills on bad exit" "$out" '--kill-on-bad-exit=1'
out=$(dry SLURM_JOB_ID=42 SLURM_JOB_NUM_NODES=1 -- "$prog")
expect "slurm: one node uses loopback" "$out" 'OMPI_MCA_btl_tcp_if_include=lo'
out=$(dry "${slurm[@]}" TROUPE_MPIRUN=mpirun -- --fault-tolerant "$prog")
if [[ "$plugin" == pmix ]]; then
  expect "slurm: --fault-tolerant uses mpirun for Open MPI" "$out" \
    "mpirun --enable-recovery --map-by slot:PE=4 $prog"
else
  expect "slurm: --fault-tolerant keeps srun for MPICH" "$out" "srun --mpi=pmi2 --kill-on-bad-exit=0"
fi

# Usage errors exit with status 2.
for bad in "-n 3 --role a=1 $prog" "--role a $prog" "--launcher srun $prog" "-n 0 $prog" ""; do
  status=0
  # shellcheck disable=SC2086
  env -i PATH="$PATH" bash "$run" --dry-run $bad >/dev/null 2>&1 || status=$?
  if ((status == 2)); then echo "ok   refuses: troupe-run $bad"; else
    echo "FAIL troupe-run $bad: exit $status, expected 2"; failures=$((failures + 1)); fi
done

((failures == 0)) || { echo "$failures failures"; exit 1; }
echo "all troupe-run command checks passed"
