#include "kernels/classifier/classifier_ref.hpp"

#include <cmath>
#include <limits>

namespace kiln::ref {

template <typename T, typename Acc>
void classifier_ref(T* losses, T* dlogits, const T* logits, const std::int32_t* targets,
                    std::int64_t N, std::int64_t V, std::int64_t Vp, double dloss,
                    std::int32_t ignore_index) {
  const Acc nan = std::numeric_limits<Acc>::quiet_NaN();
  for (std::int64_t r = 0; r < N; ++r) {
    const T* x = logits + r * Vp;
    T* dx = dlogits + r * Vp;
    const std::int32_t target = targets[r];
    if (target == ignore_index) {
      losses[r] = T(0);
      for (std::int64_t j = 0; j < Vp; ++j)
        dx[j] = T(0);
      continue;
    }
    const bool valid = target >= 0 && target < V;
    // The max skips NaN (as fmaxf does on the GPU); a NaN still reaches the sum below.
    Acc m = -std::numeric_limits<Acc>::infinity();
    for (std::int64_t j = 0; j < V; ++j)
      if (Acc(x[j]) > m) m = Acc(x[j]);
    Acc s = 0;
    for (std::int64_t j = 0; j < V; ++j)
      s += std::exp(Acc(x[j]) - m);
    const Acc lse = m + std::log(s);
    // Read before the loop below may overwrite it (in place).
    const Acc x_target = valid ? Acc(x[target]) : nan;
    const Acc scale = valid ? Acc(dloss) : nan;
    losses[r] = T(lse - x_target);
    for (std::int64_t j = 0; j < V; ++j) {
      const Acc p = std::exp(Acc(x[j]) - m) / s;
      dx[j] = T((p - (j == target ? Acc(1) : Acc(0))) * scale);
    }
    for (std::int64_t j = V; j < Vp; ++j)
      dx[j] = T(0);
  }
}

template <typename T>
double classifier_mean_loss_ref(const T* losses, const std::int32_t* targets, std::int64_t N,
                                std::int32_t ignore_index) {
  double sum = 0;
  std::int64_t count = 0;
  for (std::int64_t r = 0; r < N; ++r) {
    if (targets[r] == ignore_index) continue;
    sum += double(losses[r]);
    ++count;
  }
  return count ? sum / double(count) : 0.0;
}

template void classifier_ref<float, double>(float*, float*, const float*, const std::int32_t*,
                                            std::int64_t, std::int64_t, std::int64_t, double,
                                            std::int32_t);
template void classifier_ref<double, double>(double*, double*, const double*, const std::int32_t*,
                                             std::int64_t, std::int64_t, std::int64_t, double,
                                             std::int32_t);
// The plain same-precision computation (fp32 op by op) of the GPU tests' tolerance rule.
template void classifier_ref<float, float>(float*, float*, const float*, const std::int32_t*,
                                           std::int64_t, std::int64_t, std::int64_t, double,
                                           std::int32_t);
template double classifier_mean_loss_ref<float>(const float*, const std::int32_t*, std::int64_t,
                                                std::int32_t);
template double classifier_mean_loss_ref<double>(const double*, const std::int32_t*, std::int64_t,
                                                 std::int32_t);

}  // namespace kiln::ref
