// The RMSNorm reference: backward against central finite differences in double, invariants, and
// the float instantiation against double.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/norm/rmsnorm_ref.hpp"
#include "kiln/layernorm.h"
#include "kiln/rmsnorm.h"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"

using kiln::ref::rmsnorm_bwd_ref;
using kiln::ref::rmsnorm_fwd_ref;
namespace kt = kiln::test;

namespace {

struct RmsCase {
  std::int64_t N, C;
};

std::vector<double> rms_y(const std::vector<double>& x, const std::vector<double>& gamma,
                          std::int64_t N, std::int64_t C, double eps) {
  std::vector<double> y(x.size());
  rmsnorm_fwd_ref<double>(y.data(), nullptr, x.data(), gamma.data(), N, C, eps);
  return y;
}

}  // namespace

TEST_CASE("rmsnorm_bwd_ref matches central finite differences", "[rmsnorm][ref]") {
  const RmsCase shape = GENERATE(RmsCase{1, 1}, RmsCase{3, 7}, RmsCase{2, 16}, RmsCase{4, 33});
  const std::int64_t N = shape.N, C = shape.C;
  CAPTURE(N, C);
  auto rng = kt::make_rng(201 + N * 1000 + C);
  const double eps = 1e-5;
  const auto x = kt::random_uniform_double(N * C, -2, 2, rng);
  const auto gamma = kt::random_uniform_double(C, 0.5, 1.5, rng);
  const auto w = kt::random_uniform_double(N * C, -1, 1, rng);

  std::vector<double> y(N * C), rstd(N);
  rmsnorm_fwd_ref<double>(y.data(), rstd.data(), x.data(), gamma.data(), N, C, eps);
  const auto dx0 = kt::random_uniform_double(N * C, -1, 1, rng);
  const auto dg0 = kt::random_uniform_double(C, -1, 1, rng);
  auto dx = dx0, dgamma = dg0;
  rmsnorm_bwd_ref<double>(dx.data(), dgamma.data(), w.data(), x.data(), gamma.data(), rstd.data(),
                          N, C);
  for (std::size_t i = 0; i < dx.size(); ++i)
    dx[i] -= dx0[i];
  for (std::int64_t c = 0; c < C; ++c)
    dgamma[c] -= dg0[c];

  const auto fd_x = kt::central_difference(
      [&](const std::vector<double>& v) { return kt::weighted_sum(rms_y(v, gamma, N, C, eps), w); },
      x);
  const auto fd_g = kt::central_difference(
      [&](const std::vector<double>& v) { return kt::weighted_sum(rms_y(x, v, N, C, eps), w); },
      gamma);
  kt::check_close("dx vs finite differences", fd_x, dx, 1e-6, 1e-7);
  kt::check_close("dgamma vs finite differences", fd_g, dgamma, 1e-6, 1e-7);
}

TEST_CASE("rmsnorm_fwd_ref output has mean square 1 before the scale", "[rmsnorm][ref]") {
  const std::int64_t N = 5, C = 129;
  auto rng = kt::make_rng(202);
  const auto x = kt::random_uniform_double(N * C, -3, 5, rng);
  const std::vector<double> ones(C, 1.0);
  std::vector<double> y(N * C), rstd(N);
  rmsnorm_fwd_ref<double>(y.data(), rstd.data(), x.data(), ones.data(), N, C, 1e-12);
  for (std::int64_t n = 0; n < N; ++n) {
    double ms = 0, xs = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      ms += y[n * C + c] * y[n * C + c];
      xs += x[n * C + c] * x[n * C + c];
    }
    CHECK(std::fabs(ms / C - 1) < 1e-9);
    CHECK(rstd[n] == Approx(1 / std::sqrt(xs / C + 1e-12)).epsilon(1e-12));
    // RMSNorm does not centre: the sign and ratios of x survive.
    for (std::int64_t c = 0; c < C; ++c)
      CHECK(y[n * C + c] == Approx(x[n * C + c] * rstd[n]).epsilon(1e-14));
  }
}

