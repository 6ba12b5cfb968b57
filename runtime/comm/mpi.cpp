// The MPI rendezvous, through a plugin: libkiln itself never links MPI (a trainer built on kiln
// must not need an MPI library where it runs without one). When CMake found MPI it also builds
// libkiln_mpi.so (runtime/comm/mpi_plugin/), which kiln loads the first time a rendezvous under
// mpirun asks for it: from KILN_MPI_PLUGIN if set, else beside the library or program containing
// kiln, else from the build tree, else through the loader's search path.
#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/comm/launch_internal.hpp"

#ifndef KILN_MPI_PLUGIN_BUILD_PATH
#define KILN_MPI_PLUGIN_BUILD_PATH ""
#endif

namespace kiln {
namespace impl {
namespace {

constexpr int kPluginVersion = 1;
using VersionFn = int (*)();
using BcastFn = int (*)(void* data, uint64_t bytes, char* error, uint64_t error_bytes);

struct Plugin {
  bool tried = false;
  BcastFn bcast = nullptr;
  std::string why;  // why there is none
};

std::mutex g_plugin_mutex;
Plugin g_plugin;

void load(Plugin& p) {
  p.tried = true;
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("KILN_MPI_PLUGIN"); env && *env) {
    candidates.push_back(env);
  } else {
    Dl_info info{};
    if (dladdr(reinterpret_cast<const void*>(&load), &info) && info.dli_fname) {
      candidates.push_back(
          (std::filesystem::path(info.dli_fname).parent_path() / "libkiln_mpi.so").string());
    }
    if (*KILN_MPI_PLUGIN_BUILD_PATH) candidates.push_back(KILN_MPI_PLUGIN_BUILD_PATH);
    candidates.push_back("libkiln_mpi.so");
  }
  std::string errors;
  for (const std::string& c : candidates) {
    void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      errors += (errors.empty() ? "" : "; ") + std::string(e ? e : c);
      continue;
    }
    auto version = reinterpret_cast<VersionFn>(dlsym(h, "kiln_mpi_plugin_version"));
    auto bcast = reinterpret_cast<BcastFn>(dlsym(h, "kiln_mpi_broadcast"));
    if (!version || !bcast || version() != kPluginVersion) {
      errors += (errors.empty() ? "" : "; ") + c + " is not a kiln MPI plugin of version " +
                std::to_string(kPluginVersion);
      dlclose(h);
      continue;
    }
    // Kept loaded for the life of the process: MPI is finalised at exit.
    p.bcast = bcast;
    return;
  }
  p.why = "the MPI plugin libkiln_mpi.so cannot be loaded (" + errors + ")";
}

Plugin& plugin() {
  std::lock_guard<std::mutex> lock(g_plugin_mutex);
  if (!g_plugin.tried) load(g_plugin);
  return g_plugin;
}

}  // namespace

bool use_mpi(const LaunchInfo& launch) {
  switch (launch.rendezvous) {
    case RendezvousMethod::tcp:
      return false;
    case RendezvousMethod::mpi:
      KILN_CHECK(built_with_mpi(), Status::not_supported, "launch: KILN_RENDEZVOUS=mpi, but ",
                 plugin().why);
      return true;
    case RendezvousMethod::automatic:
      break;
  }
  return launch.launcher == Launcher::mpirun && built_with_mpi();
}

void mpi_broadcast(std::string& payload) {
  Plugin& p = plugin();
  KILN_CHECK(p.bcast != nullptr, Status::not_supported, "MPI rendezvous: ", p.why);
  char error[512] = {};
  uint64_t bytes = payload.size();
  int rc = p.bcast(&bytes, sizeof bytes, error, sizeof error);
  if (rc == 0) {
    payload.resize(static_cast<std::size_t>(bytes));
    rc = p.bcast(payload.data(), bytes, error, sizeof error);
  }
  KILN_CHECK(rc == 0, Status::io_error, "MPI rendezvous: ", error);
}

}  // namespace impl

bool built_with_mpi() {
  return impl::plugin().bcast != nullptr;
}

}  // namespace kiln
