#!/usr/bin/env bash
# Runs one launch test and checks what the ranks printed.
#
#   run_job.sh MODE [options] -- COMMAND [ARGS...]
#
# MODE
#   local    run COMMAND here, outside any Slurm allocation (SLURM_* unset)
#   srun     srun [--slurm-arg ...] COMMAND            (srun makes the allocation)
#   salloc   salloc [--slurm-arg ...] COMMAND          (COMMAND runs inside it)
#   sbatch   submit a batch script that runs COMMAND, wait for the job, read
#            its output; with --script FILE, submit FILE with COMMAND as its
#            arguments (for the templates in slurm/templates)
#
# Options
#   --slurm-arg ARG   argument for srun/salloc/sbatch (repeatable)
#   --script FILE     sbatch: the batch script to submit
#   --ranks N         expect exactly N "hello" lines, ranks 0..N-1, all size=N
#   --role NAME=N     expect the next N ranks (in rank order) to print role=NAME;
#                     repeat for each role (without --role every rank must say
#                     role=none)
#   --threads T       expect threads=T on every hello line
#   --survivors N     fault drill: expect one "dying" line and N "survivor" lines
#   --exit CODE       expected exit status of COMMAND or the job (default 0;
#                     "any" accepts every status)
#   --timeout S       give up after S seconds (default 90)
#
# The program under test prints one line per rank (tests/slurm/mpi_hello.c does):
#   hello rank=R size=S host=H role=NAME threads=T
# plus, in a fault drill, "dying rank=R" and "survivor rank=R". Any program that
# prints these lines can be tested with this script.
#
# Slurm modes need a running cluster: SLURM_CONF must point at it
# (slurm/local-cluster.sh start; ctest starts it in the slurm.cluster_start test).
set -euo pipefail

fail() { echo "run_job: FAIL: $*" >&2; exit 1; }

mode="${1:-}"; shift || true
case "$mode" in local|srun|salloc|sbatch) ;; *) fail "first argument must be local, srun, salloc or sbatch (got '$mode')" ;; esac

slurm_args=()
script=""
ranks=""
roles=()
threads=""
survivors=""
want_exit=0
limit=90
while (($#)); do
  case "$1" in
    --slurm-arg) slurm_args+=("$2"); shift ;;
    --script) script="$2"; shift ;;
    --ranks) ranks="$2"; shift ;;
    --role) roles+=("$2"); shift ;;
    --threads) threads="$2"; shift ;;
    --survivors) survivors="$2"; shift ;;
    --exit) want_exit="$2"; shift ;;
    --timeout) limit="$2"; shift ;;
    --) shift; break ;;
    *) fail "unknown option '$1'" ;;
  esac
  shift
done
(($#)) || fail "no command given after --"
[[ -z "$script" || "$mode" == sbatch ]] || fail "--script is for sbatch only"

# Never inherit an enclosing allocation: local runs are outside Slurm, Slurm
# runs go to the test cluster named by SLURM_CONF.
for v in $(compgen -e); do
  case "$v" in SLURM_CONF) ;; SLURM_*) unset "$v" ;; esac
done

work=$(mktemp -d "$PWD/job.XXXXXX")
out="$work/output.txt"
keep=0
trap '((keep)) || rm -rf "$work"' EXIT
show() {
  # shellcheck disable=SC2034  # read by the EXIT trap
  keep=1
  echo "---- output ($out):" >&2
  cat "$out" >&2 || true
  echo "----" >&2
}

if [[ "$mode" != local ]]; then
  [[ -n "${SLURM_CONF:-}" ]] || fail "SLURM_CONF is not set: no test cluster (run slurm/local-cluster.sh start)"
  [[ -r "$SLURM_CONF" ]] || fail "SLURM_CONF=$SLURM_CONF does not exist: the test cluster was not started (slurm/local-cluster.sh start)"
  command -v sbatch >/dev/null 2>&1 || fail "Slurm client commands are not installed (apt-get install slurm-client)"
  timeout 15 sinfo -h >/dev/null 2>&1 ||
    fail "the Slurm controller does not answer (SLURM_CONF=$SLURM_CONF); is the cluster running? slurm/local-cluster.sh status"
fi