TEST_CASE("rmsnorm references in float agree with double", "[rmsnorm][ref]") {
  const std::int64_t N = 6, C = 100;
  auto rng = kt::make_rng(203);
  const auto x = kt::random_uniform(N * C, -2, 2, rng);
  const auto gamma = kt::random_uniform(C, 0.5, 1.5, rng);
  const auto dy = kt::random_uniform(N * C, -1, 1, rng);
  std::vector<float> y(N * C), rstd(N), dx(N * C, 0.f), dg(C, 0.f);
  rmsnorm_fwd_ref<float>(y.data(), rstd.data(), x.data(), gamma.data(), N, C, 1e-5);
  rmsnorm_bwd_ref<float>(dx.data(), dg.data(), dy.data(), x.data(), gamma.data(), rstd.data(), N,
                         C);
  const auto xd = kt::to_double(x), gd = kt::to_double(gamma), dyd = kt::to_double(dy);
  std::vector<double> yd(N * C), rstdd(N), dxd(N * C, 0.), dgd(C, 0.);
  rmsnorm_fwd_ref<double>(yd.data(), rstdd.data(), xd.data(), gd.data(), N, C, 1e-5);
  rmsnorm_bwd_ref<double>(dxd.data(), dgd.data(), dyd.data(), xd.data(), gd.data(), rstdd.data(), N,
                          C);
  kt::check_close("y", yd, kt::to_double(y), 1e-6, 1e-6);
  kt::check_close("rstd", rstdd, kt::to_double(rstd), 1e-6, 0);
  kt::check_close("dx", dxd, kt::to_double(dx), 1e-5, 1e-6);
  kt::check_close("dgamma", dgd, kt::to_double(dg), 1e-5, 1e-6);
}

TEST_CASE("rmsnorm_fwd_ref propagates NaN and Inf", "[rmsnorm][ref]") {
  const std::int64_t C = 8;
  std::vector<double> x(2 * C, 1.5), gamma(C, 1.0), y(2 * C), rstd(2);
  x[3] = NAN;
  x[C + 5] = INFINITY;
  rmsnorm_fwd_ref<double>(y.data(), rstd.data(), x.data(), gamma.data(), 2, C, 1e-5);
  for (std::int64_t c = 0; c < C; ++c)
    CHECK(std::isnan(y[c]));
  CHECK(std::isnan(rstd[0]));
  CHECK(rstd[1] == 0);          // 1 / sqrt(inf)
  CHECK(std::isnan(y[C + 5]));  // inf * 0
}

// The C ABI's argument checks (no GPU needed: every call fails its checks or has N = 0; the host
// addresses passed are never dereferenced).
namespace {

alignas(256) unsigned char g_arena[1 << 16];
void* at(std::size_t offset) {
  return g_arena + offset;
}
float* fat(std::size_t offset) {
  return reinterpret_cast<float*>(g_arena + offset);
}
void expect_invalid(kiln_status_t status, const std::string& needle) {
  CHECK(status == KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains(needle));
}

}  // namespace

