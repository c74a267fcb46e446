#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds and installs troupe, builds the
# example pipeline against the installed package (as a user would), and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
TROUPE_WITH_MPICH=0 bash scripts/setup.sh

prefix="$PWD/build/install"
cmake -S . -B build/main -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTROUPE_BUILD_TESTS=OFF \
      -DTROUPE_BUILD_BENCH=OFF -DTROUPE_BUILD_APPS=OFF -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build build/main -j "${TROUPE_JOBS:-2}"
cmake --install build/main >/dev/null
cmake -S apps -B build/apps -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build build/apps -j "${TROUPE_JOBS:-2}"

# 4 ranks on this machine (oversubscribed is fine), through troupe's launcher.
./slurm/troupe-run -n 4 ./build/apps/heat2d --n 1024 --tiles 8 --steps 1000 --report 100 "$@"
