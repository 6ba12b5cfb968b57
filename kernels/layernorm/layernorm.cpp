// LayerNorm's C ABI: argument checks, then the launchers (layernorm_fwd.cu, layernorm_bwd.cu).
#include "kiln/layernorm.h"

#include "kernels/common/capi.hpp"
#include "kernels/common/row_args.hpp"
#include "kernels/layernorm/layernorm.hpp"

namespace kiln::impl {
namespace {

void check_fwd_common(const char* op, const void* y, const float* mean, const float* rstd,
                      const void* gamma, const void* beta, std::int64_t N, std::int64_t C,
                      double eps, kiln_dtype_t dtype) {
  args::check_dtype(op, dtype);
  args::check_rows(op, N, C);
  args::check_eps(op, eps);
  args::check_tensor(op, "y", y);
  args::check_tensor(op, "gamma", gamma);
  args::check_tensor(op, "beta", beta);
  args::check_floats(op, "mean", mean, true);
  args::check_floats(op, "rstd", rstd, true);
  const std::size_t row_bytes = static_cast<std::size_t>(N * C) * args::dtype_size(dtype);
  const std::size_t stat_bytes = static_cast<std::size_t>(N) * sizeof(float);
  args::check_disjoint(op, "mean", mean, stat_bytes, "rstd", rstd, stat_bytes);
  args::check_disjoint(op, "y", y, row_bytes, "mean", mean, stat_bytes);
  args::check_disjoint(op, "y", y, row_bytes, "rstd", rstd, stat_bytes);
}

}  // namespace
}  // namespace kiln::impl

extern "C" {

kiln_status_t kiln_layernorm_fwd(void* y, float* mean, float* rstd, const void* x,
                                 const void* gamma, const void* beta, int64_t N, int64_t C,
                                 double eps, kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_layernorm_fwd";
    check_fwd_common(op, y, mean, rstd, gamma, beta, N, C, eps, dtype);
    args::check_tensor(op, "x", x);
    // y may be x exactly (each row is read whole before it is written), not a shifted view.
    const std::size_t row_bytes = static_cast<std::size_t>(N * C) * args::dtype_size(dtype);
    if (y != x) args::check_disjoint(op, "y", y, row_bytes, "x", x, row_bytes);
    layernorm_fwd(dtype, y, mean, rstd, x, gamma, beta, N, C, static_cast<float>(eps), stream);
  });
}

kiln_status_t kiln_residual_layernorm_fwd(void* residual, void* y, float* mean, float* rstd,
                                          const void* a, const void* b, const void* gamma,
                                          const void* beta, int64_t N, int64_t C, double eps,
                                          kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_residual_layernorm_fwd";
    check_fwd_common(op, y, mean, rstd, gamma, beta, N, C, eps, dtype);
    args::check_tensor(op, "residual", residual);
    args::check_tensor(op, "a", a);
    args::check_tensor(op, "b", b);
    const std::size_t row_bytes = static_cast<std::size_t>(N * C) * args::dtype_size(dtype);
    args::check_disjoint(op, "y", y, row_bytes, "residual", residual, row_bytes);
    args::check_disjoint(op, "y", y, row_bytes, "a", a, row_bytes);
    args::check_disjoint(op, "y", y, row_bytes, "b", b, row_bytes);
    // residual may be a or b exactly (each element is read before it is written), nothing else.
    if (residual != a) args::check_disjoint(op, "residual", residual, row_bytes, "a", a, row_bytes);
    if (residual != b) args::check_disjoint(op, "residual", residual, row_bytes, "b", b, row_bytes);
    residual_layernorm_fwd(dtype, residual, y, mean, rstd, a, b, gamma, beta, N, C,
                           static_cast<float>(eps), stream);
  });
}

kiln_status_t kiln_layernorm_bwd_workspace_size(int64_t N, int64_t C, size_t* bytes) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_layernorm_bwd_workspace_size";
    KILN_CHECK_ARG(bytes != nullptr, op, ": bytes is null");
    args::check_rows(op, N, C);
    *bytes = norm_bwd_workspace_bytes(2, N, C);
  });
}

kiln_status_t kiln_layernorm_bwd(void* dx, float* dgamma, float* dbeta, const void* dy,
                                 const void* x, const void* gamma, const float* mean,
                                 const float* rstd, int64_t N, int64_t C, void* workspace,
                                 size_t workspace_bytes, kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_layernorm_bwd";
    args::check_dtype(op, dtype);
    args::check_rows(op, N, C);
    args::check_tensor(op, "dx", dx);
    args::check_tensor(op, "dy", dy);
    args::check_tensor(op, "x", x);
    args::check_tensor(op, "gamma", gamma);
    args::check_floats(op, "dgamma", dgamma, false);
    args::check_floats(op, "dbeta", dbeta, false);
    args::check_floats(op, "mean", mean, false);
    args::check_floats(op, "rstd", rstd, false);
    const std::size_t need = norm_bwd_workspace_bytes(2, N, C);
    KILN_CHECK_ARG(workspace_bytes >= need, op, ": workspace_bytes is ", workspace_bytes,
                   " but (N, C) = (", N, ", ", C, ") needs ", need,
                   " (kiln_layernorm_bwd_workspace_size)");
    if (need > 0) args::check_tensor(op, "workspace", workspace);
    const std::size_t row_bytes = static_cast<std::size_t>(N * C) * args::dtype_size(dtype);
    const std::size_t col_bytes = static_cast<std::size_t>(C) * sizeof(float);
    args::check_disjoint(op, "dx", dx, row_bytes, "dy", dy, row_bytes);
    args::check_disjoint(op, "dx", dx, row_bytes, "x", x, row_bytes);
    args::check_disjoint(op, "dgamma", dgamma, col_bytes, "dbeta", dbeta, col_bytes);
    args::check_disjoint(op, "workspace", workspace, need, "dx", dx, row_bytes);
    args::check_disjoint(op, "workspace", workspace, need, "dgamma", dgamma, col_bytes);
    args::check_disjoint(op, "workspace", workspace, need, "dbeta", dbeta, col_bytes);
    layernorm_bwd(dtype, dx, dgamma, dbeta, dy, x, gamma, mean, rstd, N, C, workspace, stream);
  });
}

}  // extern "C"
