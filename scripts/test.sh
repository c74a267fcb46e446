#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs every test of troupe:
#   1. default build (Open MPI): unit, multi-rank, fault and Slurm tests
#   2. ThreadSanitizer build: the unit tests, and the engine and remote-actor
#      multi-rank tests (Open MPI itself is not instrumented: tests/tsan.supp).
#      Not the decoder fuzzer: it decodes on one thread (ASan/UBSan's job), and
#      under TSan its memory grew by about 1-3 MB per input (24 GB, killed, at
#      20,000; 9.5 MB in the default build), in TSan's stack depot
#   3. ASan+UBSan build: unit tests and the wire decoder fuzzer (short run)
#   4. MPICH build (unoptimized): the multi-rank tests (the heat2d pipeline among them) and
#      the launcher tests against MPICH
#   5. libFuzzer build (clang, ASan+UBSan): the wire decoder's fuzz target, run
#      for TROUPE_FUZZ_SECONDS (60 by default)
# TROUPE_PHASES selects phases (default: "default tsan asan mpich fuzz").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
TROUPE_WITH_SLURM=1 bash scripts/setup.sh

phases=${TROUPE_PHASES:-"default tsan asan mpich fuzz"}
jobs=${TROUPE_JOBS:-2}
start=$SECONDS
stamp() { printf '\n=== %s (%ds elapsed)\n' "$1" $((SECONDS - start)); }

for phase in $phases; do
  stamp "phase $phase: configure and build"
  configure=()
  [[ $phase == fuzz ]] && configure=(-DTROUPE_FUZZ_SECONDS="${TROUPE_FUZZ_SECONDS:-60}")
  cmake --preset "$phase" "${configure[@]}" >/dev/null
  target=()
  # tsan runs the unit tests and two multi-rank ones (the engine's threads);
  # mpich the multi-rank and launcher tests (the rest does not depend on the MPI library)
  [[ $phase == tsan ]] && target=(--target troupe_unit_tests mpi_engine mpi_remote)
  [[ $phase == mpich ]] && target=(--target troupe_mpi_tests)
  [[ $phase == fuzz ]] && target=(--target fuzz_decoder)
  cmake --build --preset "$phase" -j "$jobs" "${target[@]}"
  stamp "phase $phase: test"
  ctest --preset "$phase" -j "$jobs" --timeout 300
done
stamp "all tests passed"
