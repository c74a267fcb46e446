# One helper per kind of test. Test names say their kind (unit.*, mpi.*,
# fault.*, slurm.*); each has a label of that kind and a timeout.
find_package(GTest REQUIRED)

set(TROUPE_MPIEXEC "${MPIEXEC_EXECUTABLE}" CACHE FILEPATH "Launcher for multi-rank tests")
# Loopback only, root allowed, oversubscription allowed (ranks > cores is normal here).
set(TROUPE_MPI_ENV
  OMPI_MCA_btl_tcp_if_include=lo
  OMPI_MCA_oob_tcp_if_include=lo
  OMPI_ALLOW_RUN_AS_ROOT=1
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  OMPI_MCA_rmaps_base_oversubscribe=1
  OMPI_MCA_btl_vader_single_copy_mechanism=none
  # Blocks to ranks on this host are staged in every test (with no single copy,
  # as here, troupe would leave them unstaged by itself).
  TROUPE_STAGE_BLOCKS=1
  # Nor are blocks gathered onto huge pages (mpi.remote_gather turns it on).
  TROUPE_GATHER_BLOCKS=0
  HYDRA_IFACE=lo
  # Sanitizer builds: MPI's own allocations live until exit; keep its plugins
  # loaded and unwind fully so tests/lsan.supp recognises them.
  OMPI_MCA_mca_base_component_disable_dlclose=1
  ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0
  LSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/lsan.supp:fast_unwind_on_malloc=0)

if(TROUPE_SANITIZE OR MPIEXEC_EXECUTABLE MATCHES "mpich")
  # Sanitized ranks run many times slower (ASan with full unwinding on every
  # allocation), and MPICH's ranks poll hard: with 4 of them on 2 cores one was
  # once starved past 600 ms under load (Remote.OrderHoldsAcross..., CI).
  # A production heartbeat timeout would declare them lost. The launcher's
  # process table still detects real deaths in milliseconds.
  list(APPEND TROUPE_MPI_ENV TROUPE_HEARTBEAT_TIMEOUT_MS=5000)
endif()

function(_troupe_test_exe target)
  cmake_parse_arguments(T "MPI_MAIN" "" "SOURCES;LIBS" ${ARGN})
  if(T_MPI_MAIN)
    # One MPI_Init for all tests of the binary; tests adopt MPI_COMM_WORLD.
    add_executable(${target} ${T_SOURCES} ${PROJECT_SOURCE_DIR}/tests/mpi/mpi_main.cpp)
    target_link_libraries(${target} PRIVATE ${T_LIBS} GTest::gtest troupe_flags)
  else()
    add_executable(${target} ${T_SOURCES})
    target_link_libraries(${target} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main troupe_flags)
  endif()
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/runtime ${PROJECT_SOURCE_DIR}/tests)
endfunction()

# troupe_unit_test(name SOURCES ... LIBS ... [TIMEOUT s])
function(troupe_unit_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  _troupe_test_exe(unit_${name} SOURCES ${T_SOURCES} LIBS ${T_LIBS})
  set_property(GLOBAL APPEND PROPERTY TROUPE_UNIT_TARGETS unit_${name})
  add_test(NAME unit.${name} COMMAND unit_${name})
  set_tests_properties(unit.${name} PROPERTIES LABELS unit TIMEOUT ${T_TIMEOUT})
endfunction()

# troupe_mpi_test(name NP n SOURCES ... LIBS ... [LABEL mpi|fault] [TIMEOUT s] [ARGS ...] [MPIEXEC_FLAGS ...]
#                 [TARGET existing-target] [PASS_REGEX re] [PROCESSORS p] [MPMD "np args..." ...])
# Runs the test binary on NP ranks with mpiexec, loopback only, oversubscribed.
# MPMD: one launch of several groups of the same binary (mpiexec's colon form),
# each "np args..." (the group's rank count, then its own arguments after ARGS);
# NP is then their sum, computed here. PROCESSORS (default NP) counts ranks the
# test starts itself (MPI_Comm_spawn).
function(troupe_mpi_test name)
  cmake_parse_arguments(T "" "NP;TIMEOUT;LABEL;TARGET;PASS_REGEX;PROCESSORS" "SOURCES;LIBS;ARGS;MPIEXEC_FLAGS;MPMD" ${ARGN})
  if(NOT T_LABEL)
    set(T_LABEL mpi)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 180)
  endif()
  if(NOT T_TARGET)
    set(T_TARGET ${T_LABEL}_${name})
    _troupe_test_exe(${T_TARGET} MPI_MAIN SOURCES ${T_SOURCES} LIBS ${T_LIBS})
  endif()
  set_property(GLOBAL APPEND PROPERTY TROUPE_MPI_TARGETS ${T_TARGET})
  if(T_MPMD)
    set(launch)
    set(T_NP 0)
    foreach(group IN LISTS T_MPMD)
      separate_arguments(group UNIX_COMMAND "${group}")
      list(POP_FRONT group np)
      math(EXPR T_NP "${T_NP} + ${np}")
      if(launch)
        list(APPEND launch :)
      endif()
      list(APPEND launch ${MPIEXEC_NUMPROC_FLAG} ${np} ${TROUPE_MPIEXEC_FLAGS} ${T_MPIEXEC_FLAGS}
                  $<TARGET_FILE:${T_TARGET}> ${T_ARGS} ${group})
    endforeach()
  else()
    set(launch ${MPIEXEC_NUMPROC_FLAG} ${T_NP} ${TROUPE_MPIEXEC_FLAGS} ${T_MPIEXEC_FLAGS} $<TARGET_FILE:${T_TARGET}> ${T_ARGS})
  endif()
  if(NOT T_PROCESSORS)
    set(T_PROCESSORS ${T_NP})
  endif()
  add_test(NAME ${T_LABEL}.${name} COMMAND ${TROUPE_MPIEXEC} ${launch})
  set_tests_properties(${T_LABEL}.${name} PROPERTIES
    LABELS "${T_LABEL}" TIMEOUT ${T_TIMEOUT} ENVIRONMENT "${TROUPE_MPI_ENV}" PROCESSORS ${T_PROCESSORS})
  if(T_PASS_REGEX)
    set_tests_properties(${T_LABEL}.${name} PROPERTIES PASS_REGULAR_EXPRESSION "${T_PASS_REGEX}")
  endif()
endfunction()
