// Starting a data-parallel job: which rank this process is (from the launcher's environment),
// which GPU it uses, and the communicator that joins it to the other ranks.
//
// Launchers (one process per GPU; see README "Multi-GPU"):
//   mpirun (Open MPI)      OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK / _LOCAL_SIZE
//   srun (Slurm)           SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, SLURM_STEP_NODELIST
//   torchrun --no-python   RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE, MASTER_ADDR,
//                          MASTER_PORT
// MASTER_ADDR / MASTER_PORT in the environment override the rendezvous endpoint of every launcher.
//
// Rendezvous (how rank 0's NCCL unique id, or its TCP address, reaches the other ranks; no shared
// file system is needed):
//   1. NCCL_COMM_ID=host:port set (NCCL communicator only): NCCL's own bootstrap; every rank
//      derives the same id from it and rank 0 listens there.
//   2. launched by mpirun, and kiln's MPI plugin loads (libkiln_mpi.so, built where CMake found
//      MPI, KILN_WITH_MPI; libkiln itself never links MPI): MPI_Bcast over MPI_COMM_WORLD. kiln
//      initialises MPI if the program has not, and finalises it at exit.
//      KILN_RENDEZVOUS=tcp skips MPI (rule 3 then), KILN_RENDEZVOUS=mpi insists on it.
//   3. otherwise TCP: rank 0 listens on the rendezvous endpoint, every other rank connects
//   (retrying
//      until the deadline) and receives the payload. The endpoint is MASTER_ADDR and the port
//      KILN_RENDEZVOUS_PORT if set, else MASTER_PORT (+1 under torchrun, whose agent already
//      serves its store on MASTER_PORT). Under srun without MASTER_ADDR the address is the first
//      host of SLURM_STEP_NODELIST (where SLURM_PROCID 0 runs) and the port, without
//      MASTER_PORT, 29500 + SLURM_JOB_ID % 1000 (stable within a job, different between jobs
//      sharing a node).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "kiln/backend.hpp"
#include "kiln/communicator.hpp"
#include "kiln/export.h"

namespace kiln {

enum class Launcher { none, mpirun, srun, torchrun };
KILN_API const char* launcher_name(Launcher launcher);

// How rank 0's payload reaches the others (KILN_RENDEZVOUS=auto|mpi|tcp).
enum class RendezvousMethod {
  automatic,  // MPI under mpirun in a build with MPI, else TCP
  mpi,        // MPI (an error where the build has none)
  tcp,        // TCP at the endpoint below
};

struct KILN_API LaunchInfo {
  Launcher launcher = Launcher::none;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // rank among the processes of this node: picks the GPU
  int local_world_size = 1;  // processes on this node (0 when the launcher does not say)
  // The TCP rendezvous endpoint (see above); empty / 0 when the environment gives none.
  std::string master_addr;
  int master_port = 0;
  RendezvousMethod rendezvous = RendezvousMethod::automatic;

  // One line for people, e.g. "torchrun: rank 3 of 8 (local 3 of 4), rendezvous node1:29501".
  std::string describe() const;
};

// Reads the environment through `getenv` (returns nullopt for an unset variable). A single
// process with no launcher variables is rank 0 of 1. Throws kiln::Error(invalid_argument) for
// values that are not integers or are inconsistent (rank outside [0, world size), a local rank
// outside the local size, a port outside 1..65535), naming the variable.
KILN_API LaunchInfo parse_launch_environment(
    const std::function<std::optional<std::string>(const std::string&)>& getenv);
// The same from this process's environment.
KILN_API LaunchInfo detect_launch();

// The first host name of a Slurm host list: "node[07-09,12],gpu3" -> "node07",
// "rack[1-2]-n[3-4]" -> "rack1-n3". Throws invalid_argument for a malformed list.
KILN_API std::string slurm_first_host(const std::string& nodelist);

// The CUDA device of this process: its local rank among `device_count` visible devices, or
// device 0 when the launcher made a single device visible to each process (e.g. srun
// --gpus-per-task=1). Throws invalid_argument when the local rank has no device of its own.
KILN_API int select_device(const LaunchInfo& launch, int device_count);

// Sends `payload` (meaningful on rank 0) to every rank and returns it, by MPI or TCP (rules 2 and
// 3 above). Throws Status::timeout naming the ranks that did not join (rank 0) or the endpoint
// that could not be reached (others) within options.rendezvous_timeout, io_error for socket
// failures, invalid_argument when no rendezvous is possible (no endpoint and no MPI).
KILN_API std::string rendezvous_broadcast(const LaunchInfo& launch, const std::string& payload,
                                          const CommOptions& options = {});

// Whether the MPI rendezvous is available: kiln's MPI plugin (libkiln_mpi.so, beside libkiln,
// or KILN_MPI_PLUGIN) and the MPI library it needs load in this process.
KILN_API bool built_with_mpi();

// NCCL, one process per GPU: `device` is this process's CUDA device (select_device). The unique
// id travels by NCCL_COMM_ID, MPI or TCP; the communicator is created non-blocking and its
// creation bounded by options.rendezvous_timeout. Collectives run on the communicator's own
// stream, ordered with the caller's stream by events, each watched by the watchdog thread.
KILN_API std::unique_ptr<Communicator> make_nccl_communicator(const LaunchInfo& launch, int device,
                                                              const CommOptions& options = {});

// TCP, one process per rank, host memory (the cpu backend across processes): a star of
// connections to rank 0, which reduces in rank order. Rank 0 listens on the rendezvous endpoint;
// under mpirun with MPI and no endpoint in the environment, on a free port whose address (this
// host's name) it broadcasts by MPI.
KILN_API std::unique_ptr<Communicator> make_tcp_communicator(const LaunchInfo& launch,
                                                             const CommOptions& options = {});

// The communicator for a process of `launch` training on `backend`: SingleRankCommunicator at world
// size 1, NCCL on the cuda backend (on the backend's device), TCP on the cpu backend.
KILN_API std::unique_ptr<Communicator> make_communicator(const LaunchInfo& launch, Backend& backend,
                                                         const CommOptions& options = {});

}  // namespace kiln
