/* kiln GEMM: D = epilogue(alpha * op(A) @ op(B) + beta * C) in bf16 with fp32 accumulation.
 *
 * Shapes (all row-major, leading dimension = row stride in elements, 0 = packed):
 *   op(A) (M, K): A is (M, K), or (K, M) when trans_a (op(A) = A^T)                       bf16
 *   op(B) (K, N): B is (K, N), or (N, K) when trans_b (torch.nn.Linear's W (out, in))    bf16
 *   C, D  (M, N): dtype cd_dtype (bf16 or fp32); C may be D itself (in-place accumulation, same
 *                 leading dimension); C is read only when beta != 0.
 *
 * Epilogues (v = alpha * op(A) @ op(B) + beta * C, in fp32):
 *   NONE       D = v
 *   BIAS       D = v + bias[n]                                  bias (N) bf16
 *   BIAS_GELU  P = v + bias[n]; pre_gelu_out = P; D = gelu(P)   pre_gelu_out (M, N) bf16 out
 *   RESIDUAL   D = v (+ bias[n] when bias is given); C is the residual and is required
 *   DGELU      D = v * gelu'(pre_gelu)                          pre_gelu (M, N) bf16 in
 *   BIAS_GRAD  D = v; bias_grad[m] += sum_k op(A)[m, k]         bias_grad (M) cd_dtype, +=
 * gelu is the tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
 * BIAS, BIAS_GELU, RESIDUAL and DGELU need cd_dtype = bf16; BIAS_GRAD needs alpha = 1.
 *
 * A linear layer Y = X W^T + b, X (T, in), W (out, in), as the runtime calls it:
 *   forward  M = T,   N = out, K = in,  a = X,  b = W (trans_b), epilogue BIAS / BIAS_GELU
 *   dX       M = T,   N = in,  K = out, a = dY, b = W                          (DGELU)
 *   dW, db   M = out, N = in,  K = T,   a = dY (trans_a), b = X, beta = 1, c = d = dW (fp32),
 *            epilogue BIAS_GRAD, bias_grad = db (fp32): dW += dY^T X, db += colsum(dY).
 *
 * Backends: cuBLASLt (every GPU; its fused epilogues), a hand-written sm_90a kernel (wgmma fed by
 * TMA, warp-specialized, persistent; Hopper builds with KILN_SM90A) and a hand-written sm_80
 * kernel (mma.sync + cp.async; compute capability 8.0 and newer). AUTO picks per problem from the
 * context's table of measured winners (kiln_gemm_tune, kiln_gemm_table_load), else by a rule
 * (kiln_gemm_select says which). Forcing a backend gives exactly that backend or an error.
 *
 * Alignment: every pointer 16-byte aligned and every leading dimension a multiple of 16 bytes
 * (8 bf16, 4 fp32) for the hand-written kernels (TMA and cp.async move 16-byte rows); cuBLASLt
 * takes any alignment (but needs ld_pre_gelu % 8 == 0 and 16-byte aligned pre_gelu pointers).
 * AUTO sends problems the hand-written kernels cannot take to cuBLASLt.
 *
 * Determinism: for a given backend, problem and device, results are bitwise repeatable run to
 * run; BIAS_GRAD uses no atomics. Backends differ from each other in rounding.
 *
 * Streams: kiln_gemm enqueues on `stream` and never synchronizes the host. All calls sharing a
 * context share its workspace: issue them on one stream (or order the streams yourself). */
#ifndef KILN_GEMM_H_
#define KILN_GEMM_H_

#include <stddef.h>
#include <stdint.h>

#include "kiln/core.h"
#include "kiln/export.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cublasLtContext; /* cublasLtHandle_t is struct cublasLtContext* */

typedef enum kiln_gemm_epilogue {
  KILN_GEMM_EPILOGUE_NONE = 0,
  KILN_GEMM_EPILOGUE_BIAS = 1,
  KILN_GEMM_EPILOGUE_BIAS_GELU = 2,
  KILN_GEMM_EPILOGUE_RESIDUAL = 3,
  KILN_GEMM_EPILOGUE_DGELU = 4,
  KILN_GEMM_EPILOGUE_BIAS_GRAD = 5
} kiln_gemm_epilogue_t;

typedef enum kiln_gemm_backend {
  KILN_GEMM_BACKEND_AUTO = 0,
  KILN_GEMM_BACKEND_CUBLASLT = 1,
  KILN_GEMM_BACKEND_SM90 = 2, /* hand-written wgmma + TMA kernel (Hopper, sm_90a build) */
  KILN_GEMM_BACKEND_SM80 = 3  /* hand-written mma.sync + cp.async kernel (sm_80+) */
} kiln_gemm_backend_t;

typedef struct kiln_gemm_params {
  int64_t m, n, k; /* each >= 1 */
  int trans_a;     /* 0: A (M, K); 1: A (K, M) */
  int trans_b;     /* 0: B (K, N); 1: B (N, K) */
  const void* a;   /* bf16, in */
  int64_t lda;
  const void* b; /* bf16, in */
  int64_t ldb;
  const void* c; /* (M, N) cd_dtype, in; may equal d; NULL allowed when beta == 0 */
  int64_t ldc;
  void* d; /* (M, N) cd_dtype, out */
  int64_t ldd;
  kiln_dtype_t cd_dtype; /* KILN_DTYPE_BF16 or KILN_DTYPE_F32 */
  float alpha;
  float beta;
  kiln_gemm_epilogue_t epilogue;
  const void* bias;     /* (N) bf16, in: BIAS, BIAS_GELU, RESIDUAL (optional there) */
  void* pre_gelu_out;   /* (M, N) bf16, out: BIAS_GELU */
  const void* pre_gelu; /* (M, N) bf16, in: DGELU */
  int64_t ld_pre_gelu;  /* of pre_gelu_out / pre_gelu */
  void* bias_grad;      /* (M) cd_dtype, accumulated: BIAS_GRAD */
  kiln_gemm_backend_t backend;
} kiln_gemm_params_t;

