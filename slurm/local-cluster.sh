#!/usr/bin/env bash
# A private single-node Slurm cluster for development and tests.
#
#   slurm/local-cluster.sh start    # install packages if missing, start munged, slurmctld, slurmd
#   slurm/local-cluster.sh status   # exit 0 when all three run and the node takes jobs
#   slurm/local-cluster.sh stop     # cancel its jobs, stop exactly the daemons it started
#   slurm/local-cluster.sh env      # prints: export SLURM_CONF=...  (eval it, then use sbatch/srun)
#
# Everything lives under one directory (default /tmp/troupe-slurm; set
# TROUPE_SLURM_DIR or pass --dir DIR): slurm.conf, a private munge key and
# socket, controller state, slurmd spool, logs and the PID files. The daemons
# listen on private ports (TROUPE_SLURM_PORT, default 16817, and the next one),
# so a system Slurm or munge on the same machine is left alone.
#
# Other settings (read at start):
#   TROUPE_SLURM_CPUS        CPUs the node declares (default: max(8, nproc));
#                            more than the machine has is allowed (oversubscription)
#   TROUPE_SLURM_NO_INSTALL  1: never call apt-get, fail if Slurm is missing
#   TROUPE_SLURM_WAIT        seconds to wait for the node to become idle (default 60)
#
# Needs root (slurmd launches jobs for any user). Idempotent: start on a running
# cluster and stop on a stopped one do nothing and succeed.
set -euo pipefail

die() { echo "local-cluster: error: $*" >&2; exit 1; }
say() { echo "local-cluster: $*"; }

cmd=""
dir="${TROUPE_SLURM_DIR:-/tmp/troupe-slurm}"
while (($#)); do
  case "$1" in
    start|stop|status|env|restart) cmd="$1" ;;
    --dir) dir="${2:?--dir needs a directory}"; shift ;;
    --dir=*) dir="${1#--dir=}" ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (usage: $0 start|stop|status|env|restart [--dir DIR])" ;;
  esac
  shift
