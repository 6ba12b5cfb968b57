/* kiln RMSNorm over the last dimension of a row-major (N, C) tensor: forward and backward.
 *
 *   rstd[n] = 1 / sqrt(sum_c x[n,c]^2 / C + eps),   y[n,c] = x[n,c] * rstd[n] * gamma[c]
 *
 * Types, pointers, shapes, execution and determinism as for LayerNorm (kiln/layernorm.h): x, y,
 * gamma, dy, dx share `dtype` (bf16 storage with fp32 arithmetic, or fp32); rstd and dgamma are
 * always fp32; tensors and workspace 16-byte aligned, fp32 arrays 4-byte aligned; N in
 * [0, 2^31 - 1], C in [1, 2^31 - 1], every C served; asynchronous on `stream`, arguments checked
 * before any launch; outputs bitwise reproducible run to run (no floating-point atomics). */
#ifndef KILN_RMSNORM_H_
#define KILN_RMSNORM_H_

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y = RMSNorm(x), saving rstd for the backward.
 *   y      out  (N, C) dtype
 *   rstd   out  (N) fp32, or NULL when not needed; may not overlap x or y
 *   x      in   (N, C) dtype; y may be x (in place)
 *   gamma  in   (C) dtype
 *   eps    finite, > 0 */
KILN_API kiln_status_t kiln_rmsnorm_fwd(void* y, float* rstd, const void* x, const void* gamma,
                                        int64_t N, int64_t C, double eps, kiln_dtype_t dtype,
                                        cudaStream_t stream);

/* residual = a + b (rounded to dtype), y = RMSNorm(residual) in one pass over memory (the pre-norm
 * residual add of a Llama block, as kiln_residual_layernorm_fwd for LayerNorm). rstd is that of
 * the rounded residual, which the backward reads back as its x.
 *   residual  out  (N, C) dtype; may be the same array as a or as b (the residual stream updated
 *                  in place), but no other overlap
 *   y         out  (N, C) dtype
 *   rstd      out  (N) fp32, or NULL when not needed; may not overlap residual, y, a or b
 *   a, b      in   (N, C) dtype
 *   gamma     in   (C) dtype;   eps  finite, > 0 */
KILN_API kiln_status_t kiln_residual_rmsnorm_fwd(void* residual, void* y, float* rstd,
                                                 const void* a, const void* b, const void* gamma,
                                                 int64_t N, int64_t C, double eps,
                                                 kiln_dtype_t dtype, cudaStream_t stream);

/* Bytes of workspace kiln_rmsnorm_bwd needs for (N, C), whatever the dtype and device. */
KILN_API kiln_status_t kiln_rmsnorm_bwd_workspace_size(int64_t N, int64_t C, size_t* bytes);

/* The backward of kiln_rmsnorm_fwd. With xhat = x * rstd and g = dy * gamma:
 *   dx     += rstd * (g - xhat * mean_c(g * xhat))   (accumulates, as in LayerNorm)
 *   dgamma += sum_n dy * xhat                        (accumulates, fp32)
 *   dx         in/out (N, C) dtype
 *   dgamma     in/out (C) fp32
 *   dy, x      in     (N, C) dtype
 *   gamma      in     (C) dtype
 *   rstd       in     (N) fp32, as saved by the forward
 *   workspace  scratch of at least kiln_rmsnorm_bwd_workspace_size(N, C) bytes */
KILN_API kiln_status_t kiln_rmsnorm_bwd(void* dx, float* dgamma, const void* dy, const void* x,
                                        const void* gamma, const float* rstd, int64_t N, int64_t C,
                                        void* workspace, size_t workspace_bytes, kiln_dtype_t dtype,
                                        cudaStream_t stream);

#ifdef __cplusplus
} /* extern "C" */

#include "kiln/error.hpp"

namespace kiln {

inline void rmsnorm_fwd(void* y, float* rstd, const void* x, const void* gamma, int64_t N,
                        int64_t C, double eps, kiln_dtype_t dtype, cudaStream_t stream) {
  check(kiln_rmsnorm_fwd(y, rstd, x, gamma, N, C, eps, dtype, stream));
}
inline void residual_rmsnorm_fwd(void* residual, void* y, float* rstd, const void* a, const void* b,
                                 const void* gamma, int64_t N, int64_t C, double eps,
                                 kiln_dtype_t dtype, cudaStream_t stream) {
  check(kiln_residual_rmsnorm_fwd(residual, y, rstd, a, b, gamma, N, C, eps, dtype, stream));
}
inline size_t rmsnorm_bwd_workspace_size(int64_t N, int64_t C) {
  size_t bytes = 0;
  check(kiln_rmsnorm_bwd_workspace_size(N, C, &bytes));
  return bytes;
}
inline void rmsnorm_bwd(void* dx, float* dgamma, const void* dy, const void* x, const void* gamma,
                        const float* rstd, int64_t N, int64_t C, void* workspace,
                        size_t workspace_bytes, kiln_dtype_t dtype, cudaStream_t stream) {
  check(kiln_rmsnorm_bwd(dx, dgamma, dy, x, gamma, rstd, N, C, workspace, workspace_bytes, dtype,
                         stream));
}

}  // namespace kiln
#endif /* __cplusplus */

#endif /* KILN_RMSNORM_H_ */
