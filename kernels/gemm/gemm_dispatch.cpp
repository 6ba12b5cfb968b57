// kiln_gemm's backend dispatcher (gemm_dispatch.hpp).
#include "kernels/gemm/gemm_dispatch.hpp"

#include <algorithm>
#include <limits>
#include <memory>
#include <vector>

#include "errors/check.hpp"
#include "kernels/common/device.hpp"

namespace kiln::impl {
namespace {

constexpr const char* kOp = "kiln_gemm";

bool accepts(kiln_gemm_context& ctx, GemmBackend b, const GemmProblem& p) {
  switch (b) {
    case GemmBackend::sm90:
      return sm90_rejects_static(p).empty() && backend_available(b);
    case GemmBackend::sm80:
      return sm80_rejects_static(p).empty() && backend_available(b);
    case GemmBackend::cublaslt:
      return ctx.cublaslt != nullptr && backend_available(b) &&
             cublaslt_supports(*ctx.cache, ctx.cublaslt, ctx.workspace, ctx.workspace_bytes, p);
  }
  return false;
}

}  // namespace

GemmBackend from_public(kiln_gemm_backend_t b) {
  switch (b) {
    case KILN_GEMM_BACKEND_SM90:
      return GemmBackend::sm90;
    case KILN_GEMM_BACKEND_SM80:
      return GemmBackend::sm80;
    default:
      return GemmBackend::cublaslt;
  }
}
kiln_gemm_backend_t to_public(GemmBackend b) {
  switch (b) {
    case GemmBackend::sm90:
      return KILN_GEMM_BACKEND_SM90;
    case GemmBackend::sm80:
      return KILN_GEMM_BACKEND_SM80;
    default:
      return KILN_GEMM_BACKEND_CUBLASLT;
  }
}

const char* backend_name(GemmBackend b) {
  return kiln_gemm_backend_name(to_public(b));
}

bool backend_available(GemmBackend b) {
  switch (b) {
    case GemmBackend::sm90:
      return hopper_kernels_available();
    case GemmBackend::sm80:
      return current_device_facts().compute_major >= 8;
    case GemmBackend::cublaslt:
      current_device_facts();  // throws no_device without a GPU
      return true;
  }
  return false;
}

GemmBackend select_backend(kiln_gemm_context& ctx, const GemmProblem& p,
                           kiln_gemm_backend_t requested) {
  if (requested != KILN_GEMM_BACKEND_AUTO) {
    const GemmBackend b = from_public(requested);
    if (b == GemmBackend::cublaslt) {
      KILN_CHECK(ctx.cublaslt != nullptr, Status::not_supported, kOp,
                 ": the cuBLASLt backend needs a context created with a cuBLASLt handle");
      backend_available(b);
    } else {
      KILN_CHECK(backend_available(b), Status::not_supported, kOp, ": the ", backend_name(b),
                 " backend is not available on this device or in this build",
                 b == GemmBackend::sm90 ? " (it needs compute capability 9.0 and KILN_SM90A)"
                                        : " (it needs compute capability 8.0 or newer)");
    }
    return b;
  }
  // The environment's table is read at the first AUTO call, not at creation (which touches no
  // device).
  if (!ctx.environment_table_read) {
    ctx.environment_table_read = true;
    merge_environment_gemm_table(ctx.table);
  }
  if (auto it = ctx.table.find(gemm_table_key(p)); it != ctx.table.end())
    if (accepts(ctx, it->second.backend, p)) return it->second.backend;
  for (GemmBackend b : {GemmBackend::cublaslt, GemmBackend::sm90, GemmBackend::sm80})
    if (accepts(ctx, b, p)) return b;
  throw_error(
      Status::not_supported,
      cat(kOp, ": no backend takes M ", p.m, " N ", p.n, " K ", p.k, " epilogue ",
          kiln_gemm_epilogue_name(p.epilogue), " on this device (",
          ctx.cublaslt ? "cuBLASLt has no algorithm" : "no cuBLASLt handle", "; ",
          sm90_rejects_static(p).empty() ? "sm90 unavailable" : sm90_rejects_static(p), "; ",
          sm80_rejects_static(p).empty() ? "sm80 unavailable" : sm80_rejects_static(p), ")"),
      nullptr, __FILE__, __LINE__);
}

void run_backend(kiln_gemm_context& ctx, GemmBackend b, const GemmProblem& p, cudaStream_t stream) {
  switch (b) {
    case GemmBackend::cublaslt:
      gemm_cublaslt(*ctx.cache, ctx.cublaslt, ctx.workspace, ctx.workspace_bytes, p, stream);
      return;
    case GemmBackend::sm90:
#if defined(KILN_HAS_SM90A)
      gemm_sm90(p, current_device_facts().multiprocessors, stream);
      return;
#else
      throw_error(Status::not_supported, cat(kOp, ": this build has no sm_90a kernels"), nullptr,
                  __FILE__, __LINE__);
#endif
    case GemmBackend::sm80:
      gemm_sm80(p, stream);
      return;
  }
}

GemmBackend fastest_backend(kiln_gemm_context& ctx, const GemmProblem& p, cudaStream_t stream) {
  cudaEvent_t start = nullptr, stop = nullptr;
  KILN_CUDA_CHECK(cudaEventCreate(&start));
  std::unique_ptr<CUevent_st, void (*)(cudaEvent_t)> start_guard(
      start, [](cudaEvent_t e) { cudaEventDestroy(e); });
  KILN_CUDA_CHECK(cudaEventCreate(&stop));
  std::unique_ptr<CUevent_st, void (*)(cudaEvent_t)> stop_guard(
      stop, [](cudaEvent_t e) { cudaEventDestroy(e); });
  constexpr int kWarmup = 2, kReps = 7;
  double best_ms = std::numeric_limits<double>::infinity();
  GemmBackend best = GemmBackend::cublaslt;
  bool any = false;
  for (GemmBackend b : {GemmBackend::cublaslt, GemmBackend::sm90, GemmBackend::sm80}) {
    if (!accepts(ctx, b, p)) continue;
    for (int i = 0; i < kWarmup; ++i)
      run_backend(ctx, b, p, stream);
    std::vector<float> ms;
    for (int i = 0; i < kReps; ++i) {
      KILN_CUDA_CHECK(cudaEventRecord(start, stream));
      run_backend(ctx, b, p, stream);
      KILN_CUDA_CHECK(cudaEventRecord(stop, stream));
      KILN_CUDA_CHECK(cudaEventSynchronize(stop));
      float t = 0;
      KILN_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
      ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    if (median < best_ms) {
      best_ms = median;
      best = b;
    }
    any = true;
  }
  KILN_CHECK(any, kiln::Status::not_supported, "kiln_gemm_tune: no backend takes this problem");
  return best;
}

}  // namespace kiln::impl
