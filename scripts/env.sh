# Sourced by the scripts: how mpirun runs on this kind of machine.
# Loopback only (the machine has another interface that must not be used),
# root allowed, oversubscription allowed (4 ranks on 2 cores is normal).
export OMPI_MCA_btl_tcp_if_include=lo
export OMPI_MCA_oob_tcp_if_include=lo
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export HYDRA_IFACE=lo
export OMPI_MCA_async_mpi_finalize=1  # no fence with dead ranks inside MPI_Finalize
