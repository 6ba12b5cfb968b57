#include "kernels/gelu/gelu_ref.hpp"

#include <cmath>

namespace kiln::ref {
namespace {

template <typename Acc>
constexpr Acc kSqrt2OverPi = static_cast<Acc>(0.79788456080286535587989211986876);
template <typename Acc>
constexpr Acc kCubic = static_cast<Acc>(0.044715);

}  // namespace

template <typename T, typename Acc>
void gelu_fwd_ref(T* y, const T* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const Acc v = static_cast<Acc>(x[i]);
    const Acc u = kSqrt2OverPi<Acc> * (v + kCubic<Acc> * v * v * v);
    y[i] = static_cast<T>(Acc(0.5) * v * (Acc(1) + std::tanh(u)));
  }
}

template <typename T, typename Acc>
void gelu_bwd_ref(T* dx, const T* dy, const T* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const Acc v = static_cast<Acc>(x[i]);
    const Acc u = kSqrt2OverPi<Acc> * (v + kCubic<Acc> * v * v * v);
    const Acc t = std::tanh(u);
    const Acc du = kSqrt2OverPi<Acc> * (Acc(1) + Acc(3) * kCubic<Acc> * v * v);
    const Acc grad = Acc(0.5) * (Acc(1) + t) + Acc(0.5) * v * (Acc(1) - t * t) * du;
    dx[i] = static_cast<T>(static_cast<Acc>(dy[i]) * grad);
  }
}

#define KILN_INSTANTIATE(T, Acc)                                  \
  template void gelu_fwd_ref<T, Acc>(T*, const T*, std::int64_t); \
  template void gelu_bwd_ref<T, Acc>(T*, const T*, const T*, std::int64_t);
KILN_INSTANTIATE(float, double)
KILN_INSTANTIATE(double, double)
KILN_INSTANTIATE(float, float)
#undef KILN_INSTANTIATE

}  // namespace kiln::ref
