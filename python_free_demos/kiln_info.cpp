// kiln_info: kiln's version, the CUDA libraries it was built against and loaded, and each GPU.
// Without a GPU or driver it says so, with the CUDA runtime's explanation, and exits with 0 after
// printing what it can (versions), so scripts can run it anywhere.
#include <cstdio>
#include <string>

#include "kiln/kiln.hpp"

namespace {

// CUDA encodes 1000 * major + 10 * minor.
void print_cuda_version(const char* name, int code) {
  std::printf("  %-16s %d.%d\n", name, code / 1000, (code / 10) % 100);
}

// cuBLAS, cuDNN 9 and NCCL encode 10000 * major + 100 * minor + patch.
void print_library_version(const char* name, int code) {
  if (code <= 0) {
    std::printf("  %-16s unknown\n", name);
    return;
  }
  std::printf("  %-16s %d.%d.%d\n", name, code / 10000, (code / 100) % 100, code % 100);
}

}  // namespace

int main(int argc, char** argv) {
  // No options but --help: anything else is a mistake worth saying (CLI11 is not needed here, so
  // that kiln_info builds everywhere).
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::printf(
          "kiln_info: kiln's version, the CUDA libraries it was built against and loaded, and "
          "each GPU\nUsage: kiln_info [--help]\n");
      return 0;
    }
    std::fprintf(stderr, "kiln_info: unknown argument '%s' (kiln_info takes only --help)\n",
                 arg.c_str());
    return 2;
  }
  std::printf("kiln %s\n", kiln_version_string());

  kiln_library_versions_t v{};
  if (kiln_get_library_versions(&v) != KILN_STATUS_OK) {
    std::fprintf(stderr, "kiln_info: %s\n", kiln_last_error());
    return 1;
  }
  std::printf("libraries:\n");
  print_cuda_version("CUDA runtime", v.cuda_runtime);
  if (v.cuda_driver > 0) {
    print_cuda_version("CUDA driver", v.cuda_driver);
  } else {
    std::printf("  %-16s none (no NVIDIA driver is loaded)\n", "CUDA driver");
  }
  print_library_version("cuBLASLt", v.cublaslt);
  print_library_version("cuDNN (built)", v.cudnn_compiled);
  print_library_version("cuDNN (loaded)", v.cudnn_loaded);
  print_library_version("NCCL (built)", v.nccl_compiled);
  print_library_version("NCCL (loaded)", v.nccl_loaded);

  int count = 0;
  if (kiln_device_count(&count) != KILN_STATUS_OK) {
    std::printf("devices:\n  %s\n", kiln_last_error());
    return 0;
  }
  std::printf("devices: %d\n", count);
  for (int i = 0; i < count; ++i) {
    kiln_device_info_t d{};
    if (kiln_get_device_info(i, &d) != KILN_STATUS_OK) {
      std::printf("  [%d] %s\n", i, kiln_last_error());
      continue;
    }
    std::printf("  [%d] %s: compute capability %d.%d, %d SMs, %.1f GiB, L2 %.0f MiB", i, d.name,
                d.compute_major, d.compute_minor, d.multiprocessors,
                static_cast<double>(d.total_memory_bytes) / (1u << 30),
                static_cast<double>(d.l2_cache_bytes) / (1u << 20));
    if (d.clock_rate_khz > 0) std::printf(", SM clock %d MHz", d.clock_rate_khz / 1000);
    if (d.memory_clock_rate_khz > 0)
      std::printf(", memory clock %d MHz", d.memory_clock_rate_khz / 1000);
    std::printf("\n");
  }
  return 0;
}
