#include "kernels/softmax/softmax_ref.hpp"

#include <cmath>
#include <limits>

namespace kiln::ref {

template <typename T, typename Acc>
void softmax_fwd_ref(T* y, const T* x, std::int64_t N, std::int64_t C, double scale, bool causal) {
  const Acc neg_inf = -std::numeric_limits<Acc>::infinity();
  for (std::int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    T* yr = y + n * C;
    const std::int64_t last = causal ? n % C : C - 1;  // the last unmasked column
    Acc m = neg_inf;
    for (std::int64_t j = 0; j <= last; ++j) {
      const Acc z = static_cast<Acc>(scale) * static_cast<Acc>(xr[j]);
      if (z > m) m = z;  // NaN never wins a comparison: it propagates through the sum instead
    }
    // All -inf: shift by 0 so exp gives exact zeros and the sum is 0, which selects the zero row.
    const Acc shift = m == neg_inf ? Acc(0) : m;
    Acc sum = 0;
    for (std::int64_t j = 0; j <= last; ++j)
      sum += std::exp(static_cast<Acc>(scale) * static_cast<Acc>(xr[j]) - shift);
    for (std::int64_t j = 0; j < C; ++j) {
      Acc v = 0;
      if (j <= last && sum != Acc(0))
        v = std::exp(static_cast<Acc>(scale) * static_cast<Acc>(xr[j]) - shift) / sum;
      yr[j] = static_cast<T>(v);
    }
  }
}

template <typename T, typename Acc>
void softmax_bwd_ref(T* dx, const T* dy, const T* y, std::int64_t N, std::int64_t C, double scale) {
  for (std::int64_t n = 0; n < N; ++n) {
    const T* dyr = dy + n * C;
    const T* yr = y + n * C;
    Acc dot = 0;
    for (std::int64_t j = 0; j < C; ++j)
      dot += static_cast<Acc>(dyr[j]) * static_cast<Acc>(yr[j]);
    for (std::int64_t j = 0; j < C; ++j) {
      dx[n * C + j] = static_cast<T>(static_cast<Acc>(scale) * static_cast<Acc>(yr[j]) *
                                     (static_cast<Acc>(dyr[j]) - dot));
    }
  }
}

#define KILN_INSTANTIATE(T, Acc)                                                                 \
  template void softmax_fwd_ref<T, Acc>(T*, const T*, std::int64_t, std::int64_t, double, bool); \
  template void softmax_bwd_ref<T, Acc>(T*, const T*, const T*, std::int64_t, std::int64_t, double);
KILN_INSTANTIATE(float, double)
KILN_INSTANTIATE(double, double)
KILN_INSTANTIATE(float, float)
#undef KILN_INSTANTIATE

}  // namespace kiln::ref
