// bench_allreduce: NCCL all-reduce over message sizes, through kiln's communicator (what training
// uses: its own stream, event ordering, the watchdog's bookkeeping) beside raw ncclAllReduce on
// the same buffers (the peer: what nccl-tests measures).
//
//   bench_allreduce                                   one GPU, world size 1 (a smoke run)
//   mpirun -np 8 bench_allreduce --json out.jsonl     8 GPUs of one node
//   srun -N 2 --ntasks-per-node 8 bench_allreduce     two nodes (see README "Multi-GPU")
//
// Figures (rank 0 prints and writes them; each is the slowest rank's median):
//   algbw = bytes / time;  busbw = algbw * 2 (n - 1) / n, the bandwidth each link carries in a
//   ring all-reduce, comparable across world sizes (0 at world size 1, where nothing moves).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/harness/harness.hpp"
#include "errors/check.hpp"
#include "errors/check_libs.hpp"
#include "kiln/device.hpp"
#include "kiln/launch.hpp"

namespace {

std::string format_size(std::size_t bytes) {
  char buf[32];
  if (bytes >= (std::size_t{1} << 30)) {
    std::snprintf(buf, sizeof buf, "%zu GiB", bytes >> 30);
  } else if (bytes >= (std::size_t{1} << 20)) {
    std::snprintf(buf, sizeof buf, "%zu MiB", bytes >> 20);
  } else if (bytes >= 1024) {
    std::snprintf(buf, sizeof buf, "%zu KiB", bytes >> 10);
  } else {
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  }
  return buf;
}

int run(int argc, char** argv) {
  std::size_t min_bytes = 8, max_bytes = std::size_t{1} << 30;
  int factor = 4;
  const kiln::bench::Options o = kiln::bench::parse_options(
      argc, argv, "NCCL all-reduce: algorithm and bus bandwidth over message sizes",
      [&](CLI::App& app) {
        app.add_option("--min-bytes", min_bytes, "Smallest message")->capture_default_str();
        app.add_option("--max-bytes", max_bytes, "Largest message")->capture_default_str();
        app.add_option("--factor", factor, "Size step (each size is the previous times this)")
            ->check(CLI::Range(2, 1024))
            ->capture_default_str();
      });
  if (const int skip = kiln::bench::device_or_skip()) return skip;
  if (o.quick) {
    min_bytes = std::max<std::size_t>(min_bytes, 1024);
    max_bytes = std::min<std::size_t>(max_bytes, std::size_t{64} << 20);
    factor = std::max(factor, 16);
  }
  min_bytes = std::max<std::size_t>(4, min_bytes / 4 * 4);

  const kiln::LaunchInfo launch = kiln::detect_launch();
  const int device = kiln::select_device(launch, kiln::device_count());
  KILN_CUDA_CHECK(cudaSetDevice(device));
  kiln::CommOptions copts;
  copts.timeout = std::chrono::minutes(5);
  std::unique_ptr<kiln::Communicator> comm = kiln::make_nccl_communicator(launch, device, copts);
  const int world = comm->world_size();
  const bool leader = comm->rank() == 0;

  // The peer: a plain blocking NCCL communicator over the same ranks, its id sent by kiln's
  // rendezvous.
  ncclUniqueId id;
  std::string payload;
  if (leader) {
    KILN_NCCL_CHECK(ncclGetUniqueId(&id));
    payload.assign(reinterpret_cast<const char*>(&id), sizeof id);
  }
  payload = kiln::rendezvous_broadcast(launch, payload, copts);
  std::memcpy(&id, payload.data(), sizeof id);
  ncclComm_t raw = nullptr;
  KILN_NCCL_CHECK(ncclCommInitRank(&raw, world, id, launch.rank));

  cudaStream_t stream = nullptr;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  void* buffer = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&buffer, max_bytes));
  // Random, never zero. The in-place sums multiply the values by the world size each repetition
  // and may reach inf at large world sizes; NCCL's time does not depend on the values.
  kiln::bench::fill_random(buffer, max_bytes / 4, kiln::bench::DType::f32, 11 + launch.rank, -1e-3f,
                           1e-3f, stream);
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));

  kiln::bench::Report report("allreduce", o);
  if (leader) {
    std::printf("bench_allreduce: %s, %d rank(s), device %d, f32 sum, in place\n",
                launch.describe().c_str(), world, device);
  }
  const double bus_factor = world > 1 ? 2.0 * (world - 1) / world : 0.0;
  for (std::size_t bytes = min_bytes; bytes <= max_bytes;
       bytes *= static_cast<std::size_t>(factor)) {
    const int64_t count = static_cast<int64_t>(bytes / 4);
    for (const char* impl : {"kiln", "nccl"}) {
      const bool ours = std::strcmp(impl, "kiln") == 0;
      comm->barrier();
      const kiln::bench::Timing t = kiln::bench::time_region(
          [&](cudaStream_t s) {
            if (ours) {
              comm->all_reduce(buffer, count, kiln::DType::f32, kiln::ReduceOp::sum, s);
            } else {
              KILN_NCCL_CHECK(ncclAllReduce(buffer, buffer, static_cast<size_t>(count), ncclFloat32,
                                            ncclSum, raw, s));
            }
          },
          stream, o, false);
      // The slowest rank bounds the collective.
      const double ms = comm->all_reduce_value(t.median_ms, kiln::ReduceOp::max);
      const double algbw = kiln::bench::gbps(static_cast<double>(bytes), ms);
      if (leader) {
        report.add({{"op", "all_reduce"},
                    {"impl", ours ? "kiln-nccl" : "nccl"},
                    {"shape", format_size(bytes) + " x " + std::to_string(world) + " ranks"},
                    {"bytes", bytes},
                    {"world_size", world},
                    {"ms", ms},
                    {"algbw_gbps", algbw},
                    {"busbw_gbps", algbw * bus_factor},
                    {"gbps", algbw * bus_factor}});
      }
    }
  }
  comm->barrier();
  KILN_CUDA_CHECK(cudaFree(buffer));
  KILN_CUDA_CHECK(cudaStreamDestroy(stream));
  ncclCommDestroy(raw);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_allreduce: %s\n", e.message().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
  }
  return 1;
}
