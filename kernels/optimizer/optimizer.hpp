// Internal launchers of the optimizer ops (arguments already checked by optimizer.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kiln/optimizer.h"

namespace kiln::impl {

// Scalars of one AdamW step, derived on the host from kiln_adamw_config_t.
struct AdamWScalars {
  float lr, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay;
  float inv_bias_correction1;  // 1 / (1 - beta1^step)
  float inv_bias_correction2;  // 1 / (1 - beta2^step)
  int stochastic_rounding;
  std::uint64_t seed, step;
  const std::int32_t* skip;  // device (1) or null: nonzero leaves every tensor untouched
};

AdamWScalars adamw_scalars(const kiln_adamw_config_t& config);

void adamw_step(const kiln_adamw_tensor_t* tensors,  // device (count)
                int count, std::int64_t total_chunks, const AdamWScalars& scalars,
                const float* grad_scale,  // device (1) or null
                cudaStream_t stream);

void global_norm(float* out,                         // device (2): norm, clip scale
                 const kiln_norm_tensor_t* tensors,  // device (count)
                 int count, std::int64_t total_chunks, float max_norm,
                 float* partials,  // device (total_chunks)
                 cudaStream_t stream);

}  // namespace kiln::impl
