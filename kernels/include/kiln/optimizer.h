/* kiln optimizer ops: a fused multi-tensor AdamW step and the global gradient norm with its clip
 * scale, both over lists of tensors in one launch, neither synchronizing with the host. Plain C;
 * compiles with any C or C++ compiler given the CUDA toolkit's headers. The C++ wrappers at the end
 * throw kiln::Error.
 *
 * Tensor lists. Each op takes a table of tensors that lives in device memory, built once when the
 * parameters are planned (their addresses do not change between steps) and reused every step:
 *   1. fill an array of kiln_adamw_tensor_t (or kiln_norm_tensor_t) on the host;
 *   2. call kiln_adamw_prepare (kiln_global_norm_prepare): it validates every entry (null or
 *      misaligned pointers, negative sizes) and numbers the entries' chunks of
 *      KILN_MULTI_TENSOR_CHUNK elements, writing chunk_begin and the total;
 *   3. copy the array to device memory (cudaMemcpy) and pass that copy, its count and the total.
 * The launch itself cannot re-check entries that live on the device: pass a table prepared by step
 * 2 and not changed since. A block works on one chunk at a time and finds the chunk's tensor by a
 * binary search over chunk_begin, so one launch serves any number of tensors of any sizes.
 *
 * Step order in a training step (all on one stream, no host synchronization):
 *   kiln_global_norm(norm_out, grads, ..., max_norm)    -> norm_out[0] = norm, [1] = clip scale
 *   kiln_adamw_step(params, ..., grad_scale = norm_out + 1)   (config.skip: optional verdict)
 *
 * Determinism: both ops are bitwise reproducible, and independent of the device's SM count: the
 * norm sums fixed chunks (one block each, fixed order) and then the chunk partials in index order;
 * AdamW is elementwise. */
#ifndef KILN_OPTIMIZER_H_
#define KILN_OPTIMIZER_H_

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Elements per chunk of the multi-tensor ops (a multiple of 8). */
#define KILN_MULTI_TENSOR_CHUNK 16384

/* One parameter tensor of an AdamW step. */
typedef struct kiln_adamw_tensor {
  float* master;       /* (n) fp32 master weights, updated in place; 16-byte aligned */
  float* m;            /* (n) fp32 first moment, in/out; 16-byte aligned */
  float* v;            /* (n) fp32 second moment, in/out; 16-byte aligned */
  const float* grad;   /* (n) fp32 gradient, read; 16-byte aligned */
  void* param;         /* (n) bf16 copy of the updated master weights, written; 8-byte aligned;
                          NULL for none */
  int64_t n;           /* elements, >= 0 */
  int64_t chunk_begin; /* written by kiln_adamw_prepare */
  int32_t decay;       /* nonzero: weight decay applies to this tensor (matrices, usually) */
  int32_t reserved;    /* set to 0 */
} kiln_adamw_tensor_t;

/* Hyperparameters of one AdamW step (torch.optim.AdamW's meaning). */
typedef struct kiln_adamw_config {
  float lr;                    /* >= 0 */
  float beta1, beta2;          /* in [0, 1) */
  float eps;                   /* > 0 */
  float weight_decay;          /* >= 0; applied to tensors with decay != 0 only */
  int32_t stochastic_rounding; /* nonzero: the bf16 copies are rounded stochastically */
  int64_t step;                /* 1-based step count, for the bias corrections 1 - beta^step */
  uint64_t seed;       /* stochastic rounding: the random bits are a hash of (seed, step, tensor
                          index, element index), so a run repeats bit for bit with the same seed */
  const int32_t* skip; /* device int32 (1), 4-byte aligned, or NULL. Read on the device: when
                          nonzero the step changes nothing (master, moments and copies keep their
                          bits). A trainer writes it from the loss and the norm on the device (a
                          non-finite value skips the step), so deciding needs no host round trip
                          and the whole update can be captured in a CUDA graph. */
} kiln_adamw_config_t;

/* Validates the host array `tensors` (count >= 1 entries) and fills each chunk_begin; writes the
 * total number of chunks to *total_chunks. Host only: no device needed. */
KILN_API kiln_status_t kiln_adamw_prepare(kiln_adamw_tensor_t* tensors, int count,
                                          int64_t* total_chunks);

