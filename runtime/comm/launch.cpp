// Launcher environments, device choice, the rendezvous and the communicator factory.
#include <cuda_runtime_api.h>
#include <charconv>
#include <cstdlib>

#include "kiln/launch.hpp"
#include "runtime/comm/launch_internal.hpp"

namespace kiln {

const char* launcher_name(Launcher launcher) {
  switch (launcher) {
    case Launcher::none:
      return "none";
    case Launcher::mpirun:
      return "mpirun";
    case Launcher::srun:
      return "srun";
    case Launcher::torchrun:
      return "torchrun";
  }
  return "?";
}

std::string LaunchInfo::describe() const {
  std::string s = launcher == Launcher::none ? std::string("no launcher")
                                             : std::string(launcher_name(launcher));
  s += ": rank " + std::to_string(rank) + " of " + std::to_string(world_size) + " (local " +
       std::to_string(local_rank);
  if (local_world_size > 0) s += " of " + std::to_string(local_world_size);
  s += ")";
  if (!master_addr.empty() && master_port > 0) {
    s += ", rendezvous " + master_addr + ":" + std::to_string(master_port);
  }
  return s;
}

namespace {

using Getenv = std::function<std::optional<std::string>(const std::string&)>;

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// The integer in variable `name`, or nullopt when it is unset; invalid_argument when it is set but
// not an integer.
std::optional<int64_t> env_int(const Getenv& getenv, const std::string& name) {
  const std::optional<std::string> raw = getenv(name);
  if (!raw) return std::nullopt;
  const std::string v = trim(*raw);
  int64_t x = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  KILN_CHECK_ARG(!v.empty() && ec == std::errc() && end == v.data() + v.size(), "launch: ", name,
                 "='", *raw, "' is not an integer");
  return x;
}

int need_int(const Getenv& getenv, const std::string& name, const char* launcher) {
  const std::optional<int64_t> x = env_int(getenv, name);
  KILN_CHECK_ARG(x.has_value(), "launch: ", launcher, " is detected but ", name, " is not set");
  KILN_CHECK_ARG(*x >= 0 && *x < (int64_t{1} << 31), "launch: ", name, "=", *x, " is out of range");
  return static_cast<int>(*x);
}

int opt_int(const Getenv& getenv, const std::string& name, int fallback) {
  const std::optional<int64_t> x = env_int(getenv, name);
  if (!x) return fallback;
  KILN_CHECK_ARG(*x >= 0 && *x < (int64_t{1} << 31), "launch: ", name, "=", *x, " is out of range");
  return static_cast<int>(*x);
}

bool has(const Getenv& getenv, const std::string& name) {
  return getenv(name).has_value();
}

}  // namespace

std::string slurm_first_host(const std::string& nodelist) {
  const std::string list = trim(nodelist);
  KILN_CHECK_ARG(!list.empty(), "slurm host list: empty");
  // The first entry is what precedes the first comma outside brackets; each bracket group
  // contributes its first value (a range's start keeps its zero padding).
  std::string host;
  std::size_t i = 0;
  while (i < list.size() && list[i] != ',') {
    if (list[i] == '[') {
      const std::size_t close = list.find(']', i);
      KILN_CHECK_ARG(close != std::string::npos, "slurm host list '", nodelist,
                     "': unbalanced '['");
      const std::string inside = list.substr(i + 1, close - i - 1);
      const std::string first = inside.substr(0, inside.find_first_of(",-"));
      KILN_CHECK_ARG(!first.empty() && first.find_first_not_of("0123456789") == std::string::npos,
                     "slurm host list '", nodelist, "': '[", inside, "]' is not a range list");
      host += first;
      i = close + 1;
    } else {
      KILN_CHECK_ARG(list[i] != ']', "slurm host list '", nodelist, "': unbalanced ']'");
      host += list[i++];
    }
  }
  KILN_CHECK_ARG(!host.empty(), "slurm host list '", nodelist, "': no host name");
  return host;
}

LaunchInfo parse_launch_environment(const Getenv& getenv) {
  LaunchInfo info;
  // Order matters: mpirun and torchrun may themselves run under a Slurm allocation (srun starting
  // the MPI daemons or the torchrun agents), whose SLURM_* variables then describe the launcher's
  // task, not this process.
  if (has(getenv, "OMPI_COMM_WORLD_SIZE")) {
    info.launcher = Launcher::mpirun;
    info.world_size = need_int(getenv, "OMPI_COMM_WORLD_SIZE", "mpirun");
    info.rank = need_int(getenv, "OMPI_COMM_WORLD_RANK", "mpirun");
    info.local_rank = opt_int(getenv, "OMPI_COMM_WORLD_LOCAL_RANK", 0);
    info.local_world_size = opt_int(getenv, "OMPI_COMM_WORLD_LOCAL_SIZE", 0);
  } else if (has(getenv, "RANK") && has(getenv, "WORLD_SIZE")) {
    info.launcher = Launcher::torchrun;
    info.world_size = need_int(getenv, "WORLD_SIZE", "torchrun");
    info.rank = need_int(getenv, "RANK", "torchrun");
    info.local_rank = opt_int(getenv, "LOCAL_RANK", 0);
    info.local_world_size = opt_int(getenv, "LOCAL_WORLD_SIZE", 0);
  } else if (has(getenv, "SLURM_PROCID") &&
             (has(getenv, "SLURM_STEP_ID") || has(getenv, "SLURM_STEP_NODELIST"))) {
    // A task of an srun step (a batch script itself also has SLURM_PROCID, but no step).
    info.launcher = Launcher::srun;
    info.rank = need_int(getenv, "SLURM_PROCID", "srun");
    info.world_size = has(getenv, "SLURM_STEP_NUM_TASKS")
                          ? need_int(getenv, "SLURM_STEP_NUM_TASKS", "srun")
                          : need_int(getenv, "SLURM_NTASKS", "srun");
    info.local_rank = opt_int(getenv, "SLURM_LOCALID", 0);
    info.local_world_size = 0;
  }
  KILN_CHECK_ARG(info.world_size >= 1, "launch: ", launcher_name(info.launcher),
                 " says the world size is ", info.world_size);
  KILN_CHECK_ARG(info.rank >= 0 && info.rank < info.world_size,
                 "launch: ", launcher_name(info.launcher), " says rank ", info.rank,
                 " of a world of ", info.world_size);
  KILN_CHECK_ARG(info.local_world_size == 0 || info.local_rank < info.local_world_size,
                 "launch: ", launcher_name(info.launcher), " says local rank ", info.local_rank,
                 " of ", info.local_world_size, " on this node");
  KILN_CHECK_ARG(info.local_rank <= info.rank || info.launcher == Launcher::none,
                 "launch: ", launcher_name(info.launcher), " says local rank ", info.local_rank,
                 " for global rank ", info.rank);

  // The rendezvous endpoint.
  if (const auto addr = getenv("MASTER_ADDR")) info.master_addr = trim(*addr);
  if (info.master_addr.empty() && info.launcher == Launcher::srun) {
    const auto nodes = getenv("SLURM_STEP_NODELIST") ? getenv("SLURM_STEP_NODELIST")
                                                     : getenv("SLURM_JOB_NODELIST");
    if (nodes) info.master_addr = slurm_first_host(*nodes);
  }
  int port = 0;
  if (has(getenv, "KILN_RENDEZVOUS_PORT")) {
    port = opt_int(getenv, "KILN_RENDEZVOUS_PORT", 0);
  } else if (has(getenv, "MASTER_PORT")) {
    port = opt_int(getenv, "MASTER_PORT", 0);
    // torchrun's agent serves its own store on MASTER_PORT.
    if (info.launcher == Launcher::torchrun) ++port;
  } else if (info.launcher == Launcher::srun && has(getenv, "SLURM_JOB_ID")) {
    port = 29500 + opt_int(getenv, "SLURM_JOB_ID", 0) % 1000;
  }
  KILN_CHECK_ARG(port >= 0 && port <= 65535, "launch: rendezvous port ", port,
                 " is outside 1..65535 (MASTER_PORT / KILN_RENDEZVOUS_PORT)");
  info.master_port = port;
  if (const auto method = getenv("KILN_RENDEZVOUS")) {
    const std::string m = trim(*method);
    if (m == "mpi") {
      info.rendezvous = RendezvousMethod::mpi;
    } else if (m == "tcp") {
      info.rendezvous = RendezvousMethod::tcp;
    } else {
      KILN_CHECK_ARG(m == "auto" || m.empty(), "launch: KILN_RENDEZVOUS='", *method,
                     "' (known: auto, mpi, tcp)");
    }
  }
  return info;
}

LaunchInfo detect_launch() {
  return parse_launch_environment([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  });
}

int select_device(const LaunchInfo& launch, int device_count) {
  KILN_CHECK(device_count > 0, Status::no_device, "no CUDA device is visible to rank ",
             launch.rank);
  if (device_count == 1) return 0;
  KILN_CHECK_ARG(launch.local_rank < device_count, "launch: local rank ", launch.local_rank,
                 " of rank ", launch.rank, " has no GPU of its own: ", device_count,
                 " are visible on this node (start at most one process per GPU)");
  return launch.local_rank;
}

namespace impl {
namespace {

bool has_endpoint(const LaunchInfo& launch) {
  return !launch.master_addr.empty() && launch.master_port > 0;
}

[[noreturn]] void no_rendezvous(const LaunchInfo& launch) {
  throw_error(Status::invalid_argument,
              cat("launch (", launch.describe(),
                  "): no rendezvous endpoint: set MASTER_ADDR and MASTER_PORT (the host of rank 0 "
                  "and a free port) in every rank's environment",
                  built_with_mpi() ? "" : ", or build kiln with MPI and start the job with mpirun"),
              nullptr, nullptr, 0);
}

std::string endpoint_name(const std::string& host, int port) {
  return host + ":" + std::to_string(port);
}

}  // namespace

TcpStar make_star(const LaunchInfo& launch, uint32_t purpose, const CommOptions& options) {
  const auto deadline = Clock::now() + options.rendezvous_timeout;
  if (has_endpoint(launch)) {
    if (launch.rank == 0) {
      return TcpStar::serve(listen_on(launch.master_port), launch.world_size, purpose, deadline,
                            endpoint_name(launch.master_addr, launch.master_port));
    }
    return TcpStar::join(launch.master_addr, launch.master_port, launch.rank, launch.world_size,
                         purpose, deadline);
  }
  if (!use_mpi(launch)) no_rendezvous(launch);
  // Rank 0 listens on a free port and tells the others where by MPI.
  Socket listener;
  std::string where;
  if (launch.rank == 0) {
    listener = listen_on(0);
    where = host_name() + " " + std::to_string(local_port(listener));
  }
  mpi_broadcast(where);
  const std::size_t space = where.rfind(' ');
  KILN_CHECK(space != std::string::npos, Status::internal_error, "MPI rendezvous: bad address '",
             where, "'");
  const std::string host = where.substr(0, space);
  const int port = std::atoi(where.c_str() + space + 1);
  if (launch.rank == 0) {
    return TcpStar::serve(std::move(listener), launch.world_size, purpose, deadline,
                          endpoint_name(host, port));
  }
  return TcpStar::join(host, port, launch.rank, launch.world_size, purpose, deadline);
}

}  // namespace impl

std::string rendezvous_broadcast(const LaunchInfo& launch, const std::string& payload,
                                 const CommOptions& options) {
  if (launch.world_size == 1) return payload;
  if (impl::use_mpi(launch)) {
    std::string p = launch.rank == 0 ? payload : std::string();
    impl::mpi_broadcast(p);
    return p;
  }
  if (!impl::has_endpoint(launch)) impl::no_rendezvous(launch);
  impl::TcpStar star = impl::make_star(launch, impl::kPurposeRendezvous, options);
  const auto deadline = impl::Clock::now() + options.rendezvous_timeout;
  const std::string what =
      "rendezvous at " + launch.master_addr + ":" + std::to_string(launch.master_port);
  if (launch.rank == 0) {
    const uint64_t bytes = payload.size();
    for (int q = 1; q < launch.world_size; ++q) {
      impl::send_all(star.peer(q), &bytes, sizeof bytes, deadline, "rank " + std::to_string(q),
                     what);
      impl::send_all(star.peer(q), payload.data(), payload.size(), deadline,
                     "rank " + std::to_string(q), what);
    }
    return payload;
  }
  uint64_t bytes = 0;
  impl::recv_all(star.peer(0), &bytes, sizeof bytes, deadline, "rank 0", what);
  KILN_CHECK(bytes <= (uint64_t{1} << 30), Status::io_error, what,
             ": rank 0 announced an implausible payload of ", bytes, " bytes");
  std::string out(static_cast<std::size_t>(bytes), '\0');
  impl::recv_all(star.peer(0), out.data(), out.size(), deadline, "rank 0", what);
  return out;
}

std::unique_ptr<Communicator> make_communicator(const LaunchInfo& launch, Backend& backend,
                                                const CommOptions& options) {
  if (launch.world_size == 1) return std::make_unique<SingleRankCommunicator>();
  if (backend.kind() == BackendKind::cpu) return make_tcp_communicator(launch, options);
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  return make_nccl_communicator(launch, device, options);
}

}  // namespace kiln
