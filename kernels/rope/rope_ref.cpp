#include "kernels/rope/rope_ref.hpp"

#include <cmath>
#include <type_traits>
#include <vector>

namespace kiln::ref {

void rope_inv_freq_ref(const kiln_rope_config_t& config, double* inv_freq) {
  const std::int64_t hd = config.head_dim, half = hd / 2;
  constexpr double kPi = 3.14159265358979323846;
  const double low_wavelen =
      static_cast<double>(config.original_max_position) / config.low_freq_factor;
  const double high_wavelen =
      static_cast<double>(config.original_max_position) / config.high_freq_factor;
  for (std::int64_t i = 0; i < half; ++i) {
    // Hugging Face's form: 1 / base^(arange(0, dim, 2) / dim).
    const double base = 1.0 / std::pow(config.theta, static_cast<double>(2 * i) / hd);
    double f = base;
    if (config.scaling == KILN_ROPE_SCALING_LLAMA3) {
      const double wavelen = 2 * kPi / base;
      if (wavelen > low_wavelen) {
        f = base / config.factor;  // long wavelengths: interpolated by the factor
      } else if (wavelen < high_wavelen) {
        f = base;  // short wavelengths: kept
      } else {
        const double s =
            (static_cast<double>(config.original_max_position) / wavelen - config.low_freq_factor) /
            (config.high_freq_factor - config.low_freq_factor);
        f = (1 - s) * base / config.factor + s * base;
      }
    }
    inv_freq[i] = f;
  }
}

namespace {

template <typename T, typename Acc>
void rope_apply(T* x, std::int64_t B, std::int64_t T_, std::int64_t H, std::int64_t stride_b,
                std::int64_t stride_t, std::int64_t pos_offset, const kiln_rope_config_t& config,
                bool transpose) {
  const std::int64_t hd = config.head_dim, half = hd / 2;
  std::vector<double> inv(static_cast<std::size_t>(half));
  rope_inv_freq_ref(config, inv.data());
  std::vector<Acc> cs(static_cast<std::size_t>(half)), sn(static_cast<std::size_t>(half));
  for (std::int64_t t = 0; t < T_; ++t) {
    const std::int64_t p = pos_offset + t;
    for (std::int64_t i = 0; i < half; ++i) {
      Acc a;
      if constexpr (std::is_same_v<Acc, float>) {
        a = static_cast<float>(p) * static_cast<float>(inv[i]);  // the kernels' fp32 angle
      } else {
        a = static_cast<Acc>(p) * static_cast<Acc>(inv[i]);
      }
      cs[i] = std::cos(a);
      sn[i] = transpose ? -std::sin(a) : std::sin(a);
    }
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t h = 0; h < H; ++h) {
        T* row = x + b * stride_b + t * stride_t + h * hd;
        for (std::int64_t i = 0; i < half; ++i) {
          const Acc x1 = static_cast<Acc>(row[i]), x2 = static_cast<Acc>(row[i + half]);
          row[i] = static_cast<T>(x1 * cs[i] - x2 * sn[i]);
          row[i + half] = static_cast<T>(x2 * cs[i] + x1 * sn[i]);
        }
      }
    }
  }
}

}  // namespace

template <typename T, typename Acc>
void rope_fwd_ref(T* x, std::int64_t B, std::int64_t T_, std::int64_t H, std::int64_t stride_b,
                  std::int64_t stride_t, std::int64_t pos_offset,
                  const kiln_rope_config_t& config) {
  rope_apply<T, Acc>(x, B, T_, H, stride_b, stride_t, pos_offset, config, false);
}

template <typename T, typename Acc>
void rope_bwd_ref(T* x, std::int64_t B, std::int64_t T_, std::int64_t H, std::int64_t stride_b,
                  std::int64_t stride_t, std::int64_t pos_offset,
                  const kiln_rope_config_t& config) {
  rope_apply<T, Acc>(x, B, T_, H, stride_b, stride_t, pos_offset, config, true);
}

#define KILN_INSTANTIATE(T, Acc)                                                                 \
  template void rope_fwd_ref<T, Acc>(T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, \
                                     std::int64_t, std::int64_t, const kiln_rope_config_t&);     \
  template void rope_bwd_ref<T, Acc>(T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, \
                                     std::int64_t, std::int64_t, const kiln_rope_config_t&);
KILN_INSTANTIATE(float, double)
KILN_INSTANTIATE(double, double)
KILN_INSTANTIATE(float, float)
#undef KILN_INSTANTIATE

}  // namespace kiln::ref
