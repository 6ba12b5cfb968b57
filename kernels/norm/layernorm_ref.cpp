#include "kernels/norm/layernorm_ref.hpp"

#include <cmath>
#include <vector>

namespace kiln::ref {
namespace {

// One row: two passes (mean, then the squared deviations), which is exact enough in double and
// is what the kernels do in fp32 with the row in registers.
template <typename T, typename Acc>
void normalize_row(T* y, T* mean_out, T* rstd_out, const T* x, const T* gamma, const T* beta,
                   std::int64_t C, double eps) {
  Acc sum = 0;
  for (std::int64_t c = 0; c < C; ++c)
    sum += static_cast<Acc>(x[c]);
  const Acc mean = sum / static_cast<Acc>(C);
  Acc sq = 0;
  for (std::int64_t c = 0; c < C; ++c) {
    const Acc d = static_cast<Acc>(x[c]) - mean;
    sq += d * d;
  }
  const Acc var = sq / static_cast<Acc>(C);
  const Acc rstd = Acc(1) / std::sqrt(var + static_cast<Acc>(eps));
  for (std::int64_t c = 0; c < C; ++c) {
    const Acc xhat = (static_cast<Acc>(x[c]) - mean) * rstd;
    y[c] = static_cast<T>(xhat * static_cast<Acc>(gamma[c]) + static_cast<Acc>(beta[c]));
  }
  if (mean_out) *mean_out = static_cast<T>(mean);
  if (rstd_out) *rstd_out = static_cast<T>(rstd);
}

}  // namespace

template <typename T, typename Acc>
void layernorm_fwd_ref(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta,
                       std::int64_t N, std::int64_t C, double eps) {
  for (std::int64_t n = 0; n < N; ++n) {
    normalize_row<T, Acc>(y + n * C, mean ? mean + n : nullptr, rstd ? rstd + n : nullptr,
                          x + n * C, gamma, beta, C, eps);
  }
}

template <typename T, typename Acc>
void residual_layernorm_fwd_ref(T* residual, T* y, T* mean, T* rstd, const T* a, const T* b,
                                const T* gamma, const T* beta, std::int64_t N, std::int64_t C,
                                double eps) {
  for (std::int64_t n = 0; n < N; ++n) {
    T* r = residual + n * C;
    for (std::int64_t c = 0; c < C; ++c)
      r[c] = static_cast<T>(static_cast<Acc>(a[n * C + c]) + static_cast<Acc>(b[n * C + c]));
    normalize_row<T, Acc>(y + n * C, mean ? mean + n : nullptr, rstd ? rstd + n : nullptr, r, gamma,
                          beta, C, eps);
  }
}

template <typename T, typename Acc>
void layernorm_bwd_ref(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                       const T* mean, const T* rstd, std::int64_t N, std::int64_t C) {
  // Parameter gradients are summed over all rows first, then added once, so the accumulation
  // into dgamma / dbeta rounds once per call as the kernels' finalize step does.
  std::vector<Acc> dg(static_cast<std::size_t>(C), Acc(0)), db(static_cast<std::size_t>(C), Acc(0));
  for (std::int64_t n = 0; n < N; ++n) {
    const T* dyr = dy + n * C;
    const T* xr = x + n * C;
    const Acc mu = static_cast<Acc>(mean[n]), rs = static_cast<Acc>(rstd[n]);
    Acc sum_g = 0, sum_gx = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      const Acc xhat = (static_cast<Acc>(xr[c]) - mu) * rs;
      const Acc g = static_cast<Acc>(dyr[c]) * static_cast<Acc>(gamma[c]);
      sum_g += g;
      sum_gx += g * xhat;
      dg[c] += static_cast<Acc>(dyr[c]) * xhat;
      db[c] += static_cast<Acc>(dyr[c]);
    }
    const Acc mean_g = sum_g / static_cast<Acc>(C), mean_gx = sum_gx / static_cast<Acc>(C);
    for (std::int64_t c = 0; c < C; ++c) {
      const Acc xhat = (static_cast<Acc>(xr[c]) - mu) * rs;
      const Acc g = static_cast<Acc>(dyr[c]) * static_cast<Acc>(gamma[c]);
      dx[n * C + c] =
          static_cast<T>(static_cast<Acc>(dx[n * C + c]) + rs * (g - mean_g - xhat * mean_gx));
    }
  }
  for (std::int64_t c = 0; c < C; ++c) {
    dgamma[c] = static_cast<T>(static_cast<Acc>(dgamma[c]) + dg[c]);
    dbeta[c] = static_cast<T>(static_cast<Acc>(dbeta[c]) + db[c]);
  }
}

#define KILN_INSTANTIATE(T, Acc)                                                                  \
  template void layernorm_fwd_ref<T, Acc>(T*, T*, T*, const T*, const T*, const T*, std::int64_t, \
                                          std::int64_t, double);                                  \
  template void residual_layernorm_fwd_ref<T, Acc>(T*, T*, T*, T*, const T*, const T*, const T*,  \
                                                   const T*, std::int64_t, std::int64_t, double); \
  template void layernorm_bwd_ref<T, Acc>(T*, T*, T*, const T*, const T*, const T*, const T*,     \
                                          const T*, std::int64_t, std::int64_t);
KILN_INSTANTIATE(float, double)
KILN_INSTANTIATE(double, double)
KILN_INSTANTIATE(float, float)
#undef KILN_INSTANTIATE

}  // namespace kiln::ref
