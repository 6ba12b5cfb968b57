// Softmax's C ABI: argument checks, then the launchers (softmax_fwd.cu, softmax_bwd.cu).
#include "kiln/softmax.h"

#include <cmath>

#include "errors/capi.hpp"
#include "kernels/common/row_args.hpp"
#include "kernels/softmax/softmax.hpp"

namespace kiln::impl {
namespace {

void check_scale(const char* op, double scale) {
  KILN_CHECK_ARG(args::is_normal_float(scale), op,
                 ": scale must be finite and > 0, a normal fp32 value (about 1.2e-38 to 3.4e38; "
                 "got ",
                 scale, ")");
}

}  // namespace
}  // namespace kiln::impl

extern "C" {

kiln_status_t kiln_softmax_fwd(void* y, const void* x, int64_t N, int64_t C, double scale,
                               int causal, kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_softmax_fwd";
    args::check_dtype(op, dtype);
    args::check_rows(op, N, C);
    check_scale(op, scale);
    KILN_CHECK_ARG(causal == 0 || causal == 1, op, ": causal must be 0 or 1 (got ", causal, ")");
    args::check_tensor(op, "y", y);
    args::check_tensor(op, "x", x);
    const std::size_t bytes = static_cast<std::size_t>(N * C) * args::dtype_size(dtype);
    if (y != x) args::check_disjoint(op, "y", y, bytes, "x", x, bytes);
    softmax_fwd(dtype, y, x, N, C, static_cast<float>(scale), causal == 1, stream);
  });
}

kiln_status_t kiln_softmax_bwd(void* dx, const void* dy, const void* y, int64_t N, int64_t C,
                               double scale, kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_softmax_bwd";
    args::check_dtype(op, dtype);
    args::check_rows(op, N, C);
    check_scale(op, scale);
    args::check_tensor(op, "dx", dx);
    args::check_tensor(op, "dy", dy);
    args::check_tensor(op, "y", y);
    const std::size_t bytes = static_cast<std::size_t>(N * C) * args::dtype_size(dtype);
    if (dx != dy) args::check_disjoint(op, "dx", dx, bytes, "dy", dy, bytes);
    if (dx != y) args::check_disjoint(op, "dx", dx, bytes, "y", y, bytes);
    softmax_bwd(dtype, dx, dy, y, N, C, static_cast<float>(scale), stream);
  });
}

}  // extern "C"
