/* kiln rotary position embedding (RoPE), Hugging Face's rotate-half convention, in place on Q and
 * K, forward and backward.
 *
 * For each (b, t, h) with position p = pos_offset + t and i in [0, HD/2):
 *   a = p * inv_freq[i];  x1 = x[i], x2 = x[i + HD/2]
 *   fwd: x[i] = x1 cos a - x2 sin a;   x[i + HD/2] = x2 cos a + x1 sin a
 *   bwd: the transpose (rotation by -a), applied in place to the gradient:
 *        dx[i] = d1 cos a + d2 sin a;  dx[i + HD/2] = d2 cos a - d1 sin a
 *
 * inv_freq[i] = theta^(-2i/HD), then (KILN_ROPE_SCALING_LLAMA3) Llama 3's frequency-band scaling
 * exactly as Hugging Face's _compute_llama3_parameters: with wavelen = 2 pi / inv_freq,
 * low_freq_wavelen = original_max_position / low_freq_factor and high_freq_wavelen =
 * original_max_position / high_freq_factor,
 *   wavelen > low_freq_wavelen:   inv_freq / factor
 *   wavelen < high_freq_wavelen:  inv_freq (kept)
 *   otherwise:                    (1 - s) inv_freq / factor + s inv_freq,
 *                                 s = (original_max_position / wavelen - low_freq_factor) /
 *                                     (high_freq_factor - low_freq_factor)
 *
 * Precision. inv_freq is computed in double on the host; the kernels use its fp32 rounding (what
 * kiln_rope_inv_freq returns). The angle is the fp32 product fp32(p) * inv_freq[i], as Hugging
 * Face computes it (positions and frequencies in fp32, autocast off); its sine and cosine are
 * within 1e-7 of exact for every such angle (a double-precision argument reduction, so the large
 * angles of positions near 10^5 and beyond stay accurate). Arithmetic in fp32 for both dtypes;
 * bf16 outputs rounded to nearest even.
 *
 * Types. x / dx is KILN_DTYPE_BF16 or KILN_DTYPE_F32, aligned to its element size. The fast path
 * (16-byte vectors, 8 bf16 or 4 fp32 elements) is taken when HD/2 is a multiple of the vector,
 * the pointer is 16-byte aligned and the strides in use (stride_b when B > 1, stride_t when T > 1)
 * are multiples of the vector; otherwise a scalar path gives the same results.
 *
 * Execution. Asynchronous on `stream`; arguments (shape, strides, alignment, config) are checked
 * before any launch; no allocation; deterministic (elementwise). */
#ifndef KILN_ROPE_H_
#define KILN_ROPE_H_

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_rope_scaling {
  KILN_ROPE_SCALING_NONE = 0,
  KILN_ROPE_SCALING_LLAMA3 = 1 /* Llama 3.1 / 3.2 frequency-band scaling */
} kiln_rope_scaling_t;

typedef struct kiln_rope_config {
  int64_t head_dim;            /* HD: even, 2..256 */
  double theta;                /* base: 10000 (Llama 2, TinyLlama), 500000 (Llama 3); finite, > 1 */
  kiln_rope_scaling_t scaling; /* the fields below are read only for KILN_ROPE_SCALING_LLAMA3 */
  double factor;               /* e.g. 32 (Llama 3.2) or 8 (Llama 3.1); finite, >= 1 */
  double low_freq_factor;      /* 1; finite, > 0 */
  double high_freq_factor;     /* 4; finite, > low_freq_factor */
  int64_t original_max_position; /* 8192; >= 1 */
} kiln_rope_config_t;

/* The fp32 frequencies the kernels use: inv_freq[i] for i in [0, HD/2) (formula above), computed
 * in double and rounded to fp32. Host function (no device, no stream).
 *   config    in   a valid configuration (checked)
 *   inv_freq  out  (HD/2) fp32, host memory */
KILN_API kiln_status_t kiln_rope_inv_freq(const kiln_rope_config_t* config, float* inv_freq);

/* Rotates x in place by the angles of its positions.
 *   x           in/out (B, T, H, HD) dtype: element (b,t,h,i) at
 *                      x[b*stride_b + t*stride_t + h*HD + i] (heads contiguous, HD = head_dim).
 *                      Packed QKV (B, T, NH + 2 NKV, HD) from the fused QKV GEMM: one call with
 *                      x = qkv, H = NH + NKV (q heads then k heads are adjacent),
 *                      stride_t = (NH + 2 NKV) * HD, stride_b = T * stride_t rotates Q and K at
 *                      once and leaves V untouched.
 *   B, T, H     in [0, 2^31 - 1] (any of them 0: nothing is done)
 *   stride_b    elements between batches: >= (T - 1) * stride_t + H * HD when B > 1
 *   stride_t    elements between tokens: >= H * HD when T > 1
 *   pos_offset  position of t = 0 (KV-cache decoding), >= 0, pos_offset + T <= 2^31 - 1
 *   config      in   valid configuration (read on the host during the call) */
KILN_API kiln_status_t kiln_rope_fwd(void* x, int64_t B, int64_t T, int64_t H, int64_t stride_b,
                                     int64_t stride_t, int64_t pos_offset,
                                     const kiln_rope_config_t* config, kiln_dtype_t dtype,
                                     cudaStream_t stream);

/* The backward of kiln_rope_fwd: dx = R(p)^T dx in place (the rotation by -a). Arguments as for
 * kiln_rope_fwd, with dx the gradient of the rotated tensor on entry and of its input on exit. */
KILN_API kiln_status_t kiln_rope_bwd(void* dx, int64_t B, int64_t T, int64_t H, int64_t stride_b,
                                     int64_t stride_t, int64_t pos_offset,
                                     const kiln_rope_config_t* config, kiln_dtype_t dtype,
                                     cudaStream_t stream);

#ifdef __cplusplus
} /* extern "C" */

#include "kiln/error.hpp"

namespace kiln {

// The C entries above, throwing kiln::Error on failure.
inline void rope_inv_freq(const kiln_rope_config_t& config, float* inv_freq) {
  check(kiln_rope_inv_freq(&config, inv_freq));
}
inline void rope_fwd(void* x, int64_t B, int64_t T, int64_t H, int64_t stride_b, int64_t stride_t,
                     int64_t pos_offset, const kiln_rope_config_t& config, kiln_dtype_t dtype,
                     cudaStream_t stream) {
  check(kiln_rope_fwd(x, B, T, H, stride_b, stride_t, pos_offset, &config, dtype, stream));
}
inline void rope_bwd(void* dx, int64_t B, int64_t T, int64_t H, int64_t stride_b, int64_t stride_t,
                     int64_t pos_offset, const kiln_rope_config_t& config, kiln_dtype_t dtype,
                     cudaStream_t stream) {
  check(kiln_rope_bwd(dx, B, T, H, stride_b, stride_t, pos_offset, &config, dtype, stream));
}

}  // namespace kiln
#endif /* __cplusplus */

#endif /* KILN_ROPE_H_ */
