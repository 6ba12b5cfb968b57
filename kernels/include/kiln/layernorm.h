/* kiln LayerNorm over the last dimension of a row-major (N, C) tensor: forward, forward fused
 * with the residual add that precedes it in a pre-LN Transformer, and backward.
 *
 *   mean[n] = sum_c x[n,c] / C,   var[n] = sum_c (x[n,c] - mean[n])^2 / C   (biased)
 *   rstd[n] = 1 / sqrt(var[n] + eps),   y[n,c] = (x[n,c] - mean[n]) * rstd[n] * gamma[c] + beta[c]
 *
 * Types. x, y, residual, a, b, gamma, beta, dy and dx share `dtype`: KILN_DTYPE_BF16 (storage;
 * all arithmetic in fp32, outputs rounded to nearest even) or KILN_DTYPE_F32. mean, rstd, dgamma
 * and dbeta are always fp32: the statistics reach the backward at full precision, and the
 * parameter gradients accumulate in the fp32 buffers the runtime keeps for them.
 *
 * Pointers. Tensors and the workspace must be 16-byte aligned (cudaMalloc gives 256); the fp32
 * per-row / per-column arrays 4-byte aligned. Outputs may not overlap each other or the inputs,
 * except where stated.
 *
 * Shapes. N in [0, 2^31 - 1] (N = 0 does nothing), C in [1, 2^31 - 1]. Every C is served: rows
 * whose C is a multiple of 8 (bf16) or 4 (fp32), up to 16384 (bf16) / 8192 (fp32) elements, are
 * held in registers and moved in 16-byte vectors; other rows take a slower scalar path with the
 * same results up to rounding.
 *
 * Execution. Kernels are queued on `stream` and return at once; nothing is allocated and the host
 * never waits. Every argument is checked first: a call that returns KILN_STATUS_INVALID_ARGUMENT
 * (kiln_last_error() says which argument and why) has launched and written nothing.
 *
 * Determinism. Every output is bitwise the same from run to run on the same device and build: the
 * backward reduces dgamma / dbeta through per-block fp32 partials in the caller's workspace and a
 * finalize kernel that sums them in a fixed order, with no floating-point atomics. */
#ifndef KILN_LAYERNORM_H_
#define KILN_LAYERNORM_H_

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y = LayerNorm(x) (formula above), saving mean and rstd for the backward.
 *   y      out  (N, C) dtype
 *   mean   out  (N) fp32, or NULL when not needed (inference)
 *   rstd   out  (N) fp32, or NULL when not needed
 *   x      in   (N, C) dtype; y may be x (in place)
 *   gamma  in   (C) dtype
 *   beta   in   (C) dtype
 *   eps    finite, > 0 (GPT-2: 1e-5) */
KILN_API kiln_status_t kiln_layernorm_fwd(void* y, float* mean, float* rstd, const void* x,
                                          const void* gamma, const void* beta, int64_t N, int64_t C,
                                          double eps, kiln_dtype_t dtype, cudaStream_t stream);

/* residual = a + b (rounded to dtype), y = LayerNorm(residual) in one pass over memory. The
 * statistics are those of the rounded residual, which the backward reads back as its x.
 *   residual  out  (N, C) dtype; may be the same array as a or as b (the residual stream updated
 *                  in place), but no other overlap
 *   y         out  (N, C) dtype
 *   mean      out  (N) fp32 or NULL;   rstd  out  (N) fp32 or NULL
 *   a, b      in   (N, C) dtype
 *   gamma     in   (C) dtype;   beta  in  (C) dtype;   eps  finite, > 0 */
KILN_API kiln_status_t kiln_residual_layernorm_fwd(void* residual, void* y, float* mean,
                                                   float* rstd, const void* a, const void* b,
                                                   const void* gamma, const void* beta, int64_t N,
                                                   int64_t C, double eps, kiln_dtype_t dtype,
                                                   cudaStream_t stream);

/* Bytes of workspace kiln_layernorm_bwd needs for (N, C), whatever the dtype and device (0 when
 * N = 0). Plan it once with the activations; it may be reused by every layer's backward that
 * runs on the same stream. */
KILN_API kiln_status_t kiln_layernorm_bwd_workspace_size(int64_t N, int64_t C, size_t* bytes);

/* The backward of kiln_layernorm_fwd. With xhat = (x - mean) * rstd and g = dy * gamma:
 *   dx     += rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))   (accumulates: dx is the
 *             residual stream's gradient, so the residual branch's add is fused here)
 *   dgamma += sum_n dy * xhat,   dbeta += sum_n dy                (accumulate, fp32)
 *   dx         in/out (N, C) dtype
 *   dgamma     in/out (C) fp32;   dbeta  in/out (C) fp32
 *   dy         in     (N, C) dtype
 *   x          in     (N, C) dtype (the forward's input, or its residual output)
 *   gamma      in     (C) dtype
 *   mean, rstd in     (N) fp32, as saved by the forward
 *   workspace  scratch of at least kiln_layernorm_bwd_workspace_size(N, C) bytes (may be NULL
 *              when that is 0); its contents on entry do not matter and on exit are undefined */
KILN_API kiln_status_t kiln_layernorm_bwd(void* dx, float* dgamma, float* dbeta, const void* dy,
                                          const void* x, const void* gamma, const float* mean,
                                          const float* rstd, int64_t N, int64_t C, void* workspace,
                                          size_t workspace_bytes, kiln_dtype_t dtype,
                                          cudaStream_t stream);

#ifdef __cplusplus
} /* extern "C" */

#include "kiln/error.hpp"

namespace kiln {

// The C entries above, throwing kiln::Error on failure.
inline void layernorm_fwd(void* y, float* mean, float* rstd, const void* x, const void* gamma,
                          const void* beta, int64_t N, int64_t C, double eps, kiln_dtype_t dtype,
                          cudaStream_t stream) {
  check(kiln_layernorm_fwd(y, mean, rstd, x, gamma, beta, N, C, eps, dtype, stream));
}
inline void residual_layernorm_fwd(void* residual, void* y, float* mean, float* rstd, const void* a,
                                   const void* b, const void* gamma, const void* beta, int64_t N,
                                   int64_t C, double eps, kiln_dtype_t dtype, cudaStream_t stream) {
  check(kiln_residual_layernorm_fwd(residual, y, mean, rstd, a, b, gamma, beta, N, C, eps, dtype,
                                    stream));
}
inline size_t layernorm_bwd_workspace_size(int64_t N, int64_t C) {
  size_t bytes = 0;
  check(kiln_layernorm_bwd_workspace_size(N, C, &bytes));
  return bytes;
}
inline void layernorm_bwd(void* dx, float* dgamma, float* dbeta, const void* dy, const void* x,
                          const void* gamma, const float* mean, const float* rstd, int64_t N,
                          int64_t C, void* workspace, size_t workspace_bytes, kiln_dtype_t dtype,
                          cudaStream_t stream) {
  check(kiln_layernorm_bwd(dx, dgamma, dbeta, dy, x, gamma, mean, rstd, N, C, workspace,
                           workspace_bytes, dtype, stream));
}

}  // namespace kiln
#endif /* __cplusplus */

#endif /* KILN_LAYERNORM_H_ */
