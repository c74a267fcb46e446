# Launch tests against a real single-node Slurm (slurm/local-cluster.sh).
#
# troupe_slurm_cluster_fixture()
#   Registers slurm.cluster_start (FIXTURES_SETUP) and slurm.cluster_stop
#   (FIXTURES_CLEANUP). A cluster that is already running is reused and left
#   running; one the fixture started is stopped again.
#
# troupe_slurm_test(name [LOCAL] [TIMEOUT s] [ENVIRONMENT VAR=value...] COMMAND cmd...)
#   Registers slurm.<name>: label slurm, RUN_SERIAL (it submits jobs to the one
#   test node), a timeout (default 120 s). Unless LOCAL, it requires the cluster
#   fixture. The command sees SLURM_CONF (the test cluster), TROUPE_RUN (the
#   launcher), TROUPE_MPIRUN (the project's mpiexec) and the loopback MPI
#   settings of TroupeTesting.cmake.
#
# TROUPE_SLURM_MPI_PLUGIN is the srun --mpi plugin that matches the MPI the
# project builds with (pmix for Open MPI, pmi2 for MPICH), TROUPE_SLURM_MPI_FLAVOUR
# "openmpi" or "mpich".

# Off by default in sanitizer builds (the launch tests run no sanitized code)
# and for a user other than root (the private Slurm's daemons need root).
execute_process(COMMAND id -u OUTPUT_VARIABLE _troupe_uid OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(TROUPE_SANITIZE OR NOT _troupe_uid STREQUAL "0")
  set(_troupe_slurm_default OFF)
else()
  set(_troupe_slurm_default ON)
endif()
option(TROUPE_SLURM_TESTS "Register the slurm.* tests (they start a private Slurm; need root)"
       ${_troupe_slurm_default})
set(TROUPE_SLURM_DIR "/tmp/troupe-slurm" CACHE PATH
    "Directory (config, state, logs) of the single-node Slurm cluster of the slurm.* tests")
set(TROUPE_SLURM_TOOLS "${PROJECT_SOURCE_DIR}/slurm")

if(NOT DEFINED TROUPE_SLURM_MPI_FLAVOUR)
  if(MPI_C_LIBRARY_VERSION_STRING MATCHES "MPICH" OR TROUPE_MPIEXEC MATCHES "mpich")
    set(TROUPE_SLURM_MPI_FLAVOUR mpich)
    set(TROUPE_SLURM_MPI_PLUGIN pmi2)
  else()
    set(TROUPE_SLURM_MPI_FLAVOUR openmpi)
    set(TROUPE_SLURM_MPI_PLUGIN pmix)
  endif()
endif()

function(_troupe_slurm_env out)
  set(env
    "TROUPE_SLURM_DIR=${TROUPE_SLURM_DIR}"
    "SLURM_CONF=${TROUPE_SLURM_DIR}/slurm.conf"
    "TROUPE_RUN=${TROUPE_SLURM_TOOLS}/troupe-run")
  if(TROUPE_MPIEXEC)
    list(APPEND env "TROUPE_MPIRUN=${TROUPE_MPIEXEC}")
  endif()
  if(DEFINED TROUPE_MPI_ENV)
    list(APPEND env ${TROUPE_MPI_ENV})
  endif()
  set(${out} "${env}" PARENT_SCOPE)
endfunction()

function(troupe_slurm_cluster_fixture)
  set(fixture "${PROJECT_SOURCE_DIR}/tests/slurm/cluster_fixture.sh")
  set(marker "${CMAKE_CURRENT_BINARY_DIR}/cluster-fixture.state")
  _troupe_slurm_env(env)
  list(APPEND env "TROUPE_LOCAL_CLUSTER=${TROUPE_SLURM_TOOLS}/local-cluster.sh")
  add_test(NAME slurm.cluster_start COMMAND bash "${fixture}" setup "${marker}")
  set_tests_properties(slurm.cluster_start PROPERTIES
    LABELS slurm TIMEOUT 240 RUN_SERIAL TRUE FIXTURES_SETUP troupe_slurm_cluster
    ENVIRONMENT "${env}")
  add_test(NAME slurm.cluster_stop COMMAND bash "${fixture}" cleanup "${marker}")
  set_tests_properties(slurm.cluster_stop PROPERTIES
    LABELS slurm TIMEOUT 60 RUN_SERIAL TRUE FIXTURES_CLEANUP troupe_slurm_cluster
    ENVIRONMENT "${env}")
endfunction()

function(troupe_slurm_test name)
  cmake_parse_arguments(T "LOCAL" "TIMEOUT" "COMMAND;ENVIRONMENT" ${ARGN})
  if(NOT T_COMMAND)
    message(FATAL_ERROR "troupe_slurm_test(${name}): COMMAND is required")
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  _troupe_slurm_env(env)
  list(APPEND env ${T_ENVIRONMENT})
  add_test(NAME slurm.${name} COMMAND ${T_COMMAND})
  set_tests_properties(slurm.${name} PROPERTIES
    LABELS slurm TIMEOUT ${T_TIMEOUT} RUN_SERIAL TRUE ENVIRONMENT "${env}")
  if(NOT T_LOCAL)
    set_tests_properties(slurm.${name} PROPERTIES FIXTURES_REQUIRED troupe_slurm_cluster)
  endif()
endfunction()
