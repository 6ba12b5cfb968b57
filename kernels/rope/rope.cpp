// Rotary embedding's C ABI: configuration and argument checks, the fp32 frequency table, then the
// launcher (rope.cu).
#include "kiln/rope.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "errors/capi.hpp"
#include "kernels/common/row_args.hpp"
#include "kernels/rope/rope.hpp"
#include "kernels/rope/rope_ref.hpp"

namespace kiln::impl {
namespace {

constexpr std::int64_t kMax32 = std::numeric_limits<std::int32_t>::max();
// Element offsets stay far from int64 overflow (and byte offsets from size_t's).
constexpr std::int64_t kMaxElems = std::numeric_limits<std::int64_t>::max() / 16;

void check_config(const char* op, const kiln_rope_config_t* c) {
  KILN_CHECK_ARG(c != nullptr, op, ": config is null");
  KILN_CHECK_ARG(c->head_dim >= 2 && c->head_dim <= kRopeMaxHeadDim && c->head_dim % 2 == 0, op,
                 ": config->head_dim must be even and in [2, ", kRopeMaxHeadDim, "] (got ",
                 c->head_dim, ")");
  KILN_CHECK_ARG(std::isfinite(c->theta) && c->theta > 1, op,
                 ": config->theta must be finite and > 1 (got ", c->theta, ")");
  KILN_CHECK_ARG(c->scaling == KILN_ROPE_SCALING_NONE || c->scaling == KILN_ROPE_SCALING_LLAMA3, op,
                 ": config->scaling ", static_cast<int>(c->scaling),
                 " is not KILN_ROPE_SCALING_NONE or KILN_ROPE_SCALING_LLAMA3");
  if (c->scaling == KILN_ROPE_SCALING_LLAMA3) {
    KILN_CHECK_ARG(std::isfinite(c->factor) && c->factor >= 1, op,
                   ": config->factor must be finite and >= 1 (got ", c->factor, ")");
    KILN_CHECK_ARG(std::isfinite(c->low_freq_factor) && c->low_freq_factor > 0, op,
                   ": config->low_freq_factor must be finite and > 0 (got ", c->low_freq_factor,
                   ")");
    KILN_CHECK_ARG(std::isfinite(c->high_freq_factor) && c->high_freq_factor > c->low_freq_factor,
                   op, ": config->high_freq_factor must be finite and > low_freq_factor (got ",
                   c->high_freq_factor, " and ", c->low_freq_factor, ")");
    KILN_CHECK_ARG(c->original_max_position >= 1 && c->original_max_position <= kMax32, op,
                   ": config->original_max_position must be in [1, 2^31 - 1] (got ",
                   c->original_max_position, ")");
  }
}

bool same_config(const kiln_rope_config_t& a, const kiln_rope_config_t& b) {
  return a.head_dim == b.head_dim && a.theta == b.theta && a.scaling == b.scaling &&
         (a.scaling == KILN_ROPE_SCALING_NONE ||
          (a.factor == b.factor && a.low_freq_factor == b.low_freq_factor &&
           a.high_freq_factor == b.high_freq_factor &&
           a.original_max_position == b.original_max_position));
}

// The fp32 table, head_dim / 2 values. The last configuration's table is kept per thread: every
// layer of a model calls with the same one, and the HD / 2 pow() in double cost microseconds of
// host time per call.
void inv_freq_f32(const kiln_rope_config_t& config, float* out) {
  thread_local kiln_rope_config_t last{};
  thread_local std::vector<float> table;
  if (table.empty() || !same_config(config, last)) {
    std::vector<double> inv(static_cast<std::size_t>(config.head_dim / 2));
    ref::rope_inv_freq_ref(config, inv.data());
    table.assign(inv.begin(), inv.end());  // rounded to nearest fp32
    last = config;
  }
  std::copy(table.begin(), table.end(), out);
}

// a * b <= limit for a, b >= 0.
bool product_within(std::int64_t a, std::int64_t b, std::int64_t limit) {
  return a == 0 || b <= limit / a;
}

kiln_status_t rope_entry(const char* op, bool transpose, void* x, std::int64_t B, std::int64_t T,
                         std::int64_t H, std::int64_t stride_b, std::int64_t stride_t,
                         std::int64_t pos_offset, const kiln_rope_config_t* config,
                         kiln_dtype_t dtype, cudaStream_t stream) {
  return capi_guard([&] {
    args::check_dtype(op, dtype);
    check_config(op, config);
    const std::int64_t hd = config->head_dim;
    KILN_CHECK_ARG(B >= 0 && B <= kMax32, op, ": B must be in [0, 2^31 - 1] (got ", B, ")");
    KILN_CHECK_ARG(T >= 0 && T <= kMax32, op, ": T must be in [0, 2^31 - 1] (got ", T, ")");
    KILN_CHECK_ARG(H >= 0 && H <= kMax32, op, ": H must be in [0, 2^31 - 1] (got ", H, ")");
    KILN_CHECK_ARG(pos_offset >= 0 && pos_offset <= kMax32 - T, op,
                   ": pos_offset must be >= 0 with pos_offset + T <= 2^31 - 1 (got pos_offset ",
                   pos_offset, ", T ", T, ")");
    const std::int64_t row = H * hd;  // one token's heads, in elements
    KILN_CHECK_ARG(stride_t >= 0 && (T <= 1 || stride_t >= row), op, ": stride_t (", stride_t,
                   ") must be >= H * head_dim = ", row, " when T > 1");
    KILN_CHECK_ARG(product_within(T > 0 ? T - 1 : 0, stride_t, kMaxElems - row), op,
                   ": (T - 1) * stride_t = ", T - 1, " * ", stride_t, " is too large");
    const std::int64_t batch = (T > 0 ? T - 1 : 0) * stride_t + row;  // one batch's extent
    KILN_CHECK_ARG(stride_b >= 0 && (B <= 1 || stride_b >= batch), op, ": stride_b (", stride_b,
                   ") must be >= (T - 1) * stride_t + H * head_dim = ", batch, " when B > 1");
    KILN_CHECK_ARG(product_within(B > 0 ? B - 1 : 0, stride_b, kMaxElems - batch), op,
                   ": (B - 1) * stride_b = ", B - 1, " * ", stride_b, " is too large");
    const char* name = transpose ? "dx" : "x";
    KILN_CHECK_ARG(x != nullptr, op, ": ", name, " is null");
    KILN_CHECK_ARG(is_aligned(x, args::dtype_size(dtype)), op, ": ", name, " (", x,
                   ") is not aligned to its element size");
    RopeArgs a{};
    a.x = x;
    a.B = B;
    a.T = T;
    a.H = H;
    a.stride_b = stride_b;
    a.stride_t = stride_t;
    a.pos_offset = pos_offset;
    a.head_dim = static_cast<int>(hd);
    inv_freq_f32(*config, a.inv_freq);
    if (B == 0 || T == 0 || H == 0) return;
    rope(dtype, a, transpose, stream);
  });
}

}  // namespace
}  // namespace kiln::impl

extern "C" {

kiln_status_t kiln_rope_inv_freq(const kiln_rope_config_t* config, float* inv_freq) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_rope_inv_freq";
    check_config(op, config);
    KILN_CHECK_ARG(inv_freq != nullptr, op, ": inv_freq is null");
    inv_freq_f32(*config, inv_freq);
  });
}

kiln_status_t kiln_rope_fwd(void* x, int64_t B, int64_t T, int64_t H, int64_t stride_b,
                            int64_t stride_t, int64_t pos_offset, const kiln_rope_config_t* config,
                            kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::rope_entry("kiln_rope_fwd", false, x, B, T, H, stride_b, stride_t, pos_offset,
                                config, dtype, stream);
}

kiln_status_t kiln_rope_bwd(void* dx, int64_t B, int64_t T, int64_t H, int64_t stride_b,
                            int64_t stride_t, int64_t pos_offset, const kiln_rope_config_t* config,
                            kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::rope_entry("kiln_rope_bwd", true, dx, B, T, H, stride_b, stride_t, pos_offset,
                                config, dtype, stream);
}

}  // extern "C"