/* One AdamW step over every tensor of the device table (decoupled weight decay, bias correction):
 *   g      = grad * scale,   scale = grad_scale ? *grad_scale : 1   (read on the device)
 *   m      = beta1 * m + (1 - beta1) * g
 *   v      = beta2 * v + (1 - beta2) * g^2
 *   master = master - lr * (m / (1 - beta1^step) / (sqrt(v / (1 - beta2^step)) + eps)
 *                           + (decay ? weight_decay * master : 0))
 *   param  = bf16(master): round to nearest even, or stochastic rounding (config) which is
 *            unbiased: E[param] = master. Non-finite values round to nearest even.
 * in fp32. NaN and Inf propagate (a NaN gradient makes its element's state NaN; a NaN scale every
 * element's).
 *   tensors      device table of `count` entries prepared by kiln_adamw_prepare, 8-byte aligned
 *   total_chunks as written by kiln_adamw_prepare
 *   config       host struct, read during the call
 *   grad_scale   device float (1) or NULL; e.g. the clip scale kiln_global_norm writes */
KILN_API kiln_status_t kiln_adamw_step(const kiln_adamw_tensor_t* tensors, int count,
                                       int64_t total_chunks, const kiln_adamw_config_t* config,
                                       const float* grad_scale, cudaStream_t stream);

/* One fp32 tensor of a global norm. */
typedef struct kiln_norm_tensor {
  const float* data;   /* (n) 16-byte aligned */
  int64_t n;           /* elements, >= 0 */
  int64_t chunk_begin; /* written by kiln_global_norm_prepare */
} kiln_norm_tensor_t;

/* As kiln_adamw_prepare, for a norm table. */
KILN_API kiln_status_t kiln_global_norm_prepare(kiln_norm_tensor_t* tensors, int count,
                                                int64_t* total_chunks);

/* Workspace of kiln_global_norm: one float per chunk (rounded up to 256 bytes). */
KILN_API kiln_status_t kiln_global_norm_workspace_size(int64_t total_chunks, size_t* bytes);

/* The L2 norm of every element of every tensor, and the clip scale of torch's
 * clip_grad_norm_(max_norm):
 *   out[0] = norm = sqrt(sum of squares)
 *   out[1] = max_norm > 0 ? min(1, max_norm / (norm + 1e-6)) : 1   (NaN when the norm is NaN)
 * Two stages: each chunk's sum of squares (fp32, one block, fixed order) into the workspace, then
 * one block sums the chunk partials in index order in double. The result stays on the device.
 *   out          device float (2), 8-byte aligned
 *   tensors      device table of `count` entries prepared by kiln_global_norm_prepare
 *   workspace    kiln_global_norm_workspace_size(total_chunks) bytes, 16-byte aligned */
KILN_API kiln_status_t kiln_global_norm(float* out, const kiln_norm_tensor_t* tensors, int count,
                                        int64_t total_chunks, float max_norm, void* workspace,
                                        size_t workspace_bytes, cudaStream_t stream);

#ifdef __cplusplus
} /* extern "C" */

#include "kiln/error.hpp"

namespace kiln {

inline int64_t adamw_prepare(kiln_adamw_tensor_t* tensors, int count) {
  int64_t total = 0;
  check(kiln_adamw_prepare(tensors, count, &total));
  return total;
}

inline void adamw_step(const kiln_adamw_tensor_t* tensors, int count, int64_t total_chunks,
                       const kiln_adamw_config_t& config, const float* grad_scale,
                       cudaStream_t stream) {
  check(kiln_adamw_step(tensors, count, total_chunks, &config, grad_scale, stream));
}

inline int64_t global_norm_prepare(kiln_norm_tensor_t* tensors, int count) {
  int64_t total = 0;
  check(kiln_global_norm_prepare(tensors, count, &total));
  return total;
}

inline size_t global_norm_workspace_size(int64_t total_chunks) {
  size_t bytes = 0;
  check(kiln_global_norm_workspace_size(total_chunks, &bytes));
  return bytes;
}

inline void global_norm(float* out, const kiln_norm_tensor_t* tensors, int count,
                        int64_t total_chunks, float max_norm, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream) {
  check(kiln_global_norm(out, tensors, count, total_chunks, max_norm, workspace, workspace_bytes,
                         stream));
}

}  // namespace kiln
#endif

#endif /* KILN_OPTIMIZER_H_ */
