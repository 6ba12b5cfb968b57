// The benchmark harness every bench/<op> program uses (PERF.md):
//  - timing with CUDA events around the region, warm-up first, the median of many repetitions,
//    the L2 cache flushed before each repetition (or inputs rotated by the caller);
//  - the two ceilings measured in the same run: device-to-device copy bandwidth (bytes read +
//    written) and a large cuBLAS bf16 GEMM;
//  - one JSON line per figure (with device, versions, commit and date) and a table on stdout.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "errors/check.hpp"

namespace CLI {
class App;
}  // namespace CLI

namespace kiln::bench {

struct Options {
  std::string json_path;       // --json FILE: append one JSON line per figure
  int warmup = 10;             // --warmup N
  int repetitions = 50;        // --reps N
  bool quick = false;          // --quick: a few shapes only (smoke runs)
  bool skip_ceilings = false;  // --no-ceilings: do not measure the ceilings (faster; no %)
};

// Parses the common options (plus --help, which prints `description`). Exits the process on
// --help or a parse error: this is a program's main, not the library.
Options parse_options(int argc, char** argv, const std::string& description);
// The same with a program's own options, added to the parser by `extra` before parsing.
Options parse_options(int argc, char** argv, const std::string& description,
                      const std::function<void(CLI::App&)>& extra);

// 0 when a CUDA device is present; otherwise prints "[kiln-no-device] ... benchmark skipped" and
// returns 77, which scripts/gpu-window.sh reads as "skipped" only with that line.
int device_or_skip();

// A failed spot check (or any other reason a figure must not be trusted): prints
// "FAILED: <message>; not timed" to stderr and makes exit_status() 1, so the program exits
// non-zero and scripts/gpu-window.sh reports it FAILED instead of "done".
void check_failed(const std::string& message);
// What main returns when it ran to the end: 1 if any check failed, else 0.
int exit_status();

// A device allocation of n elements of T (256 bytes when n is 0, so the pointer is never null),
// freed at scope exit. Benchmarks allocate before timing, never inside the timed region.
template <typename T>
struct Buf {
  T* p = nullptr;
  explicit Buf(std::size_t n) {
    KILN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), n ? n * sizeof(T) : 256));
  }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

// Fills `count` elements at `ptr` with uniform values in [lo, hi) from a counter-based hash of
// `seed`: fast, reproducible, and never zeros (PERF.md: never time on zeros).
enum class DType { bf16, f32 };
void fill_random(void* ptr, std::size_t count, DType dtype, std::uint64_t seed, float lo, float hi,
                 cudaStream_t stream);

struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int repetitions = 0;
};

// Times `run(stream)`: `warmup` untimed calls, then `repetitions` calls each between two events,
// with the L2 flushed before each (outside the events) unless flush_l2 is false.
Timing time_region(const std::function<void(cudaStream_t)>& run, cudaStream_t stream,
                   const Options& options, bool flush_l2 = true);

struct Ceilings {
  double copy_gbps = 0;    // device-to-device copy, bytes read + written per second / 1e9
  double gemm_tflops = 0;  // cuBLAS bf16 GEMM 8192^3, fp32 accumulation, random data
};
// Measures both ceilings on the current device (about a second).
Ceilings measure_ceilings(cudaStream_t stream, const Options& options);

// Device, driver, library versions, kiln commit (KILN_GIT_COMMIT in the environment, else the
// commit at configure time) and the UTC date, as one JSON object.
nlohmann::json environment();

// Collects figures: prints each as a table row and appends it, merged with the environment, to
// the JSON lines file.
class Report {
 public:
  Report(std::string bench, const Options& options);
  // `record` carries at least "op", "impl" (kiln, cublas, cudnn, ...), "shape" and either
  // "gbps" or "tflops"; the report adds "bench", the ceilings' percentages and the environment.
  void add(nlohmann::json record);
  void set_ceilings(const Ceilings& c) { ceilings_ = c; }
  const Ceilings& ceilings() const { return ceilings_; }

 private:
  std::string bench_;
  Options options_;
  Ceilings ceilings_;
  nlohmann::json environment_;
  bool header_printed_ = false;
};

// GB/s of `bytes` moved in `ms` milliseconds; TFLOP/s of `flops` in `ms`.
inline double gbps(double bytes, double ms) {
  return bytes / (ms * 1e-3) / 1e9;
}
inline double tflops(double flops, double ms) {
  return flops / (ms * 1e-3) / 1e12;
}

}  // namespace kiln::bench
