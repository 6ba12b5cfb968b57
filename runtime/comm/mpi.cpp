// The MPI rendezvous: one broadcast over MPI_COMM_WORLD. Compiled with KILN_HAVE_MPI when CMake
// found MPI (KILN_WITH_MPI); otherwise the functions say that this build has none.
#include <cstdint>
#include <cstdlib>
#include <mutex>

#include "runtime/comm/launch_internal.hpp"

#ifndef KILN_HAVE_MPI
#define KILN_HAVE_MPI 0
#endif
#if KILN_HAVE_MPI
// The C API only: the deprecated C++ bindings do not compile warning-free.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace kiln {

bool built_with_mpi() {
  return KILN_HAVE_MPI != 0;
}

namespace impl {

bool use_mpi(const LaunchInfo& launch) {
  switch (launch.rendezvous) {
    case RendezvousMethod::tcp:
      return false;
    case RendezvousMethod::mpi:
      KILN_CHECK(built_with_mpi(), Status::not_supported,
                 "launch: KILN_RENDEZVOUS=mpi, but this kiln was built without MPI");
      return true;
    case RendezvousMethod::automatic:
      break;
  }
  return built_with_mpi() && launch.launcher == Launcher::mpirun;
}

#if KILN_HAVE_MPI

namespace {

std::mutex g_mpi_mutex;

// Open MPI counts a process that initialised MPI and exits without finalising as a failed one.
void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  KILN_CHECK(false, Status::io_error, "MPI rendezvous: ", what, " failed: ", text);
}

}  // namespace

void mpi_broadcast(std::string& payload) {
  std::lock_guard<std::mutex> lock(g_mpi_mutex);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  KILN_CHECK(!finalized, Status::not_supported,
             "MPI rendezvous: MPI was already finalised in this process");
  if (!initialized) {
    // Only kiln's rendezvous calls MPI, from any thread but one call at a time.
    int provided = 0;
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided),
              "MPI_Init_thread");
    std::atexit(finalize_at_exit);
  }
  uint64_t bytes = payload.size();
  check_mpi(MPI_Bcast(&bytes, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD), "MPI_Bcast");
  payload.resize(static_cast<std::size_t>(bytes));
  check_mpi(MPI_Bcast(payload.data(), static_cast<int>(bytes), MPI_BYTE, 0, MPI_COMM_WORLD),
            "MPI_Bcast");
}

#else

void mpi_broadcast(std::string&) {
  KILN_CHECK(false, Status::not_supported,
             "MPI rendezvous: this kiln was built without MPI (configure with KILN_WITH_MPI=ON "
             "where MPI is installed)");
}

#endif

}  // namespace impl
}  // namespace kiln
