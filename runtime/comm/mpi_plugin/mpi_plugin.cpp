// libkiln_mpi.so: the one MPI call kiln makes (a broadcast from rank 0 of MPI_COMM_WORLD, for the
// rendezvous under mpirun), in a plugin that libkiln loads only when it needs it
// (runtime/comm/mpi.cpp), so that libkiln never depends on an MPI library.
// C ABI, versioned: kiln_mpi_plugin_version() must return what mpi.cpp expects.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>

// The C API only: the deprecated C++ bindings do not compile warning-free.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#define KILN_MPI_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

std::mutex g_mutex;

// Open MPI counts a process that initialised MPI and exits without finalising as a failed one.
void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

bool failed(int rc, const char* what, char* error, uint64_t error_bytes) {
  if (rc == MPI_SUCCESS) return false;
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  std::snprintf(error, error_bytes, "%s failed: %s", what, text);
  return true;
}

}  // namespace

KILN_MPI_EXPORT int kiln_mpi_plugin_version() {
  return 1;
}

// data (bytes) := rank 0's data (bytes) on every rank of MPI_COMM_WORLD; initialises MPI when the
// program has not (then finalises it at exit). 0 on success, else non-zero with `error` set.
KILN_MPI_EXPORT int kiln_mpi_broadcast(void* data, uint64_t bytes, char* error,
                                       uint64_t error_bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) {
    std::snprintf(error, error_bytes, "MPI was already finalised in this process");
    return 1;
  }
  if (!initialized) {
    // Only kiln's rendezvous calls MPI, from any thread but one call at a time.
    int provided = 0;
    if (failed(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided),
               "MPI_Init_thread", error, error_bytes)) {
      return 1;
    }
    std::atexit(finalize_at_exit);
  }
  if (bytes > static_cast<uint64_t>(INT32_MAX)) {
    std::snprintf(error, error_bytes, "a broadcast of %llu bytes is too large",
                  static_cast<unsigned long long>(bytes));
    return 1;
  }
  return failed(MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast",
                error, error_bytes)
             ? 1
             : 0;
}
