// Internal: launchers of the runtime's own kernels (runtime/cuda/runtime_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kiln/backend.hpp"

namespace kiln::impl {

// dst (n) bf16 = round-to-nearest-even(src (n) fp32).
void launch_f32_to_bf16(void* dst, const float* src, int64_t n, cudaStream_t stream);
// *sum += scale * sum(losses (n)), in double, in a fixed order (one block).
void launch_accumulate_loss(double* sum, const float* losses, int64_t n, double scale,
                            cudaStream_t stream);
// stats[kStatGradNorm] = norm_out[0]; stats[kStatSkipped] = 1 when the norm or the loss
// (stats[kStatLoss]) is not finite, else 0; *skipped = the same as an int (device memory).
void launch_finalize_stats(double* stats, const float* norm_out, int32_t* skipped,
                           cudaStream_t stream);
// ZeRO-1: stats[kStatGradNorm] = norm_out[0]^2 in double, a shard's share of the squared norm.
void launch_sum_squares_from_norm(double* stats, const float* norm_out, cudaStream_t stream);
// ZeRO-1, after the shards' sums of squares were summed into stats[kStatGradNorm]: norm_out[0] =
// the norm and norm_out[1] = the clip scale, by kiln_global_norm's formulas.
void launch_norm_from_sum_squares(float* norm_out, const double* stats, float max_norm,
                                  cudaStream_t stream);

}  // namespace kiln::impl
