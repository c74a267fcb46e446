# Every dependency is a Debian package (see README).
find_package(Threads REQUIRED)
find_package(TBB REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(HWLOC REQUIRED IMPORTED_TARGET GLOBAL hwloc)
find_package(cereal REQUIRED)
find_package(MPI REQUIRED COMPONENTS C)
# Optional: the launcher's process table for faster failure detection.
pkg_check_modules(PMIX QUIET IMPORTED_TARGET GLOBAL pmix)
