// The C ABI of LayerNorm and RMSNorm: one set of argument checks for both norms and both
// forwards (plain and fused residual), then the launchers (layernorm_*.cu, rmsnorm_*.cu).
#include "kiln/layernorm.h"
#include "kiln/rmsnorm.h"

#include <utility>

#include "errors/capi.hpp"
#include "kernels/common/row_args.hpp"
#include "kernels/norm/norm.hpp"

namespace kiln::impl {
namespace {

// The pointers of one forward call. RMSNorm has no mean and no beta; the plain forward has no
// residual and no b (its input x is `a`, named "x" in messages).
struct FwdArgs {
  bool rms = false;
  bool residual_variant = false;
  const void* residual = nullptr;
  const void* y = nullptr;
  const float* mean = nullptr;
  const float* rstd = nullptr;
  const void* a = nullptr;
  const void* b = nullptr;
  const void* gamma = nullptr;
  const void* beta = nullptr;
};

void check_fwd(const char* op, const FwdArgs& f, std::int64_t N, std::int64_t C, double eps,
               kiln_dtype_t dtype) {
  args::check_dtype(op, dtype);
  args::check_rows(op, N, C);
  args::check_eps(op, eps);
  const char* a_name = f.residual_variant ? "a" : "x";
  if (f.residual_variant) args::check_tensor(op, "residual", f.residual);
  args::check_tensor(op, "y", f.y);
  args::check_tensor(op, a_name, f.a);
  if (f.residual_variant) args::check_tensor(op, "b", f.b);
  args::check_tensor(op, "gamma", f.gamma);
  if (!f.rms) args::check_tensor(op, "beta", f.beta);
  if (!f.rms) args::check_floats(op, "mean", f.mean, true);
  args::check_floats(op, "rstd", f.rstd, true);

  const std::size_t row_bytes = static_cast<std::size_t>(N * C) * args::dtype_size(dtype);
  const std::size_t stat_bytes = static_cast<std::size_t>(N) * sizeof(float);
  args::check_disjoint(op, "mean", f.mean, stat_bytes, "rstd", f.rstd, stat_bytes);
  if (f.residual_variant) {
    args::check_disjoint(op, "y", f.y, row_bytes, "residual", f.residual, row_bytes);
    args::check_disjoint(op, "y", f.y, row_bytes, "a", f.a, row_bytes);
    args::check_disjoint(op, "y", f.y, row_bytes, "b", f.b, row_bytes);
  } else if (f.y != f.a) {
    // y may be x exactly (each row is read whole before it is written), not a shifted view.
    args::check_disjoint(op, "y", f.y, row_bytes, "x", f.a, row_bytes);
  }
  // The statistics are written row by row while other rows' threads still read the inputs.
  for (const auto& [name, stat] : {std::pair{"mean", f.mean}, std::pair{"rstd", f.rstd}}) {
    args::check_disjoint(op, "y", f.y, row_bytes, name, stat, stat_bytes);
    args::check_disjoint(op, "residual", f.residual, row_bytes, name, stat, stat_bytes);
    args::check_disjoint(op, name, stat, stat_bytes, a_name, f.a, row_bytes);
    args::check_disjoint(op, name, stat, stat_bytes, "b", f.b, row_bytes);
  }
  // residual may be a or b exactly (each element is read before it is written), nothing else.
  if (f.residual != f.a)
    args::check_disjoint(op, "residual", f.residual, row_bytes, "a", f.a, row_bytes);
  if (f.residual != f.b)
    args::check_disjoint(op, "residual", f.residual, row_bytes, "b", f.b, row_bytes);
}

// The pointers of one backward call; RMSNorm has no dbeta and no mean.
struct BwdArgs {
  bool rms = false;
  const void* dx = nullptr;
  const float* dgamma = nullptr;
  const float* dbeta = nullptr;
  const void* dy = nullptr;
  const void* x = nullptr;
  const void* gamma = nullptr;
  const float* mean = nullptr;
  const float* rstd = nullptr;
  const void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
};

void check_bwd(const char* op, const BwdArgs& g, std::int64_t N, std::int64_t C,
               kiln_dtype_t dtype) {
  args::check_dtype(op, dtype);
  args::check_rows(op, N, C);
  args::check_tensor(op, "dx", g.dx);
  args::check_tensor(op, "dy", g.dy);
  args::check_tensor(op, "x", g.x);
  args::check_tensor(op, "gamma", g.gamma);
  args::check_floats(op, "dgamma", g.dgamma, false);
  if (!g.rms) args::check_floats(op, "dbeta", g.dbeta, false);
  if (!g.rms) args::check_floats(op, "mean", g.mean, false);
  args::check_floats(op, "rstd", g.rstd, false);
  const std::size_t need = norm_bwd_workspace_bytes(g.rms ? 1 : 2, N, C);
  KILN_CHECK_ARG(g.workspace_bytes >= need, op, ": workspace_bytes is ", g.workspace_bytes,
                 " but (N, C) = (", N, ", ", C, ") needs ", need, " (", op, "_workspace_size)");
  if (need > 0) args::check_tensor(op, "workspace", g.workspace);
  const std::size_t row_bytes = static_cast<std::size_t>(N * C) * args::dtype_size(dtype);
  const std::size_t col_bytes = static_cast<std::size_t>(C) * sizeof(float);
  args::check_disjoint(op, "dx", g.dx, row_bytes, "dy", g.dy, row_bytes);
  args::check_disjoint(op, "dx", g.dx, row_bytes, "x", g.x, row_bytes);
  args::check_disjoint(op, "dgamma", g.dgamma, col_bytes, "dbeta", g.dbeta, col_bytes);
  args::check_disjoint(op, "workspace", g.workspace, need, "dx", g.dx, row_bytes);
  args::check_disjoint(op, "workspace", g.workspace, need, "dgamma", g.dgamma, col_bytes);
  args::check_disjoint(op, "workspace", g.workspace, need, "dbeta", g.dbeta, col_bytes);
}

void workspace_size(const char* op, int arrays, std::int64_t N, std::int64_t C,
                    std::size_t* bytes) {
  KILN_CHECK_ARG(bytes != nullptr, op, ": bytes is null");
  args::check_rows(op, N, C);
  *bytes = norm_bwd_workspace_bytes(arrays, N, C);
}

}  // namespace
}  // namespace kiln::impl

