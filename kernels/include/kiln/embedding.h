/* kiln token + position embedding (GPT-2's wte + wpe). Plain C; compiles with any C or C++
 * compiler given the CUDA toolkit's headers. The C++ wrappers at the end throw kiln::Error.
 *
 * Forward:  out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :]   (bf16, summed in fp32, rounded to
 *           nearest even)
 * Backward: dwte[v, :] += sum over (b, t) with tokens[b, t] == v of dout[b, t, :]
 *           dwpe[t, :] += sum over b of dout[b, t, :]
 * Without a position table (rotary models): pass wpe = NULL to the forward (out is the token's
 * row, bit for bit) and dwpe = NULL to the backward (only dwte is updated); maxT is then not read.
 * The parameter gradients are fp32 and accumulate (+=), as every parameter gradient in kiln: the
 * runtime keeps fp32 gradients for parameters (so that micro-steps accumulate without bf16
 * rounding) and zeroes them once per optimizer step.
 *
 * Token ids. An id outside [0, V) never makes these kernels touch memory out of bounds: the
 * forward writes a row of NaN for it (so it shows in the loss) and the backward leaves dwte alone
 * for it (dwpe still receives its position's gradient). The runtime is expected to validate ids on
 * the host, where its data loader produced them, before uploading: the kernels' handling only
 * contains the damage of a bad id, it does not report it.
 *
 * Determinism: both directions are bitwise reproducible run to run. The backward does not use
 * float atomics: it sorts the token occurrences by id (a stable radix sort, CUB's, on the device)
 * so that each vocabulary row's occurrences form one run; one thread block owns each run and sums
 * its rows in increasing position order, in fp32, before adding the sum to dwte once. dwpe is
 * summed per position over b in order. The sort needs workspace: query it with
 * kiln_embedding_bwd_workspace_size.
 *
 * Stream: asynchronous on `stream`; no host synchronization, no allocation. */
#ifndef KILN_EMBEDDING_H_
#define KILN_EMBEDDING_H_

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Forward.
 *   out      out  dtype  (B, T, C)     16-byte aligned
 *   tokens   in   int32  (B, T)        ids in [0, V) (see above)
 *   wte      in   dtype  (V, C)        16-byte aligned
 *   wpe      in   dtype  (maxT, C)     16-byte aligned; rows 0..T-1 are read; or NULL: no
 *                                      position table, out = wte[tokens], maxT not read
 *   B, T >= 0 with B * T < 2^31; 1 <= T <= maxT when B * T > 0 and wpe is given; C > 0 a
 *   multiple of 8 (16-byte vectors); V >= 1; dtype: KILN_DTYPE_BF16 (F32 gives
 *   KILN_STATUS_NOT_SUPPORTED). */
KILN_API kiln_status_t kiln_embedding_fwd(void* out, const int32_t* tokens, const void* wte,
                                          const void* wpe, int64_t B, int64_t T, int64_t C,
                                          int64_t V, int64_t maxT, kiln_dtype_t dtype,
                                          cudaStream_t stream);

/* The workspace kiln_embedding_bwd needs for B * T tokens and a vocabulary of V: four int32
 * arrays of B * T plus the radix sort's temporary storage, whose size the sort's tuning for the
 * current device decides. So this query needs a device: without one it fails with
 * KILN_STATUS_NO_DEVICE. Plan it once, on the device that will run the op. */
KILN_API kiln_status_t kiln_embedding_bwd_workspace_size(int64_t B, int64_t T, int64_t V,
                                                         size_t* bytes);

/* Backward (accumulates into dwte and dwpe).
 *   dwte       in/out  float  (V, C)       16-byte aligned
 *   dwpe       in/out  float  (maxT, C)    16-byte aligned; rows 0..T-1 are updated; or NULL:
 *                                         no position table (maxT not read)
 *   dout       in      dtype  (B, T, C)    16-byte aligned
 *   tokens     in      int32  (B, T)
 *   workspace          at least kiln_embedding_bwd_workspace_size(B, T, V) bytes, 256-byte
 *                      aligned; its contents are scratch
 *   Shapes as for the forward; dtype (of dout): KILN_DTYPE_BF16. dwte and dwpe must not overlap. */
KILN_API kiln_status_t kiln_embedding_bwd(float* dwte, float* dwpe, const void* dout,
                                          const int32_t* tokens, int64_t B, int64_t T, int64_t C,
                                          int64_t V, int64_t maxT, void* workspace,
                                          size_t workspace_bytes, kiln_dtype_t dtype,
                                          cudaStream_t stream);

#ifdef __cplusplus
} /* extern "C" */

#include "kiln/error.hpp"

namespace kiln {

inline void embedding_fwd(void* out, const int32_t* tokens, const void* wte, const void* wpe,
                          int64_t B, int64_t T, int64_t C, int64_t V, int64_t maxT,
                          cudaStream_t stream, kiln_dtype_t dtype = KILN_DTYPE_BF16) {
  check(kiln_embedding_fwd(out, tokens, wte, wpe, B, T, C, V, maxT, dtype, stream));
}

inline size_t embedding_bwd_workspace_size(int64_t B, int64_t T, int64_t V) {
  size_t bytes = 0;
  check(kiln_embedding_bwd_workspace_size(B, T, V, &bytes));
  return bytes;
}

inline void embedding_bwd(float* dwte, float* dwpe, const void* dout, const int32_t* tokens,
                          int64_t B, int64_t T, int64_t C, int64_t V, int64_t maxT, void* workspace,
                          size_t workspace_bytes, cudaStream_t stream,
                          kiln_dtype_t dtype = KILN_DTYPE_BF16) {
  check(kiln_embedding_bwd(dwte, dwpe, dout, tokens, B, T, C, V, maxT, workspace, workspace_bytes,
                           dtype, stream));
}

}  // namespace kiln
#endif

#endif /* KILN_EMBEDDING_H_ */
