#include "bench/harness/harness.hpp"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>

#include "errors/check.hpp"
#include "errors/check_libs.hpp"
#include "kiln/kiln.hpp"

#ifndef KILN_CONFIGURE_COMMIT
#define KILN_CONFIGURE_COMMIT "unknown"
#endif

namespace kiln::bench {
namespace {

__device__ __forceinline__ float hash_uniform(std::uint64_t seed, std::uint64_t i) {
  // splitmix64 of (seed, index): independent per element, no state.
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
}

template <typename T>
__global__ void fill_random_kernel(T* out, std::size_t count, std::uint64_t seed, float lo,
                                   float hi) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < count;
       i += std::size_t{gridDim.x} * blockDim.x) {
    float v = lo + (hi - lo) * hash_uniform(seed, i);
    if (v == 0.0f) v = hi;  // never an exact zero
    if constexpr (std::is_same_v<T, float>) {
      out[i] = v;
    } else {
      out[i] = __float2bfloat16(v);
    }
  }
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

Options parse_options(int argc, char** argv, const std::string& description) {
  return parse_options(argc, argv, description, {});
}

Options parse_options(int argc, char** argv, const std::string& description,
                      const std::function<void(CLI::App&)>& extra) {
  Options o;
  CLI::App app(description);
  if (extra) extra(app);
  app.add_option("--json", o.json_path, "Append one JSON line per figure to this file");
  app.add_option("--warmup", o.warmup, "Untimed calls before timing")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--reps", o.repetitions, "Timed repetitions (the median is reported)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--quick", o.quick, "A few shapes only, for smoke runs");
  app.add_flag("--no-ceilings", o.skip_ceilings, "Skip measuring copy bandwidth and GEMM peak");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  return o;
}

namespace {
std::atomic<int> g_failed_checks{0};
}  // namespace

void check_failed(const std::string& message) {
  ++g_failed_checks;
  std::fprintf(stderr, "FAILED: %s; not timed\n", message.c_str());
  std::fflush(stderr);
}

int exit_status() {
  return g_failed_checks.load() > 0 ? 1 : 0;
}

int device_or_skip() {
  int count = 0;
  if (kiln_device_count(&count) != KILN_STATUS_OK) {
    std::printf("[kiln-no-device] %s: benchmark skipped\n", kiln_last_error());
    return 77;
  }
  return 0;
}

void fill_random(void* ptr, std::size_t count, DType dtype, std::uint64_t seed, float lo, float hi,
                 cudaStream_t stream) {
  const int threads = 256;
  const int blocks =
      static_cast<int>(std::min<std::size_t>((count + threads - 1) / threads, 65536));
  if (count == 0) return;
  if (dtype == DType::f32) {
    fill_random_kernel<<<blocks, threads, 0, stream>>>(static_cast<float*>(ptr), count, seed, lo,
                                                       hi);
  } else {
    fill_random_kernel<<<blocks, threads, 0, stream>>>(static_cast<__nv_bfloat16*>(ptr), count,
                                                       seed, lo, hi);
  }
  KILN_LAUNCH_CHECK(stream);
}

Timing time_region(const std::function<void(cudaStream_t)>& run, cudaStream_t stream,
                   const Options& options, bool flush_l2) {
  // A buffer twice the L2: writing it before each repetition evicts the inputs from the L2.
  static void* flush_buffer = nullptr;
  static std::size_t flush_bytes = 0;
  if (flush_l2 && !flush_buffer) {
    int device = 0, l2 = 0;
    KILN_CUDA_CHECK(cudaGetDevice(&device));
    KILN_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    flush_bytes = std::max<std::size_t>(2 * static_cast<std::size_t>(l2), 64 << 20);
    KILN_CUDA_CHECK(cudaMalloc(&flush_buffer, flush_bytes));
  }
  for (int i = 0; i < options.warmup; ++i)
    run(stream);
  cudaEvent_t start, stop;
  KILN_CUDA_CHECK(cudaEventCreate(&start));
  KILN_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  ms.reserve(options.repetitions);
  for (int i = 0; i < options.repetitions; ++i) {
    if (flush_l2) KILN_CUDA_CHECK(cudaMemsetAsync(flush_buffer, i & 0xFF, flush_bytes, stream));
    KILN_CUDA_CHECK(cudaEventRecord(start, stream));
    run(stream);
    KILN_CUDA_CHECK(cudaEventRecord(stop, stream));
    KILN_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    KILN_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  KILN_CUDA_CHECK(cudaEventDestroy(start));
  KILN_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  Timing timing;
  timing.repetitions = static_cast<int>(ms.size());
  timing.min_ms = ms.front();
  timing.max_ms = ms.back();
  const std::size_t n = ms.size();
  timing.median_ms = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  return timing;
}

Ceilings measure_ceilings(cudaStream_t stream, const Options& options) {
  Ceilings c;
  Options o = options;
  o.warmup = std::max(3, std::min(options.warmup, 5));
  o.repetitions = std::max(10, std::min(options.repetitions, 20));

  // Copy: 2 GiB each way, far past the L2, so no flush is needed.
  const std::size_t copy_bytes = std::size_t{2} << 30;
  void *src = nullptr, *dst = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&src, copy_bytes));
  KILN_CUDA_CHECK(cudaMalloc(&dst, copy_bytes));
  fill_random(src, copy_bytes / 4, DType::f32, 1, -1, 1, stream);
  const Timing copy = time_region(
      [&](cudaStream_t s) {
        KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, s));
      },
      stream, o, false);
  c.copy_gbps = gbps(2.0 * copy_bytes, copy.median_ms);
  KILN_CUDA_CHECK(cudaFree(src));
  KILN_CUDA_CHECK(cudaFree(dst));

  // GEMM: cuBLAS bf16 8192^3 with fp32 accumulation, on random data.
  const int n = 8192;
  const std::size_t elems = std::size_t{n} * n;
  __nv_bfloat16 *a = nullptr, *b = nullptr, *d = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&a, elems * 2));
  KILN_CUDA_CHECK(cudaMalloc(&b, elems * 2));
  KILN_CUDA_CHECK(cudaMalloc(&d, elems * 2));
  fill_random(a, elems, DType::bf16, 2, -1, 1, stream);
  fill_random(b, elems, DType::bf16, 3, -1, 1, stream);
  cublasHandle_t handle = nullptr;
  KILN_CUBLAS_CHECK(cublasCreate(&handle));
  KILN_CUBLAS_CHECK(cublasSetStream(handle, stream));
  const float alpha = 1, beta = 0;
  const Timing gemm = time_region(
      [&](cudaStream_t) {
        KILN_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a,
                                       CUDA_R_16BF, n, b, CUDA_R_16BF, n, &beta, d, CUDA_R_16BF, n,
                                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      },
      stream, o, false);
  c.gemm_tflops = tflops(2.0 * n * n * n, gemm.median_ms);
  KILN_CUBLAS_CHECK(cublasDestroy(handle));
  KILN_CUDA_CHECK(cudaFree(a));
  KILN_CUDA_CHECK(cudaFree(b));
  KILN_CUDA_CHECK(cudaFree(d));
  return c;
}