extern "C" {

kiln_status_t kiln_layernorm_fwd(void* y, float* mean, float* rstd, const void* x,
                                 const void* gamma, const void* beta, int64_t N, int64_t C,
                                 double eps, kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    const FwdArgs f{.y = y, .mean = mean, .rstd = rstd, .a = x, .gamma = gamma, .beta = beta};
    check_fwd("kiln_layernorm_fwd", f, N, C, eps, dtype);
    layernorm_fwd(dtype, y, mean, rstd, x, gamma, beta, N, C, static_cast<float>(eps), stream);
  });
}

kiln_status_t kiln_residual_layernorm_fwd(void* residual, void* y, float* mean, float* rstd,
                                          const void* a, const void* b, const void* gamma,
                                          const void* beta, int64_t N, int64_t C, double eps,
                                          kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    const FwdArgs f{.residual_variant = true,
                    .residual = residual,
                    .y = y,
                    .mean = mean,
                    .rstd = rstd,
                    .a = a,
                    .b = b,
                    .gamma = gamma,
                    .beta = beta};
    check_fwd("kiln_residual_layernorm_fwd", f, N, C, eps, dtype);
    residual_layernorm_fwd(dtype, residual, y, mean, rstd, a, b, gamma, beta, N, C,
                           static_cast<float>(eps), stream);
  });
}

kiln_status_t kiln_layernorm_bwd_workspace_size(int64_t N, int64_t C, size_t* bytes) {
  return kiln::impl::capi_guard(
      [&] { kiln::impl::workspace_size("kiln_layernorm_bwd_workspace_size", 2, N, C, bytes); });
}

kiln_status_t kiln_layernorm_bwd(void* dx, float* dgamma, float* dbeta, const void* dy,
                                 const void* x, const void* gamma, const float* mean,
                                 const float* rstd, int64_t N, int64_t C, void* workspace,
                                 size_t workspace_bytes, kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    const BwdArgs g{.dx = dx,
                    .dgamma = dgamma,
                    .dbeta = dbeta,
                    .dy = dy,
                    .x = x,
                    .gamma = gamma,
                    .mean = mean,
                    .rstd = rstd,
                    .workspace = workspace,
                    .workspace_bytes = workspace_bytes};
    check_bwd("kiln_layernorm_bwd", g, N, C, dtype);
    layernorm_bwd(dtype, dx, dgamma, dbeta, dy, x, gamma, mean, rstd, N, C, workspace, stream);
  });
}

kiln_status_t kiln_rmsnorm_fwd(void* y, float* rstd, const void* x, const void* gamma, int64_t N,
                               int64_t C, double eps, kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    const FwdArgs f{.rms = true, .y = y, .rstd = rstd, .a = x, .gamma = gamma};
    check_fwd("kiln_rmsnorm_fwd", f, N, C, eps, dtype);
    rmsnorm_fwd(dtype, y, rstd, x, gamma, N, C, static_cast<float>(eps), stream);
  });
}

kiln_status_t kiln_residual_rmsnorm_fwd(void* residual, void* y, float* rstd, const void* a,
                                        const void* b, const void* gamma, int64_t N, int64_t C,
                                        double eps, kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    const FwdArgs f{.rms = true,
                    .residual_variant = true,
                    .residual = residual,
                    .y = y,
                    .rstd = rstd,
                    .a = a,
                    .b = b,
                    .gamma = gamma};
    check_fwd("kiln_residual_rmsnorm_fwd", f, N, C, eps, dtype);
    residual_rmsnorm_fwd(dtype, residual, y, rstd, a, b, gamma, N, C, static_cast<float>(eps),
                         stream);
  });
}

kiln_status_t kiln_rmsnorm_bwd_workspace_size(int64_t N, int64_t C, size_t* bytes) {
  return kiln::impl::capi_guard(
      [&] { kiln::impl::workspace_size("kiln_rmsnorm_bwd_workspace_size", 1, N, C, bytes); });
}

kiln_status_t kiln_rmsnorm_bwd(void* dx, float* dgamma, const void* dy, const void* x,
                               const void* gamma, const float* rstd, int64_t N, int64_t C,
                               void* workspace, size_t workspace_bytes, kiln_dtype_t dtype,
                               cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    const BwdArgs g{.rms = true,
                    .dx = dx,
                    .dgamma = dgamma,
                    .dy = dy,
                    .x = x,
                    .gamma = gamma,
                    .rstd = rstd,
                    .workspace = workspace,
                    .workspace_bytes = workspace_bytes};
    check_bwd("kiln_rmsnorm_bwd", g, N, C, dtype);
    rmsnorm_bwd(dtype, dx, dgamma, dy, x, gamma, rstd, N, C, workspace, stream);
  });
}

}  // extern "C"