/* Sets every field to its default: zeros and NULLs, alpha = 1, beta = 0, epilogue NONE,
 * cd_dtype bf16, backend AUTO. */
KILN_API void kiln_gemm_params_init(kiln_gemm_params_t* params);

/* The workspace kiln_gemm wants: 32 MiB (cuBLASLt's heuristics on Hopper, plus kiln's scratch
 * for cuBLASLt's bias gradient). kiln::Device allocates this much by default. */
#define KILN_GEMM_WORKSPACE_BYTES ((size_t)32 << 20)

/* A context: the cuBLASLt handle and workspace kiln_gemm uses, the cached cuBLASLt
 * descriptors and algorithms (one per problem shape and pointer-alignment class), and the table
 * of measured winners AUTO consults. (The hand-written kernels' TMA descriptors are cached per
 * host thread.) Creating it touches no GPU. `cublaslt` and `workspace` (256-byte aligned) stay
 * owned by the caller and must outlive the context; `cublaslt` may be NULL (then only the
 * hand-written backends are available). One context per device; thread-safe. */
typedef struct kiln_gemm_context kiln_gemm_context_t;
KILN_API kiln_status_t kiln_gemm_context_create(kiln_gemm_context_t** context,
                                                struct cublasLtContext* cublaslt, void* workspace,
                                                size_t workspace_bytes);
KILN_API void kiln_gemm_context_destroy(kiln_gemm_context_t* context);

/* Enqueues the GEMM on `stream`. Arguments are checked before anything is launched: a call that
 * returns KILN_STATUS_INVALID_ARGUMENT (bad shape, pointer, alignment, epilogue combination) or
 * KILN_STATUS_NOT_SUPPORTED (a forced backend this device or build lacks, a layout cuBLASLt
 * has no algorithm for) has written nothing. */
KILN_API kiln_status_t kiln_gemm(kiln_gemm_context_t* context, const kiln_gemm_params_t* params,
                                 cudaStream_t stream);

/* The backend kiln_gemm would run for `params` (params->backend, or AUTO's choice). */
KILN_API kiln_status_t kiln_gemm_select(kiln_gemm_context_t* context,
                                        const kiln_gemm_params_t* params,
                                        kiln_gemm_backend_t* backend);

/* Whether `backend` can run on the current device in this build (AUTO: always 1). */
KILN_API kiln_status_t kiln_gemm_backend_available(kiln_gemm_backend_t backend, int* available);
KILN_API const char* kiln_gemm_backend_name(kiln_gemm_backend_t backend);
KILN_API const char* kiln_gemm_epilogue_name(kiln_gemm_epilogue_t epilogue);

/* A short on-device tuning pass for one problem: runs every available backend that accepts it a
 * few times on `stream`, times them with events, and records the fastest in the context's table
 * (AUTO uses it from then on for this problem). A setup-time call: it synchronizes `stream`, and
 * the outputs (d, pre_gelu_out, bias_grad) hold unspecified values afterwards; with c == d the
 * accumulation target is overwritten too. *chosen (may be NULL) receives the winner. */
KILN_API kiln_status_t kiln_gemm_tune(kiln_gemm_context_t* context,
                                      const kiln_gemm_params_t* params, cudaStream_t stream,
                                      kiln_gemm_backend_t* chosen);

/* The table of measured winners as JSON lines (one problem per line, with the device it was
 * measured on): save writes the whole table; load adds the lines measured on a device of the
 * current device's name and ignores the others. bench_gemm --table FILE writes such a file.
 * The environment variable KILN_GEMM_TABLE=FILE has every context load FILE at its first AUTO
 * call (entries already set through the calls below take precedence); a file that cannot be read
 * makes that call fail with the load's status. */
KILN_API kiln_status_t kiln_gemm_table_save(kiln_gemm_context_t* context, const char* path);
KILN_API kiln_status_t kiln_gemm_table_load(kiln_gemm_context_t* context, const char* path);
/* Records `backend` as the winner for `params`' problem, as kiln_gemm_tune does. */
KILN_API kiln_status_t kiln_gemm_table_set(kiln_gemm_context_t* context,
                                           const kiln_gemm_params_t* params,
                                           kiln_gemm_backend_t backend);

#ifdef __cplusplus
} /* extern "C" */

#include "kiln/error.hpp"

namespace kiln {

/* RAII owner of a kiln_gemm_context_t. */
class GemmContext {
 public:
  GemmContext(cublasLtContext* cublaslt, void* workspace, size_t workspace_bytes) {
    check(kiln_gemm_context_create(&ctx_, cublaslt, workspace, workspace_bytes));
  }
  ~GemmContext() { kiln_gemm_context_destroy(ctx_); }
  GemmContext(const GemmContext&) = delete;
  GemmContext& operator=(const GemmContext&) = delete;
  kiln_gemm_context_t* get() const noexcept { return ctx_; }

 private:
  kiln_gemm_context_t* ctx_ = nullptr;
};

inline kiln_gemm_params_t gemm_params() {
  kiln_gemm_params_t p;
  kiln_gemm_params_init(&p);
  return p;
}

/* Throws kiln::Error on failure. */
inline void gemm(const GemmContext& context, const kiln_gemm_params_t& params,
                 cudaStream_t stream) {
  check(kiln_gemm(context.get(), &params, stream));
}

}  // namespace kiln
#endif /* __cplusplus */

#endif /* KILN_GEMM_H_ */
