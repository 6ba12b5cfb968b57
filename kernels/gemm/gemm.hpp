// GEMM internals: the checked problem every backend receives, and the backends' entry points.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "errors/check.hpp"
#include "kiln/gemm.h"

namespace kiln::impl {

enum class GemmBackend { cublaslt, sm90, sm80 };
const char* backend_name(GemmBackend b);

// What the epilogue does, decoded once from the public epilogue.
struct GemmEpilogueFlags {
  bool bias = false;       // add bias[n]
  bool gelu = false;       // store v to pre_gelu_out, D = gelu(v)
  bool dgelu = false;      // D = v * gelu'(pre_gelu)
  bool bias_grad = false;  // bias_grad[m] += rowsum(op(A))
};

// A validated problem: shapes, resolved leading dimensions (elements), pointers. Built by
// check_gemm_params (gemm_args.cpp) before any backend sees it.
struct GemmProblem {
  std::int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  const void* a = nullptr;
  const void* b = nullptr;
  const void* c = nullptr;  // null when beta == 0
  void* d = nullptr;
  std::int64_t lda = 0, ldb = 0, ldc = 0, ldd = 0, ld_pre_gelu = 0;
  bool cd_f32 = false;  // C, D, bias_grad are fp32 (else bf16)
  float alpha = 1, beta = 0;
  kiln_gemm_epilogue_t epilogue = KILN_GEMM_EPILOGUE_NONE;
  GemmEpilogueFlags flags;
  const void* bias = nullptr;  // null unless flags.bias
  void* pre_gelu_out = nullptr;
  const void* pre_gelu = nullptr;
  void* bias_grad = nullptr;

  std::size_t cd_bytes() const { return cd_f32 ? 4 : 2; }
};

// Every check of kiln_gemm's arguments that needs no device (gemm_args.cpp); throws
// invalid_argument naming the argument.
GemmProblem check_gemm_params(const kiln_gemm_params_t* params);

// Why a hand-written kernel cannot take `p` (alignment, device, build), or "" when it can.
// Static checks only (no device query) in the *_static variants.
std::string sm90_rejects_static(const GemmProblem& p);
std::string sm80_rejects_static(const GemmProblem& p);

// ---- backends (each throws kiln::Error) ----

// The cuBLASLt backend's per-context state (descriptor and algorithm cache).
class CublasLtCache;
CublasLtCache* cublaslt_cache_create();
void cublaslt_cache_destroy(CublasLtCache* cache) noexcept;
// Throws not_supported when cuBLASLt has no algorithm for the problem. `workspace` is the whole
// context workspace; the backend keeps its tail for the bias-gradient scratch.
void gemm_cublaslt(CublasLtCache& cache, void* handle, void* workspace, std::size_t workspace_bytes,
                   const GemmProblem& p, cudaStream_t stream);
// Builds (or finds) the plan without launching: false when cuBLASLt has no algorithm.
bool cublaslt_supports(CublasLtCache& cache, void* handle, void* workspace,
                       std::size_t workspace_bytes, const GemmProblem& p);

// The accumulation cuBLASLt's bias gradient needs (it overwrites; kiln's contract adds):
// dst[i] += src[i] for i < n, in the dtype of the problem's bias_grad.
void bias_grad_accumulate(void* dst, const void* src, std::int64_t n, bool f32,
                          cudaStream_t stream);
// bias_grad (M, f32 or bf16) += sum_k op(A)[m, k] with A bf16 ((M, K), or (K, M) when trans_a,
// row stride lda), deterministically. `scratch` (4-byte aligned; may be null with 0 bytes) holds
// partial column sums when trans_a: the more of it, the more row slices run in parallel.
void op_a_row_sums_accumulate(void* bias_grad, bool f32, const void* a, bool trans_a,
                              std::int64_t lda, std::int64_t M, std::int64_t K, void* scratch,
                              std::size_t scratch_bytes, int multiprocessors, cudaStream_t stream);

// Lets `kernel` use `bytes` of dynamic shared memory (past the default 48 KiB) on the current
// device, once per device: `done` is the caller's per-kernel bitmask of devices already set.
template <typename Kernel>
void opt_in_shared_memory(Kernel kernel, int bytes, std::atomic<std::uint64_t>& done) {
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  const std::uint64_t bit = device < 64 ? std::uint64_t{1} << device : 0;
  if (bit && (done.load(std::memory_order_acquire) & bit)) return;
  KILN_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  done.fetch_or(bit, std::memory_order_release);
}

#if defined(KILN_HAS_SM90A)
// gemm_sm90.cu (built for sm_90a).
void gemm_sm90(const GemmProblem& p, int multiprocessors, cudaStream_t stream);
#endif
// gemm_sm80.cu.
void gemm_sm80(const GemmProblem& p, cudaStream_t stream);

}  // namespace kiln::impl
