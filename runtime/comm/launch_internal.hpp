// Internal: the pieces of the rendezvous that the communicators share (runtime/comm/launch.cpp,
// mpi.cpp).
#pragma once

#include <string>

#include "kiln/launch.hpp"
#include "runtime/comm/socket.hpp"

namespace kiln::impl {

// Whether the MPI rendezvous applies: kiln built with MPI and the process started by mpirun.
bool use_mpi(const LaunchInfo& launch);
// MPI_Bcast of `payload` from rank 0 of MPI_COMM_WORLD (initialising MPI if nobody has; then it
// is finalised at exit). Throws not_supported in a build without MPI.
void mpi_broadcast(std::string& payload);

// The star of connections of a TCP communicator or rendezvous (see kiln/launch.hpp for how the
// endpoint is found). World size 1: a star without peers.
TcpStar make_star(const LaunchInfo& launch, uint32_t purpose, const CommOptions& options);

std::unique_ptr<Communicator> make_tcp_communicator_from(TcpStar star, const CommOptions& options);

}  // namespace kiln::impl
