#!/usr/bin/env bash
# Installs troupe's build and test dependencies from Debian 12's archive.
# Idempotent: apt-get runs only when a package is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config ninja-build
  libopenmpi-dev openmpi-bin
  libtbb-dev libhwloc-dev hwloc libcereal-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcaf-dev
  clang libclang-rt-14-dev
  python3
)
if [[ "${TROUPE_WITH_MPICH:-1}" == 1 ]]; then packages+=(libmpich-dev mpich); fi
if [[ "${TROUPE_WITH_SLURM:-0}" == 1 ]]; then packages+=(slurmctld slurmd slurm-client munge); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian installs both MPIs side by side; the default (alternatives) stays Open MPI.
