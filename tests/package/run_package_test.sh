#!/usr/bin/env bash
# The installed package as a user meets it: install this build into a scratch
# prefix, build the README's example (the first C++ block of README.md, taken
# from the README itself so it cannot drift) in a C++-only project with
# find_package(troupe), and run it on 2 ranks.
#   run_package_test.sh SOURCE_DIR BUILD_DIR MPIEXEC MPI_C_COMPILER
set -euo pipefail
src=$1 build=$2 mpiexec=$3 mpicc=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
mkdir -p "$work/consumer"
cp "$src/tests/package/consumer/CMakeLists.txt" "$work/consumer/"
awk '/^```cpp/{f=1;next} /^```/{if(f)exit} f' "$src/README.md" >"$work/consumer/main.cpp"
grep -q 'TROUPE_REMOTE' "$work/consumer/main.cpp" || { echo "package test: README.md has no C++ example"; exit 1; }
# The MPI troupe was built with (Open MPI or MPICH), not whichever is the default.
cmake -S "$work/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" -DMPI_C_COMPILER="$mpicc" >/dev/null
cmake --build "$work/build" >/dev/null
"$mpiexec" -n 2 "$work/build/readme_example"
echo "package test: the README example built against the installed package and ran"