nlohmann::json environment() {
  nlohmann::json env;
  env["kiln_version"] = kiln_version_string();
  const char* commit = std::getenv("KILN_GIT_COMMIT");
  env["commit"] = commit && *commit ? commit : KILN_CONFIGURE_COMMIT;
  env["date"] = utc_now();
  kiln_library_versions_t v{};
  if (kiln_get_library_versions(&v) == KILN_STATUS_OK) {
    env["cuda_runtime"] = v.cuda_runtime;
    env["cuda_driver"] = v.cuda_driver;
    env["cublaslt"] = v.cublaslt;
    env["cudnn"] = v.cudnn_loaded;
    env["nccl"] = v.nccl_loaded;
  }
  int device = 0;
  kiln_device_info_t info{};
  if (cudaGetDevice(&device) == cudaSuccess &&
      kiln_get_device_info(device, &info) == KILN_STATUS_OK) {
    env["device"] = info.name;
    env["compute_capability"] =
        std::to_string(info.compute_major) + "." + std::to_string(info.compute_minor);
    env["sms"] = info.multiprocessors;
    env["sm_clock_mhz"] = info.clock_rate_khz / 1000;
    env["memory_clock_mhz"] = info.memory_clock_rate_khz / 1000;
  }
  return env;
}

Report::Report(std::string bench, const Options& options)
    : bench_(std::move(bench)), options_(options), environment_(environment()) {}

void Report::add(nlohmann::json record) {
  record["bench"] = bench_;
  if (record.contains("gbps") && ceilings_.copy_gbps > 0)
    record["pct_of_copy"] = 100.0 * record["gbps"].get<double>() / ceilings_.copy_gbps;
  if (record.contains("tflops") && ceilings_.gemm_tflops > 0)
    record["pct_of_gemm_peak"] = 100.0 * record["tflops"].get<double>() / ceilings_.gemm_tflops;
  record["ceiling_copy_gbps"] = ceilings_.copy_gbps;
  record["ceiling_gemm_tflops"] = ceilings_.gemm_tflops;

  if (!header_printed_) {
    std::printf("%-14s %-22s %-12s %-34s %10s %10s %8s\n", "bench", "op", "impl", "shape", "ms",
                "figure", "%ceil");
    header_printed_ = true;
  }
  const bool is_flops = record.contains("tflops");
  const double figure = is_flops ? record["tflops"].get<double>() : record.value("gbps", 0.0);
  const double pct =
      is_flops ? record.value("pct_of_gemm_peak", 0.0) : record.value("pct_of_copy", 0.0);
  std::printf("%-14s %-22s %-12s %-34s %10.4f %7.1f %-2s %7.1f\n", bench_.c_str(),
              record.value("op", "").c_str(), record.value("impl", "").c_str(),
              record.value("shape", "").c_str(), record.value("ms", 0.0), figure,
              is_flops ? "TF" : "GB", pct);
  std::fflush(stdout);

  if (!options_.json_path.empty()) {
    nlohmann::json line = environment_;
    line.update(record);
    std::ofstream out(options_.json_path, std::ios::app);
    out << line.dump() << "\n";
  }
}

}  // namespace kiln::bench
