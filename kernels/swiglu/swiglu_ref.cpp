#include "kernels/swiglu/swiglu_ref.hpp"

#include <cmath>

namespace kiln::ref {

template <typename T, typename Acc>
void swiglu_fwd_ref(T* out, const T* gu, std::int64_t N, std::int64_t I) {
  for (std::int64_t n = 0; n < N; ++n) {
    const T* row = gu + n * 2 * I;
    for (std::int64_t j = 0; j < I; ++j) {
      const Acc g = static_cast<Acc>(row[j]), u = static_cast<Acc>(row[I + j]);
      const Acc s = Acc(1) / (Acc(1) + std::exp(-g));
      out[n * I + j] = static_cast<T>(g * s * u);
    }
  }
}

template <typename T, typename Acc>
void swiglu_bwd_ref(T* dgu, const T* dout, const T* gu, std::int64_t N, std::int64_t I) {
  for (std::int64_t n = 0; n < N; ++n) {
    const T* row = gu + n * 2 * I;
    T* drow = dgu + n * 2 * I;
    for (std::int64_t j = 0; j < I; ++j) {
      // Both inputs read before either output is written: dgu may be gu.
      const Acc g = static_cast<Acc>(row[j]), u = static_cast<Acc>(row[I + j]);
      const Acc d = static_cast<Acc>(dout[n * I + j]);
      const Acc s = Acc(1) / (Acc(1) + std::exp(-g));
      drow[j] = static_cast<T>(d * u * s * (Acc(1) + g * (Acc(1) - s)));
      drow[I + j] = static_cast<T>(d * g * s);
    }
  }
}

#define KILN_INSTANTIATE(T, Acc)                                                  \
  template void swiglu_fwd_ref<T, Acc>(T*, const T*, std::int64_t, std::int64_t); \
  template void swiglu_bwd_ref<T, Acc>(T*, const T*, const T*, std::int64_t, std::int64_t);
KILN_INSTANTIATE(float, double)
KILN_INSTANTIATE(double, double)
KILN_INSTANTIATE(float, float)
#undef KILN_INSTANTIATE

}  // namespace kiln::ref
