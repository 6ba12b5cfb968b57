// GELU's C ABI: argument checks, then the launchers (gelu.cu).
#include "kiln/gelu.h"

#include <limits>

#include "errors/capi.hpp"
#include "kernels/common/row_args.hpp"
#include "kernels/gelu/gelu.hpp"

namespace kiln::impl {
namespace {

void check_count(const char* op, std::int64_t n) {
  KILN_CHECK_ARG(n >= 0 && n <= std::numeric_limits<std::int64_t>::max() / 8, op,
                 ": n must be >= 0 (got ", n, ")");
}

}  // namespace
}  // namespace kiln::impl

extern "C" {

kiln_status_t kiln_gelu_fwd(void* y, const void* x, int64_t n, kiln_dtype_t dtype,
                            cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_gelu_fwd";
    args::check_dtype(op, dtype);
    check_count(op, n);
    args::check_tensor(op, "y", y);
    args::check_tensor(op, "x", x);
    const std::size_t bytes = static_cast<std::size_t>(n) * args::dtype_size(dtype);
    if (y != x) args::check_disjoint(op, "y", y, bytes, "x", x, bytes);
    gelu_fwd(dtype, y, x, n, stream);
  });
}

kiln_status_t kiln_gelu_bwd(void* dx, const void* dy, const void* x, int64_t n, kiln_dtype_t dtype,
                            cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_gelu_bwd";
    args::check_dtype(op, dtype);
    check_count(op, n);
    args::check_tensor(op, "dx", dx);
    args::check_tensor(op, "dy", dy);
    args::check_tensor(op, "x", x);
    const std::size_t bytes = static_cast<std::size_t>(n) * args::dtype_size(dtype);
    if (dx != dy) args::check_disjoint(op, "dx", dx, bytes, "dy", dy, bytes);
    args::check_disjoint(op, "dx", dx, bytes, "x", x, bytes);
    gelu_bwd(dtype, dx, dy, x, n, stream);
  });
}

}  // extern "C"
