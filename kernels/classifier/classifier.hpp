// Internal launchers of the fused classifier (arguments already checked by classifier.cpp).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kiln::impl {

// See kiln/classifier.h. N >= 1; 1 <= V <= Vp; logits/dlogits 16-byte aligned.
void classifier_fwd_bwd(float* losses,                // (N)
                        __nv_bfloat16* dlogits,       // (N, Vp), may equal logits
                        const __nv_bfloat16* logits,  // (N, Vp)
                        const std::int32_t* targets,  // (N)
                        std::int64_t N, std::int64_t V, std::int64_t Vp, float dloss,
                        std::int32_t ignore_index, cudaStream_t stream);

// mean[0] = mean of losses over the rows not ignored (0 if none). N >= 0.
void classifier_mean_loss(float* mean,                  // (1)
                          const float* losses,          // (N)
                          const std::int32_t* targets,  // (N)
                          std::int64_t N, std::int32_t ignore_index, cudaStream_t stream);

}  // namespace kiln::impl
