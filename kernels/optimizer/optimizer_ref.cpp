#include "kernels/optimizer/optimizer_ref.hpp"

#include <cmath>

namespace kiln::ref {

template <typename T, typename Acc>
void adamw_ref(T* param, T* m, T* v, const T* grad, std::int64_t n, const AdamWConfig& config,
               std::int64_t step, double grad_scale, bool decay) {
  const Acc beta1 = Acc(config.beta1), beta2 = Acc(config.beta2);
  const Acc lr = Acc(config.lr), eps = Acc(config.eps), wd = Acc(config.weight_decay);
  const Acc scale = Acc(grad_scale);
  // Bias corrections in double whatever Acc is: they are per-step host scalars in the kernels.
  const Acc bc1 = Acc(1.0 - std::pow(config.beta1, double(step)));
  const Acc bc2 = Acc(1.0 - std::pow(config.beta2, double(step)));
  for (std::int64_t i = 0; i < n; ++i) {
    const Acc g = Acc(grad[i]) * scale;
    const Acc mi = beta1 * Acc(m[i]) + (Acc(1) - beta1) * g;
    const Acc vi = beta2 * Acc(v[i]) + (Acc(1) - beta2) * g * g;
    const Acc m_hat = mi / bc1;
    const Acc v_hat = vi / bc2;
    const Acc p = Acc(param[i]);
    Acc update = m_hat / (std::sqrt(v_hat) + eps);
    if (decay) update += wd * p;
    param[i] = T(p - lr * update);
    m[i] = T(mi);
    v[i] = T(vi);
  }
}

template <typename T>
double global_norm_ref(const T* const* tensors, const std::int64_t* sizes, int count) {
  double sum = 0;
  for (int t = 0; t < count; ++t)
    for (std::int64_t i = 0; i < sizes[t]; ++i)
      sum += double(tensors[t][i]) * double(tensors[t][i]);
  return std::sqrt(sum);
}

double clip_scale_ref(double norm, double max_norm) {
  if (!(max_norm > 0)) return 1.0;
  const double c = max_norm / (norm + 1e-6);
  return std::isnan(c) || c < 1.0 ? c : 1.0;
}

template void adamw_ref<float, double>(float*, float*, float*, const float*, std::int64_t,
                                       const AdamWConfig&, std::int64_t, double, bool);
template void adamw_ref<double, double>(double*, double*, double*, const double*, std::int64_t,
                                        const AdamWConfig&, std::int64_t, double, bool);
// The plain same-precision computation (fp32 op by op) of the GPU tests' tolerance rule.
template void adamw_ref<float, float>(float*, float*, float*, const float*, std::int64_t,
                                      const AdamWConfig&, std::int64_t, double, bool);
template double global_norm_ref<float>(const float* const*, const std::int64_t*, int);
template double global_norm_ref<double>(const double* const*, const std::int64_t*, int);

}  // namespace kiln::ref