echo "run_job: $mode ${slurm_args[*]} ${script:+$script }$*"
status=0
case "$mode" in
  local)
    timeout -k 5 "$limit" "$@" >"$out" 2>&1 || status=$? ;;
  srun|salloc)
    timeout -k 5 "$limit" "$mode" "${slurm_args[@]}" "$@" >"$out" 2>&1 || status=$? ;;
  sbatch)
    if [[ -z "$script" ]]; then
      script="$work/job.sh"
      { echo '#!/bin/bash'; printf '%q ' "$@"; echo; } >"$script"
      set --
    fi
    id=$(sbatch --parsable --chdir="$PWD" --output="$out" --job-name="test-$(basename "$script" .sbatch)" \
           "${slurm_args[@]}" "$script" "$@") || fail "sbatch refused the job"
    id=${id%%;*}
    echo "run_job: job $id"
    t0=$SECONDS
    state=""
    while :; do
      info=$(timeout 15 scontrol -o show job "$id" 2>/dev/null || true)
      state=$(grep -o 'JobState=[A-Z_]*' <<<"$info" | cut -d= -f2 || true)
      case "$state" in
        COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE) break ;;
      esac
      if ((SECONDS - t0 > limit)); then
        timeout 15 scancel "$id" || true
        show
        echo "$info" >&2
        fail "job $id did not finish within ${limit}s (state ${state:-unknown})"
      fi
      sleep 0.3
    done
    # ExitCode=status:signal of the batch script.
    code=$(grep -o ' ExitCode=[0-9]*:[0-9]*' <<<"$info" | cut -d= -f2)
    status=${code%%:*}
    sig=${code##*:}
    ((sig == 0)) || status=$((128 + sig))
    echo "run_job: job $id $state, exit code $code"
    # The output file may appear a moment after the job completes.
    for _ in 1 2 3 4 5 6 7 8 9 10; do [[ -s "$out" ]] && break; sleep 0.2; done ;;
esac

# ---------------------------------------------------------------- checks ----
if [[ "$want_exit" != any && "$status" != "$want_exit" ]]; then
  show
  fail "exit status $status, expected $want_exit"
fi

hello=$(grep -E '^hello rank=' "$out" || true)
n=$(grep -c . <<<"$hello" || true)
[[ -n "$hello" ]] || n=0
if [[ -n "$ranks" ]]; then
  if ((n != ranks)); then show; fail "$n hello lines, expected $ranks"; fi
  for ((r = 0; r < ranks; r++)); do
    c=$(grep -c "^hello rank=$r size=$ranks " <<<"$hello" || true)
    ((c == 1)) || { show; fail "rank $r of size $ranks printed $c hello lines, expected 1"; }
  done
fi

rank_role() { sed -n "s/^hello rank=$1 .* role=\([^ ]*\).*/\1/p" <<<"$hello" | head -n1; }
if ((${#roles[@]})); then
  r=0
  for spec in "${roles[@]}"; do
    name=${spec%%=*}; count=${spec#*=}
    for ((k = 0; k < count; k++, r++)); do
      got=$(rank_role "$r")
      [[ "$got" == "$name" ]] || { show; fail "rank $r has role '$got', expected '$name'"; }
    done
  done
  ((r == n)) || { show; fail "roles cover $r ranks, but $n ranks printed hello"; }
elif ((n > 0)); then
  if grep -qvE ' role=(none|default) ' <<<"$hello"; then show; fail "a rank printed a role, none expected"; fi
fi

if [[ -n "$threads" ]]; then
  bad=$(grep -cv " threads=$threads\$" <<<"$hello" || true)
  ((bad == 0)) || { show; fail "$bad ranks do not say threads=$threads"; }
fi

if [[ -n "$survivors" ]]; then
  d=$(grep -c '^dying rank=' "$out" || true)
  s=$(grep -c '^survivor rank=' "$out" || true)
  ((d == 1)) || { show; fail "$d 'dying' lines, expected 1 (was a rank killed?)"; }
  ((s == survivors)) || { show; fail "$s ranks survived the killed one, expected $survivors"; }
fi

echo "run_job: ok ($n ranks${roles[*]:+, roles ${roles[*]}}${threads:+, threads=$threads}${survivors:+, $survivors survivors})"
sed 's/^/  | /' "$out"