done
[[ -n "$cmd" ]] || die "usage: $0 start|stop|status|env|restart [--dir DIR]"
[[ "$dir" == /* ]] || dir="$PWD/$dir"

port="${TROUPE_SLURM_PORT:-16817}"
conf="$dir/slurm.conf"
mdir="$dir/munge"
msock="$mdir/munge.socket"
node=localhost
# A Unix socket path is limited to 107 bytes.
((${#msock} < 100)) || die "directory path too long for a Unix socket: $dir"

export SLURM_CONF="$conf"
# Client commands must talk to this cluster, not an enclosing allocation.
for v in $(compgen -e); do
  case "$v" in SLURM_CONF) ;; SLURM_*) unset "$v" ;; esac
done

# ---------------------------------------------------------------- processes --
# pid_of NAME: the PID in NAME's pid file if that process is alive and is the
# daemon we started (its command line names our socket or config); else empty.
pid_of() {
  local name="$1" file="$dir/run/$1.pid" pid cmdline
  [[ -r "$file" ]] || return 0
  pid=$(tr -dc 0-9 <"$file")
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 0
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
  case "$name" in
    munged) [[ "$cmdline" == *munged*"$msock"* ]] && echo "$pid" ;;
    *) [[ "$cmdline" == *"$name"*"$conf"* ]] && echo "$pid" ;;
  esac
  return 0
}

# stop_pids NAME...: SIGTERM to the recorded daemons, wait up to 10 s for all
# of them, then SIGKILL the ones still there.
stop_pids() {
  local name pid pids=() i alive
  for name in "$@"; do
    pid=$(pid_of "$name")
    rm -f "$dir/run/$name.pid"
    [[ -n "$pid" ]] || continue
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  for ((i = 0; i < 100; i++)); do
    alive=()
    for pid in "${pids[@]}"; do [[ -e "/proc/$pid" ]] && alive+=("$pid"); done
    ((${#alive[@]})) || return 0
    sleep 0.1
  done
  for pid in "${alive[@]}"; do
    say "pid $pid ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  done
  sleep 0.2
}

# node_state: the node's state as sinfo shows it (idle, mix, alloc, down*, ...).
node_state() {
  timeout 10 sinfo -h -n "$node" -o %T 2>/dev/null | head -n1 || true
}

# ----------------------------------------------------------------- packages --
ensure_packages() {
  local missing=() bin
  for bin in slurmctld slurmd srun sbatch munged; do
    command -v "$bin" >/dev/null 2>&1 || [[ -x "/usr/sbin/$bin" ]] || missing+=("$bin")
  done
  ((${#missing[@]})) || return 0
  [[ "${TROUPE_SLURM_NO_INSTALL:-0}" != 1 ]] ||
    die "Slurm is not installed (missing: ${missing[*]}) and TROUPE_SLURM_NO_INSTALL=1"
  command -v apt-get >/dev/null 2>&1 ||
    die "Slurm is not installed (missing: ${missing[*]}) and there is no apt-get: install slurmctld slurmd slurm-client munge"
  say "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
           slurmctld slurmd slurm-client munge; } >"$dir/apt.log" 2>&1; then
    tail -n 20 "$dir/apt.log" >&2
    die "apt-get could not install slurmctld slurmd slurm-client munge (log: $dir/apt.log)"
  fi
}

# ------------------------------------------------------------------- config --
write_config() {
  local cpus="${TROUPE_SLURM_CPUS:-}"
  if [[ -z "$cpus" ]]; then
    cpus=$(nproc)
    ((cpus >= 8)) || cpus=8
  fi
  cat >"$conf" <<EOF
# Written by slurm/local-cluster.sh: a private single-node cluster.
ClusterName=troupe
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$msock
CommunicationParameters=NoInAddrAny
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
# The node may declare more CPUs than the machine has (ranks then share cores).
SlurmdParameters=config_overrides
# Finished jobs stay visible to scontrol for 5 minutes (no accounting database).
MinJobAge=300
KillWait=5
InactiveLimit=0
WaitTime=0
MessageTimeout=20
SlurmdTimeout=300
SlurmctldTimeout=120
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

make_key() {
  # A private key: this cluster never accepts credentials of the system munge.
  [[ -s "$mdir/munge.key" ]] && return 0
  (umask 077; head -c 1024 /dev/urandom >"$mdir/munge.key")
}

# ---------------------------------------------------------------- commands --
start_munged() {
  local pid
  pid=$(pid_of munged)
  if [[ -n "$pid" ]]; then say "munged already running (pid $pid)"; return 0; fi
  id munge >/dev/null 2>&1 || die "there is no 'munge' user (is the munge package installed?)"
  mkdir -p "$mdir"
  make_key
  chown -R munge:munge "$mdir"
  chmod 0755 "$mdir"
  chmod 0600 "$mdir/munge.key"
  rm -f "$msock" "$msock.lock"
  say "starting munged"
  # munged forks and writes its pid file; as the munge user it cannot write
  # into run/, so it writes into its own directory and we copy the PID.
  runuser -u munge -- /usr/sbin/munged --socket="$msock" --key-file="$mdir/munge.key" \
    --pid-file="$mdir/munged.pid" --log-file="$mdir/munged.log" --seed-file="$mdir/munged.seed" \
    >>"$dir/log/munged.out" 2>&1 ||
    { tail -n 5 "$mdir/munged.log" "$dir/log/munged.out" >&2 2>/dev/null; die "munged did not start (log: $mdir/munged.log)"; }
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s "$mdir/munged.pid" && -S "$msock" ]] && break
    sleep 0.1
  done
  cp "$mdir/munged.pid" "$dir/run/munged.pid" 2>/dev/null || true
  [[ -n "$(pid_of munged)" ]] || die "munged did not start (log: $mdir/munged.log)"
}

start_daemon() {
  local name="$1" pid; shift
  pid=$(pid_of "$name")
  if [[ -n "$pid" ]]; then say "$name already running (pid $pid)"; return 0; fi
  say "starting $name"
  "/usr/sbin/$name" -f "$conf" "$@" >>"$dir/log/$name.out" 2>&1 ||
    { tail -n 10 "$dir/log/$name.log" "$dir/log/$name.out" >&2 2>/dev/null; die "$name did not start (log: $dir/log/$name.log)"; }
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -n "$(pid_of "$name")" ]] && return 0
    sleep 0.1
  done
  tail -n 10 "$dir/log/$name.log" "$dir/log/$name.out" >&2 2>/dev/null || true
  die "$name did not start (log: $dir/log/$name.log)"
}

wait_idle() {
  local limit="${TROUPE_SLURM_WAIT:-60}" state="" resumed=0 t0=$SECONDS
  while ((SECONDS - t0 < limit)); do
    state=$(node_state)
    case "$state" in
      idle|mixed|allocated|completing) say "node $node is $state; SLURM_CONF=$conf"; return 0 ;;
      drain*|down*|fail*)
        # ReturnToService=2 brings a registered node back; help it once if the
        # saved state says it was drained by an earlier run.
        if ((resumed == 0 && SECONDS - t0 > 5)); then
          scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
          resumed=1
        fi ;;
    esac
    sleep 0.5
  done
  echo "--- sinfo / scontrol:" >&2
  timeout 10 scontrol show node "$node" >&2 2>&1 || true
  echo "--- slurmctld.log:" >&2; tail -n 15 "$dir/log/slurmctld.log" >&2 2>/dev/null || true
  echo "--- slurmd.log:" >&2; tail -n 15 "$dir/log/slurmd.log" >&2 2>/dev/null || true
  die "node $node did not become idle within ${limit}s (state: '${state:-no answer}')"
}

do_start() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (slurmd starts jobs as their users); try: sudo $0 start"
  mkdir -p "$dir"
  ensure_packages
  mkdir -p "$dir/run" "$dir/log" "$dir/state" "$dir/spool" "$mdir"
  chmod 0755 "$dir"
  # The config changes only while nothing runs with the old one.
  if [[ -z "$(pid_of slurmctld)$(pid_of slurmd)" ]]; then write_config; fi
  start_munged
  start_daemon slurmctld
  start_daemon slurmd -N "$node"
  wait_idle
}

do_stop() {
  local ids
  if [[ -n "$(pid_of slurmctld)" ]]; then
    # Cancel the jobs of this cluster so that no job step outlives it.
    ids=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
    if [[ -n "$ids" ]]; then
      say "cancelling jobs: ${ids//$'\n'/ }"
      # shellcheck disable=SC2086
      timeout 10 scancel $ids 2>/dev/null || true
      local i
      for ((i = 0; i < 50; i++)); do
        [[ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ]] && break
        sleep 0.2
      done
    fi
  fi
  # The Slurm daemons first (together: each takes a few seconds), then munge,
  # which they need until they exit.
  stop_pids slurmd slurmctld
  stop_pids munged
  say "stopped (state kept in $dir)"
}

do_status() {
  local rc=0 name pid state
  for name in munged slurmctld slurmd; do
    pid=$(pid_of "$name")
    if [[ -n "$pid" ]]; then echo "$name: running (pid $pid)"; else echo "$name: stopped"; rc=1; fi
  done
  if ((rc == 0)); then
    state=$(node_state)
    echo "node $node: ${state:-no answer}"
    case "$state" in idle|mixed|allocated|completing) ;; *) rc=1 ;; esac
  fi
  echo "SLURM_CONF=$conf"
  return $rc
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop; do_start ;;
  status) do_status ;;
  env) echo "export SLURM_CONF=$conf" ;;
esac
