#!/usr/bin/env bash
# ctest fixture around slurm/local-cluster.sh.
#
#   cluster_fixture.sh setup   MARKER   # start the cluster (or reuse a running one)
#   cluster_fixture.sh cleanup MARKER   # stop it, unless setup found it running
#
# MARKER is a file in the build tree that remembers whether setup started the
# cluster, so that a cluster someone started by hand is left running.
# TROUPE_SLURM_DIR selects the cluster's directory (default /tmp/troupe-slurm).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cluster="${TROUPE_LOCAL_CLUSTER:-$here/../../slurm/local-cluster.sh}"
action="${1:?setup or cleanup}"
marker="${2:?marker file}"

case "$action" in
  setup)
    if bash "$cluster" status >/dev/null 2>&1; then
      echo "cluster_fixture: a test cluster is already running; reusing it and leaving it running"
      echo reused >"$marker"
      bash "$cluster" status
      exit 0
    fi
    echo started >"$marker"
    if ! bash "$cluster" start; then
      echo "cluster_fixture: FAIL: could not start the single-node Slurm cluster (see the messages above)." >&2
      echo "cluster_fixture: the slurm.* tests need root and the Debian packages slurmctld slurmd slurm-client munge" >&2
      echo "cluster_fixture: (scripts/setup.sh installs them with TROUPE_WITH_SLURM=1)." >&2
      exit 1
    fi ;;
  cleanup)
    how=$(cat "$marker" 2>/dev/null || echo started)
    rm -f "$marker"
    if [[ "$how" == reused ]]; then
      echo "cluster_fixture: leaving the cluster running (it was running before the tests)"
    else
      bash "$cluster" stop
    fi ;;
  *) echo "usage: $0 setup|cleanup MARKER" >&2; exit 2 ;;
esac
