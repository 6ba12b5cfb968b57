/* kiln fused classifier: softmax, cross-entropy loss and its gradient in one pass over the logits,
 * writing the gradient over the logits in place, so no probability tensor ever exists in memory.
 * Plain C; compiles with any C or C++ compiler given the CUDA toolkit's headers. The C++ wrappers
 * at the end throw kiln::Error.
 *
 * Formula, for each row r of logits (N, Vp) with V real classes (columns V..Vp-1 are padding, e.g.
 * GPT-2's 50257 classes padded to 50304, and are never read):
 *   losses[r]     = logsumexp(logits[r, 0:V]) - logits[r, targets[r]]                  (fp32)
 *   dlogits[r, j] = (softmax(logits[r, 0:V])[j] - (j == targets[r])) * dloss    for j < V
 *   dlogits[r, j] = 0                                                           for V <= j < Vp
 * Rows whose target is ignore_index get loss 0 and an all-zero gradient row (and are not read).
 * A target outside [0, V) that is not ignore_index is not read either: that row's loss and
 * gradient over [0, V) are NaN, so a bad id shows in the loss instead of corrupting memory. The
 * runtime is expected to validate targets on the host (where the data loader produced them)
 * before uploading. NaN and +Inf logits make their row's loss and gradient NaN; -Inf logits are
 * masked classes (probability 0).
 *
 * The mean loss of PyTorch's F.cross_entropy(reduction="mean") is
 *   sum(losses[r] : targets[r] != ignore_index) / count(targets[r] != ignore_index),
 * which kiln_classifier_mean_loss computes on the device; for its gradient pass dloss = 1 / count
 * (the count is known on the host, from the targets it uploaded).
 *
 * Memory traffic: each logit is read from memory once and each gradient written once (4 bytes per
 * element for bf16, plus 8 bytes per row): the row is staged in shared memory when it fits (up to
 * about 110K classes on H100, 80K on A100 ... the whole opt-in shared memory of a block); beyond,
 * the part that does not fit is read a second time, most of it from the L2 cache.
 *
 * Determinism: bitwise-identical results run to run on the same device (fixed reduction orders,
 * no atomics). Stream: asynchronous on `stream`; no host synchronization, no allocation. */
#ifndef KILN_CLASSIFIER_H_
#define KILN_CLASSIFIER_H_

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Loss and gradient of the fused classifier (formula above).
 *   losses    out  float  (N)          4-byte aligned
 *   dlogits   out  dtype  (N, Vp)      16-byte aligned; may equal logits (in place) but may not
 *                                      otherwise overlap it
 *   logits    in   dtype  (N, Vp)      16-byte aligned, row stride Vp elements
 *   targets   in   int32  (N)          class ids in [0, V), or ignore_index
 *   N >= 0 (< 2^31), 1 <= V <= Vp < 2^31 - 64; dloss any float (usually 1 / count);
 *   dtype: KILN_DTYPE_BF16 (the only one served; F32 gives KILN_STATUS_NOT_SUPPORTED).
 * Vp need not be a multiple of 8: rows that do not start on 16 bytes are handled (at some cost
 * in speed); pad to a multiple of 8 for the fast path. */
KILN_API kiln_status_t kiln_classifier_fwd_bwd(float* losses, void* dlogits, const void* logits,
                                               const int32_t* targets, int64_t N, int64_t V,
                                               int64_t Vp, float dloss, int32_t ignore_index,
                                               kiln_dtype_t dtype, cudaStream_t stream);

/* mean[0] = sum(losses[r] : targets[r] != ignore_index) / count(targets[r] != ignore_index), or 0
 * when that count is 0 (PyTorch gives NaN). Summed in double by one thread block in a fixed order:
 * deterministic, and the same on every device.
 *   mean      out  float  (1)
 *   losses    in   float  (N)
 *   targets   in   int32  (N)
 *   N >= 0 (< 2^31). */
KILN_API kiln_status_t kiln_classifier_mean_loss(float* mean, const float* losses,
                                                 const int32_t* targets, int64_t N,
                                                 int32_t ignore_index, cudaStream_t stream);

#ifdef __cplusplus
} /* extern "C" */

#include "kiln/error.hpp"

namespace kiln {

inline void classifier_fwd_bwd(float* losses, void* dlogits, const void* logits,
                               const int32_t* targets, int64_t N, int64_t V, int64_t Vp,
                               float dloss, int32_t ignore_index, cudaStream_t stream,
                               kiln_dtype_t dtype = KILN_DTYPE_BF16) {
  check(kiln_classifier_fwd_bwd(losses, dlogits, logits, targets, N, V, Vp, dloss, ignore_index,
                                dtype, stream));
}

inline void classifier_mean_loss(float* mean, const float* losses, const int32_t* targets,
                                 int64_t N, int32_t ignore_index, cudaStream_t stream) {
  check(kiln_classifier_mean_loss(mean, losses, targets, N, ignore_index, stream));
}

}  // namespace kiln
#endif

#endif /* KILN_CLASSIFIER_H_ */
