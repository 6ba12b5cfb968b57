#include "kernels/norm/rmsnorm_ref.hpp"

#include <cmath>
#include <vector>

namespace kiln::ref {

template <typename T, typename Acc>
void rmsnorm_fwd_ref(T* y, T* rstd, const T* x, const T* gamma, std::int64_t N, std::int64_t C,
                     double eps) {
  for (std::int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    Acc sq = 0;
    for (std::int64_t c = 0; c < C; ++c)
      sq += static_cast<Acc>(xr[c]) * static_cast<Acc>(xr[c]);
    const Acc rs = Acc(1) / std::sqrt(sq / static_cast<Acc>(C) + static_cast<Acc>(eps));
    for (std::int64_t c = 0; c < C; ++c)
      y[n * C + c] = static_cast<T>(static_cast<Acc>(xr[c]) * rs * static_cast<Acc>(gamma[c]));
    if (rstd) rstd[n] = static_cast<T>(rs);
  }
}

template <typename T, typename Acc>
void rmsnorm_bwd_ref(T* dx, T* dgamma, const T* dy, const T* x, const T* gamma, const T* rstd,
                     std::int64_t N, std::int64_t C) {
  std::vector<Acc> dg(static_cast<std::size_t>(C), Acc(0));
  for (std::int64_t n = 0; n < N; ++n) {
    const T* dyr = dy + n * C;
    const T* xr = x + n * C;
    const Acc rs = static_cast<Acc>(rstd[n]);
    Acc sum_gx = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      const Acc xhat = static_cast<Acc>(xr[c]) * rs;
      sum_gx += static_cast<Acc>(dyr[c]) * static_cast<Acc>(gamma[c]) * xhat;
      dg[c] += static_cast<Acc>(dyr[c]) * xhat;
    }
    const Acc mean_gx = sum_gx / static_cast<Acc>(C);
    for (std::int64_t c = 0; c < C; ++c) {
      const Acc xhat = static_cast<Acc>(xr[c]) * rs;
      const Acc g = static_cast<Acc>(dyr[c]) * static_cast<Acc>(gamma[c]);
      dx[n * C + c] = static_cast<T>(static_cast<Acc>(dx[n * C + c]) + rs * (g - xhat * mean_gx));
    }
  }
  for (std::int64_t c = 0; c < C; ++c)
    dgamma[c] = static_cast<T>(static_cast<Acc>(dgamma[c]) + dg[c]);
}

#define KILN_INSTANTIATE(T, Acc)                                                                \
  template void rmsnorm_fwd_ref<T, Acc>(T*, T*, const T*, const T*, std::int64_t, std::int64_t, \
                                        double);                                                \
  template void rmsnorm_bwd_ref<T, Acc>(T*, T*, const T*, const T*, const T*, const T*,         \
                                        std::int64_t, std::int64_t);
KILN_INSTANTIATE(float, double)
KILN_INSTANTIATE(double, double)
KILN_INSTANTIATE(float, float)
#undef KILN_INSTANTIATE

}  // namespace kiln::ref