TEST_CASE("kiln_rmsnorm_fwd and kiln_rmsnorm_bwd reject bad arguments before launching",
          "[rmsnorm][api]") {
  const auto bf16 = KILN_DTYPE_BF16;
  void *y = at(0), *x = at(4096), *g = at(8192), *ws = at(16384);
  float* rstd = fat(9000);
  CHECK(kiln_rmsnorm_fwd(y, rstd, x, g, 0, 64, 1e-6, bf16, nullptr) == KILN_STATUS_OK);
  CHECK(kiln_rmsnorm_fwd(x, nullptr, x, g, 0, 64, 1e-6, bf16, nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_rmsnorm_fwd(y, rstd, nullptr, g, 4, 64, 1e-6, bf16, nullptr),
                 "kiln_rmsnorm_fwd: x is null");
  expect_invalid(kiln_rmsnorm_fwd(y, rstd, x, at(8194), 4, 64, 1e-6, bf16, nullptr), "gamma (");
  expect_invalid(kiln_rmsnorm_fwd(y, fat(9002), x, g, 4, 64, 1e-6, bf16, nullptr), "rstd (");
  expect_invalid(kiln_rmsnorm_fwd(y, rstd, x, g, 4, 64, -1.0, bf16, nullptr), "eps must be");
  expect_invalid(kiln_rmsnorm_fwd(y, rstd, x, g, 4, 0, 1e-6, bf16, nullptr), "C must be in");
  expect_invalid(kiln_rmsnorm_fwd(at(4160), rstd, x, g, 4, 64, 1e-6, bf16, nullptr),
                 "y and x overlap");
  expect_invalid(kiln_rmsnorm_fwd(y, fat(4096 + 64), x, g, 4, 64, 1e-6, bf16, nullptr),
                 "rstd and x overlap");

  size_t need = 0, ln = 0;
  REQUIRE(kiln_rmsnorm_bwd_workspace_size(16, 64, &need) == KILN_STATUS_OK);
  REQUIRE(kiln_layernorm_bwd_workspace_size(16, 64, &ln) == KILN_STATUS_OK);
  CHECK(need == 64 * sizeof(float));  // one partial row of dgamma
  CHECK(2 * need == ln);
  CHECK(kiln::rmsnorm_bwd_workspace_size(16, 64) == need);
  void *dx = at(20480), *dy = at(24576);
  float* dg = fat(32768);
  CHECK(kiln_rmsnorm_bwd(dx, dg, dy, x, g, rstd, 0, 64, nullptr, 0, bf16, nullptr) ==
        KILN_STATUS_OK);
  expect_invalid(kiln_rmsnorm_bwd(dx, dg, dy, x, g, rstd, 16, 64, ws, need - 4, bf16, nullptr),
                 "kiln_rmsnorm_bwd_workspace_size");
  expect_invalid(kiln_rmsnorm_bwd(dx, nullptr, dy, x, g, rstd, 16, 64, ws, need, bf16, nullptr),
                 "dgamma is null");
  expect_invalid(kiln_rmsnorm_bwd(dx, dg, dy, x, g, nullptr, 16, 64, ws, need, bf16, nullptr),
                 "rstd is null");
  expect_invalid(kiln_rmsnorm_bwd(dx, dg, dx, x, g, rstd, 16, 64, ws, need, bf16, nullptr),
                 "dx and dy overlap");
  expect_invalid(kiln_rmsnorm_bwd(dx, dg, dy, x, g, rstd, 16, 64, ws, need,
                                  static_cast<kiln_dtype_t>(-1), nullptr),
                 "dtype -1 is not");
  CHECK_THROWS_AS(kiln::rmsnorm_fwd(y, rstd, x, g, 4, 64, 0.0, bf16, nullptr), kiln::Error);
}

TEST_CASE("kiln_residual_rmsnorm_fwd rejects bad arguments before launching", "[rmsnorm][api]") {
  // N = 4 rows of C = 64 bf16: 512 bytes per tensor, rstd 16 bytes.
  const auto bf16 = KILN_DTYPE_BF16;
  void *r = at(0), *y = at(4096), *a = at(8192), *b = at(12288), *g = at(16384);
  float* rstd = fat(20480);
  CHECK(kiln_residual_rmsnorm_fwd(r, y, rstd, a, b, g, 0, 64, 1e-6, bf16, nullptr) ==
        KILN_STATUS_OK);
  CHECK(kiln_residual_rmsnorm_fwd(a, y, nullptr, a, b, g, 0, 64, 1e-6, bf16, nullptr) ==
        KILN_STATUS_OK);
  expect_invalid(kiln_residual_rmsnorm_fwd(nullptr, y, rstd, a, b, g, 4, 64, 1e-6, bf16, nullptr),
                 "residual is null");
  expect_invalid(kiln_residual_rmsnorm_fwd(r, y, rstd, a, nullptr, g, 4, 64, 1e-6, bf16, nullptr),
                 "b is null");
  expect_invalid(kiln_residual_rmsnorm_fwd(r, y, rstd, at(8194), b, g, 4, 64, 1e-6, bf16, nullptr),
                 "a (");
  expect_invalid(kiln_residual_rmsnorm_fwd(r, y, rstd, a, b, g, 4, 64, 0.0, bf16, nullptr),
                 "eps must be");
  expect_invalid(kiln_residual_rmsnorm_fwd(r, y, rstd, a, b, g, 4, 64, 1e-6,
                                           static_cast<kiln_dtype_t>(-1), nullptr),
                 "dtype -1 is not");
  // y overlaps an input or the residual: other rows' threads would read what one row writes.
  expect_invalid(kiln_residual_rmsnorm_fwd(r, a, rstd, a, b, g, 4, 64, 1e-6, bf16, nullptr),
                 "y and a overlap");
  expect_invalid(
      kiln_residual_rmsnorm_fwd(r, at(12288 + 256), rstd, a, b, g, 4, 64, 1e-6, bf16, nullptr),
      "y and b overlap");
  expect_invalid(kiln_residual_rmsnorm_fwd(r, r, rstd, a, b, g, 4, 64, 1e-6, bf16, nullptr),
                 "y and residual overlap");
  // residual may be a or b exactly, never a shifted view of either.
  expect_invalid(
      kiln_residual_rmsnorm_fwd(at(8192 + 128), y, rstd, a, b, g, 4, 64, 1e-6, bf16, nullptr),
      "residual and a overlap");
  expect_invalid(
      kiln_residual_rmsnorm_fwd(at(12288 - 256), y, rstd, a, b, g, 4, 64, 1e-6, bf16, nullptr),
      "residual and b overlap");
  // rstd is written per row while the other rows still read a and b.
  expect_invalid(
      kiln_residual_rmsnorm_fwd(r, y, fat(8192 + 256), a, b, g, 4, 64, 1e-6, bf16, nullptr),
      "rstd and a overlap");
  expect_invalid(kiln_residual_rmsnorm_fwd(r, y, fat(12288), a, b, g, 4, 64, 1e-6, bf16, nullptr),
                 "rstd and b overlap");
  expect_invalid(
      kiln_residual_rmsnorm_fwd(r, y, fat(4096 + 496), a, b, g, 4, 64, 1e-6, bf16, nullptr),
      "rstd overlap");
}
