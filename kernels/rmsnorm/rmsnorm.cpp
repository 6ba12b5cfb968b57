// RMSNorm's C ABI: argument checks, then the launchers (rmsnorm_fwd.cu, rmsnorm_bwd.cu).
#include "kiln/rmsnorm.h"

#include "kernels/common/capi.hpp"
#include "kernels/common/row_args.hpp"
#include "kernels/layernorm/layernorm.hpp"
#include "kernels/rmsnorm/rmsnorm.hpp"

extern "C" {

kiln_status_t kiln_rmsnorm_fwd(void* y, float* rstd, const void* x, const void* gamma, int64_t N,
                               int64_t C, double eps, kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_rmsnorm_fwd";
    args::check_dtype(op, dtype);
    args::check_rows(op, N, C);
    args::check_eps(op, eps);
    args::check_tensor(op, "y", y);
    args::check_tensor(op, "x", x);
    args::check_tensor(op, "gamma", gamma);
    args::check_floats(op, "rstd", rstd, true);
    const std::size_t row_bytes = static_cast<std::size_t>(N * C) * args::dtype_size(dtype);
    if (y != x) args::check_disjoint(op, "y", y, row_bytes, "x", x, row_bytes);
    args::check_disjoint(op, "y", y, row_bytes, "rstd", rstd, N * sizeof(float));
    // rstd is written row by row while other rows' threads still read x.
    args::check_disjoint(op, "rstd", rstd, N * sizeof(float), "x", x, row_bytes);
    rmsnorm_fwd(dtype, y, rstd, x, gamma, N, C, static_cast<float>(eps), stream);
  });
}

kiln_status_t kiln_residual_rmsnorm_fwd(void* residual, void* y, float* rstd, const void* a,
                                        const void* b, const void* gamma, int64_t N, int64_t C,
                                        double eps, kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_residual_rmsnorm_fwd";
    args::check_dtype(op, dtype);
    args::check_rows(op, N, C);
    args::check_eps(op, eps);
    args::check_tensor(op, "residual", residual);
    args::check_tensor(op, "y", y);
    args::check_tensor(op, "a", a);
    args::check_tensor(op, "b", b);
    args::check_tensor(op, "gamma", gamma);
    args::check_floats(op, "rstd", rstd, true);
    const std::size_t row_bytes = static_cast<std::size_t>(N * C) * args::dtype_size(dtype);
    const std::size_t stat_bytes = static_cast<std::size_t>(N) * sizeof(float);
    args::check_disjoint(op, "y", y, row_bytes, "residual", residual, row_bytes);
    args::check_disjoint(op, "y", y, row_bytes, "a", a, row_bytes);
    args::check_disjoint(op, "y", y, row_bytes, "b", b, row_bytes);
    args::check_disjoint(op, "y", y, row_bytes, "rstd", rstd, stat_bytes);
    args::check_disjoint(op, "residual", residual, row_bytes, "rstd", rstd, stat_bytes);
    // rstd is written row by row while other rows' threads still read a and b.
    args::check_disjoint(op, "rstd", rstd, stat_bytes, "a", a, row_bytes);
    args::check_disjoint(op, "rstd", rstd, stat_bytes, "b", b, row_bytes);
    // residual may be a or b exactly (each element is read before it is written), nothing else.
    if (residual != a) args::check_disjoint(op, "residual", residual, row_bytes, "a", a, row_bytes);
    if (residual != b) args::check_disjoint(op, "residual", residual, row_bytes, "b", b, row_bytes);
    residual_rmsnorm_fwd(dtype, residual, y, rstd, a, b, gamma, N, C, static_cast<float>(eps),
                         stream);
  });
}

kiln_status_t kiln_rmsnorm_bwd_workspace_size(int64_t N, int64_t C, size_t* bytes) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_rmsnorm_bwd_workspace_size";
    KILN_CHECK_ARG(bytes != nullptr, op, ": bytes is null");
    args::check_rows(op, N, C);
    *bytes = norm_bwd_workspace_bytes(1, N, C);
  });
}

kiln_status_t kiln_rmsnorm_bwd(void* dx, float* dgamma, const void* dy, const void* x,
                               const void* gamma, const float* rstd, int64_t N, int64_t C,
                               void* workspace, size_t workspace_bytes, kiln_dtype_t dtype,
                               cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_rmsnorm_bwd";
    args::check_dtype(op, dtype);
    args::check_rows(op, N, C);
    args::check_tensor(op, "dx", dx);
    args::check_tensor(op, "dy", dy);
    args::check_tensor(op, "x", x);
    args::check_tensor(op, "gamma", gamma);
    args::check_floats(op, "dgamma", dgamma, false);
    args::check_floats(op, "rstd", rstd, false);
    const std::size_t need = norm_bwd_workspace_bytes(1, N, C);
    KILN_CHECK_ARG(workspace_bytes >= need, op, ": workspace_bytes is ", workspace_bytes,
                   " but (N, C) = (", N, ", ", C, ") needs ", need,
                   " (kiln_rmsnorm_bwd_workspace_size)");
    if (need > 0) args::check_tensor(op, "workspace", workspace);
    const std::size_t row_bytes = static_cast<std::size_t>(N * C) * args::dtype_size(dtype);
    args::check_disjoint(op, "dx", dx, row_bytes, "dy", dy, row_bytes);
    args::check_disjoint(op, "dx", dx, row_bytes, "x", x, row_bytes);
    args::check_disjoint(op, "workspace", workspace, need, "dx", dx, row_bytes);
    args::check_disjoint(op, "workspace", workspace, need, "dgamma", dgamma, C * sizeof(float));
    rmsnorm_bwd(dtype, dx, dgamma, dy, x, gamma, rstd, N, C, workspace, stream);
  });
}

}  // extern "C"
