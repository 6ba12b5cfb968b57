// CPU references of the optimizer ops: AdamW, the global gradient norm and the clip scale. The
// spec the CUDA kernels are tested against and what the CPU backend runs. Plain C++, double.
#pragma once

#include <cstdint>

namespace kiln::ref {

struct AdamWConfig {
  double lr, beta1, beta2, eps, weight_decay;
};

// One AdamW step (Loshchilov & Hutter, as torch.optim.AdamW) over n elements, in place:
//   g     = grad * grad_scale                       (grad_scale: the clip scale, 1 for none)
//   m     = beta1 * m + (1 - beta1) * g
//   v     = beta2 * v + (1 - beta2) * g^2
//   m_hat = m / (1 - beta1^step),  v_hat = v / (1 - beta2^step)   (step is 1-based)
//   param = param - lr * (m_hat / (sqrt(v_hat) + eps) + (decay ? weight_decay * param : 0))
// The decay term uses param before the step (decoupled weight decay). Computed in Acc (double
// by default; float gives the plain same-precision baseline of the GPU tests).
template <typename T, typename Acc = double>
void adamw_ref(T* param,       // (n) in/out: the master weights
               T* m,           // (n) in/out: first moment
               T* v,           // (n) in/out: second moment
               const T* grad,  // (n)
               std::int64_t n, const AdamWConfig& config, std::int64_t step, double grad_scale,
               bool decay);

// The L2 norm of all elements of all `count` tensors (tensors[i] has sizes[i] elements; a size
// may be 0), summed in double.
template <typename T>
double global_norm_ref(const T* const* tensors, const std::int64_t* sizes, int count);

// The gradient clip scale applied before AdamW, as torch.nn.utils.clip_grad_norm_:
//   max_norm > 0: min(1, max_norm / (norm + 1e-6)), NaN when norm is NaN (it propagates);
//   max_norm <= 0: 1 (no clipping).
double clip_scale_ref(double norm, double max_norm);

}  // namespace kiln::ref
