// The LayerNorm reference: its backward against central finite differences in double, the
// invariants of its output, and its float instantiation (the CPU backend's) against double.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/norm/layernorm_ref.hpp"
#include "kiln/layernorm.h"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"

using kiln::ref::layernorm_bwd_ref;
using kiln::ref::layernorm_fwd_ref;
using kiln::ref::residual_layernorm_fwd_ref;
namespace kt = kiln::test;

namespace {

struct LnCase {
  std::int64_t N, C;
};

std::vector<double> ln_y(const std::vector<double>& x, const std::vector<double>& gamma,
                         const std::vector<double>& beta, std::int64_t N, std::int64_t C,
                         double eps) {
  std::vector<double> y(x.size());
  layernorm_fwd_ref<double>(y.data(), nullptr, nullptr, x.data(), gamma.data(), beta.data(), N, C,
                            eps);
  return y;
}

}  // namespace

TEST_CASE("layernorm_bwd_ref matches central finite differences", "[layernorm][ref]") {
  const LnCase shape = GENERATE(LnCase{1, 1}, LnCase{3, 7}, LnCase{2, 16}, LnCase{4, 33});
  const std::int64_t N = shape.N, C = shape.C;
  CAPTURE(N, C);
  auto rng = kt::make_rng(101 + N * 1000 + C);
  const double eps = 1e-5;
  const auto x = kt::random_uniform_double(N * C, -2, 2, rng);
  const auto gamma = kt::random_uniform_double(C, 0.5, 1.5, rng);
  const auto beta = kt::random_uniform_double(C, -0.5, 0.5, rng);
  const auto w = kt::random_uniform_double(N * C, -1, 1, rng);  // dy

  std::vector<double> y(N * C), mean(N), rstd(N);
  layernorm_fwd_ref<double>(y.data(), mean.data(), rstd.data(), x.data(), gamma.data(), beta.data(),
                            N, C, eps);
  // Start the accumulating outputs from non-zero values: the contract is +=.
  const auto dx0 = kt::random_uniform_double(N * C, -1, 1, rng);
  const auto dg0 = kt::random_uniform_double(C, -1, 1, rng);
  const auto db0 = kt::random_uniform_double(C, -1, 1, rng);
  auto dx = dx0, dgamma = dg0, dbeta = db0;
  layernorm_bwd_ref<double>(dx.data(), dgamma.data(), dbeta.data(), w.data(), x.data(),
                            gamma.data(), mean.data(), rstd.data(), N, C);
  for (std::size_t i = 0; i < dx.size(); ++i)
    dx[i] -= dx0[i];
  for (std::int64_t c = 0; c < C; ++c) {
    dgamma[c] -= dg0[c];
    dbeta[c] -= db0[c];
  }

  const auto fd_x = kt::central_difference(
      [&](const std::vector<double>& v) {
        return kt::weighted_sum(ln_y(v, gamma, beta, N, C, eps), w);
      },
      x);
  const auto fd_g = kt::central_difference(
      [&](const std::vector<double>& v) {
        return kt::weighted_sum(ln_y(x, v, beta, N, C, eps), w);
      },
      gamma);
  const auto fd_b = kt::central_difference(
      [&](const std::vector<double>& v) {
        return kt::weighted_sum(ln_y(x, gamma, v, N, C, eps), w);
      },
      beta);
  // h = 1e-6: truncation ~h^2, cancellation ~1e-16 / h; both far below these tolerances.
  kt::check_close("dx vs finite differences", fd_x, dx, 1e-6, 1e-7);
  kt::check_close("dgamma vs finite differences", fd_g, dgamma, 1e-6, 1e-7);
  kt::check_close("dbeta vs finite differences", fd_b, dbeta, 1e-6, 1e-7);
}

TEST_CASE("layernorm_fwd_ref output has mean 0 and variance 1 before the affine",
          "[layernorm][ref]") {
  const std::int64_t N = 5, C = 257;
  auto rng = kt::make_rng(102);
  auto x = kt::random_uniform_double(N * C, -3, 5, rng);
  const std::vector<double> ones(C, 1.0), zeros(C, 0.0);
  std::vector<double> y(N * C), mean(N), rstd(N);
  // eps tiny so the variance of the output is 1 to ~1e-12.
  layernorm_fwd_ref<double>(y.data(), mean.data(), rstd.data(), x.data(), ones.data(), zeros.data(),
                            N, C, 1e-12);
  for (std::int64_t n = 0; n < N; ++n) {
    double m = 0, v = 0, xm = 0, xv = 0;
    for (std::int64_t c = 0; c < C; ++c)
      m += y[n * C + c], xm += x[n * C + c];
    m /= C, xm /= C;
    for (std::int64_t c = 0; c < C; ++c) {
      v += (y[n * C + c] - m) * (y[n * C + c] - m);
      xv += (x[n * C + c] - xm) * (x[n * C + c] - xm);
    }
    v /= C, xv /= C;
    CHECK(std::fabs(m) < 1e-12);
    CHECK(std::fabs(v - 1) < 1e-9);
    // mean and rstd are the biased statistics of x.
    CHECK(mean[n] == Approx(xm).epsilon(1e-12));
    CHECK(rstd[n] == Approx(1 / std::sqrt(xv + 1e-12)).epsilon(1e-12));
  }

  // The affine applies per column: y = yhat * gamma + beta.
  const auto gamma = kt::random_uniform_double(C, -2, 2, rng);
  const auto beta = kt::random_uniform_double(C, -1, 1, rng);
  std::vector<double> ya(N * C);
  layernorm_fwd_ref<double>(ya.data(), nullptr, nullptr, x.data(), gamma.data(), beta.data(), N, C,
                            1e-12);
  std::vector<double> expect(N * C);
  for (std::int64_t i = 0; i < N * C; ++i)
    expect[i] = y[i] * gamma[i % C] + beta[i % C];
  kt::check_close("affine", expect, ya, 1e-12, 1e-12);
}

TEST_CASE("layernorm_fwd_ref of a constant row is beta, and C = 1 is a constant row",
          "[layernorm][ref]") {
  const double eps = 1e-5;
  for (const std::int64_t C : {1, 6}) {
    std::vector<double> x(C, 3.25), gamma(C, 2.0), beta(C), y(C), mean(1), rstd(1);
    for (std::int64_t c = 0; c < C; ++c)
      beta[c] = 0.5 * c - 1;
    layernorm_fwd_ref<double>(y.data(), mean.data(), rstd.data(), x.data(), gamma.data(),
                              beta.data(), 1, C, eps);
    CHECK(mean[0] == 3.25);
    CHECK(rstd[0] == Approx(1 / std::sqrt(eps)).epsilon(1e-14));
    for (std::int64_t c = 0; c < C; ++c)
      CHECK(y[c] == beta[c]);
  }
}

TEST_CASE("residual_layernorm_fwd_ref writes a + b and normalizes it, also in place",
          "[layernorm][ref]") {
  const std::int64_t N = 4, C = 24;
  auto rng = kt::make_rng(103);
  const auto a = kt::random_uniform_double(N * C, -1, 1, rng);
  const auto b = kt::random_uniform_double(N * C, -1, 1, rng);
  const auto gamma = kt::random_uniform_double(C, 0.5, 1.5, rng);
  const auto beta = kt::random_uniform_double(C, -0.5, 0.5, rng);
  std::vector<double> residual(N * C), y(N * C), mean(N), rstd(N);
  residual_layernorm_fwd_ref<double>(residual.data(), y.data(), mean.data(), rstd.data(), a.data(),
                                     b.data(), gamma.data(), beta.data(), N, C, 1e-5);
  std::vector<double> sum(N * C), y2(N * C), mean2(N), rstd2(N);
  for (std::int64_t i = 0; i < N * C; ++i)
    sum[i] = a[i] + b[i];
  layernorm_fwd_ref<double>(y2.data(), mean2.data(), rstd2.data(), sum.data(), gamma.data(),
                            beta.data(), N, C, 1e-5);
  CHECK(kt::bitwise_equal(residual, sum));
  CHECK(kt::bitwise_equal(y, y2));
  CHECK(kt::bitwise_equal(mean, mean2));
  CHECK(kt::bitwise_equal(rstd, rstd2));

  // residual aliasing a: the residual stream updated in place.
  auto stream = a;
  std::vector<double> y3(N * C);
  residual_layernorm_fwd_ref<double>(stream.data(), y3.data(), nullptr, nullptr, stream.data(),
                                     b.data(), gamma.data(), beta.data(), N, C, 1e-5);
  CHECK(kt::bitwise_equal(stream, sum));
  CHECK(kt::bitwise_equal(y3, y2));
}

TEST_CASE("residual_layernorm_fwd_ref in float normalizes the rounded sum it stores",
          "[layernorm][ref]") {
  // The backward reads the stored residual as x, so the forward's statistics must be those of
  // the stored (rounded) values, not of the exact sum.
  const std::int64_t N = 2, C = 40;
  auto rng = kt::make_rng(104);
  const auto a = kt::random_uniform(N * C, -1, 1, rng);
  const auto b = kt::random_uniform(N * C, -1e-3f, 1e-3f, rng);
  const auto gamma = kt::random_uniform(C, 0.5, 1.5, rng);
  const auto beta = kt::random_uniform(C, -0.5, 0.5, rng);
  std::vector<float> residual(N * C), y(N * C), y2(N * C), mean(N), rstd(N), mean2(N), rstd2(N);
  residual_layernorm_fwd_ref<float>(residual.data(), y.data(), mean.data(), rstd.data(), a.data(),
                                    b.data(), gamma.data(), beta.data(), N, C, 1e-5);
  layernorm_fwd_ref<float>(y2.data(), mean2.data(), rstd2.data(), residual.data(), gamma.data(),
                           beta.data(), N, C, 1e-5);
  CHECK(kt::bitwise_equal(y, y2));
  CHECK(kt::bitwise_equal(mean, mean2));
  CHECK(kt::bitwise_equal(rstd, rstd2));
}

TEST_CASE("layernorm references in float agree with double", "[layernorm][ref]") {
  const std::int64_t N = 6, C = 100;
  auto rng = kt::make_rng(105);
  const auto x = kt::random_uniform(N * C, -2, 2, rng);
  const auto gamma = kt::random_uniform(C, 0.5, 1.5, rng);
  const auto beta = kt::random_uniform(C, -0.5, 0.5, rng);
  const auto dy = kt::random_uniform(N * C, -1, 1, rng);
  std::vector<float> y(N * C), mean(N), rstd(N), dx(N * C, 0.f), dg(C, 0.f), db(C, 0.f);
  layernorm_fwd_ref<float>(y.data(), mean.data(), rstd.data(), x.data(), gamma.data(), beta.data(),
                           N, C, 1e-5);
  layernorm_bwd_ref<float>(dx.data(), dg.data(), db.data(), dy.data(), x.data(), gamma.data(),
                           mean.data(), rstd.data(), N, C);

  const auto xd = kt::to_double(x), gd = kt::to_double(gamma), bd = kt::to_double(beta),
             dyd = kt::to_double(dy);
  std::vector<double> yd(N * C), meand(N), rstdd(N), dxd(N * C, 0.), dgd(C, 0.), dbd(C, 0.);
  layernorm_fwd_ref<double>(yd.data(), meand.data(), rstdd.data(), xd.data(), gd.data(), bd.data(),
                            N, C, 1e-5);
  layernorm_bwd_ref<double>(dxd.data(), dgd.data(), dbd.data(), dyd.data(), xd.data(), gd.data(),
                            meand.data(), rstdd.data(), N, C);
  kt::check_close("y", yd, kt::to_double(y), 1e-6, 1e-6);
  kt::check_close("rstd", rstdd, kt::to_double(rstd), 1e-6, 0);
  kt::check_close("dx", dxd, kt::to_double(dx), 1e-5, 1e-6);
  kt::check_close("dgamma", dgd, kt::to_double(dg), 1e-5, 1e-6);
  kt::check_close("dbeta", dbd, kt::to_double(db), 1e-5, 1e-6);
}

TEST_CASE("layernorm_fwd_ref propagates NaN and Inf through the row", "[layernorm][ref]") {
  const std::int64_t C = 8;
  std::vector<double> x(2 * C, 1.5), gamma(C, 1.0), beta(C, 0.0), y(2 * C), mean(2), rstd(2);
  x[3] = NAN;
  x[C + 5] = INFINITY;
  for (std::int64_t c = 0; c < C; ++c)
    x[C + c] += c;  // leaves the Inf in place
  layernorm_fwd_ref<double>(y.data(), mean.data(), rstd.data(), x.data(), gamma.data(), beta.data(),
                            2, C, 1e-5);
  for (std::int64_t i = 0; i < 2 * C; ++i)
    CHECK(std::isnan(y[i]));
  CHECK(std::isnan(mean[0]));
  CHECK(std::isinf(mean[1]));
  CHECK(std::isnan(rstd[0]));
  CHECK(std::isnan(rstd[1]));
}

// ---------------------------------------------------------------------------------------------
// The C ABI's argument checks. They run before any CUDA call, so these need no GPU; the pointers
// are host addresses that are never dereferenced (every call here fails its checks, or has N = 0
// and launches nothing).
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

TEST_CASE("kiln_layernorm_fwd rejects bad arguments before launching", "[layernorm][api]") {
  const auto bf16 = KILN_DTYPE_BF16;
  void *y = at(0), *x = at(4096), *g = at(8192), *b = at(8448);
  float *mean = fat(9000), *rstd = fat(9100);
  // N = 0 with valid arguments: nothing to do, OK without a device.
  CHECK(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 0, 64, 1e-5, bf16, nullptr) == KILN_STATUS_OK);
  CHECK(kiln_layernorm_fwd(y, nullptr, nullptr, x, g, b, 0, 64, 1e-5, bf16, nullptr) ==
        KILN_STATUS_OK);
  expect_invalid(kiln_layernorm_fwd(nullptr, mean, rstd, x, g, b, 0, 64, 1e-5, bf16, nullptr),
                 "kiln_layernorm_fwd: y is null");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, nullptr, g, b, 0, 64, 1e-5, bf16, nullptr),
                 "x is null");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, nullptr, b, 0, 64, 1e-5, bf16, nullptr),
                 "gamma is null");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, nullptr, 0, 64, 1e-5, bf16, nullptr),
                 "beta is null");
  expect_invalid(kiln_layernorm_fwd(at(2), mean, rstd, x, g, b, 0, 64, 1e-5, bf16, nullptr), "y (");
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("is not 16-byte aligned"));
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, at(4104), g, b, 0, 64, 1e-5, bf16, nullptr),
                 "x (");
  expect_invalid(kiln_layernorm_fwd(y, fat(9001), rstd, x, g, b, 0, 64, 1e-5, bf16, nullptr),
                 "mean (");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 4, 0, 1e-5, bf16, nullptr),
                 "C must be in [1, 2^31 - 4] (got 0)");
  expect_invalid(
      kiln_layernorm_fwd(y, mean, rstd, x, g, b, 1, (int64_t{1} << 31) - 3, 1e-5, bf16, nullptr),
      "C must be in [1, 2^31 - 4]");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, -1, 64, 1e-5, bf16, nullptr),
                 "N must be in [0, 2^31 - 1] (got -1)");
  expect_invalid(
      kiln_layernorm_fwd(y, mean, rstd, x, g, b, int64_t{1} << 31, 64, 1e-5, bf16, nullptr),
      "N must be in");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 4, 64, 0.0, bf16, nullptr),
                 "eps must be finite and > 0");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 4, 64, std::nan(""), bf16, nullptr),
                 "eps must be finite and > 0");
  // Positive in double but 0 (or denormal) as the float the kernel takes.
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 4, 64, 1e-40, bf16, nullptr),
                 "a normal fp32 value");
  expect_invalid(kiln_layernorm_fwd(y, mean, rstd, x, g, b, 4, 64, 1e-5,
                                    static_cast<kiln_dtype_t>(7), nullptr),
                 "dtype 7 is not");
  // y overlapping x by part of a row (x 16 bytes on): rejected; y == x (in place) is allowed.
  expect_invalid(kiln_layernorm_fwd(at(4112), mean, rstd, x, g, b, 4, 64, 1e-5, bf16, nullptr),
                 "y and x overlap");
  CHECK(kiln_layernorm_fwd(x, mean, rstd, x, g, b, 0, 64, 1e-5, bf16, nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_layernorm_fwd(y, mean, mean, x, g, b, 4, 64, 1e-5, bf16, nullptr),
                 "mean and rstd overlap");
  // The statistics are written row by row while other rows' threads still read x (as RMSNorm).
  expect_invalid(kiln_layernorm_fwd(y, fat(4096 + 64), rstd, x, g, b, 4, 64, 1e-5, bf16, nullptr),
                 "mean and x overlap");
  expect_invalid(kiln_layernorm_fwd(y, mean, fat(4096 + 496), x, g, b, 4, 64, 1e-5, bf16, nullptr),
                 "rstd and x overlap");
  expect_invalid(kiln_layernorm_fwd(y, fat(496), rstd, x, g, b, 4, 64, 1e-5, bf16, nullptr),
                 "y and mean overlap");
  // The C++ wrapper throws the same.
  try {
    kiln::layernorm_fwd(y, mean, rstd, x, g, b, 4, 0, 1e-5, bf16, nullptr);
    FAIL("no exception");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::invalid_argument);
    CHECK_THAT(std::string(e.what()), Catch::Contains("C must be in"));
  }
}

TEST_CASE("kiln_residual_layernorm_fwd allows residual to be a or b, nothing else",
          "[layernorm][api]") {
  const auto f32 = KILN_DTYPE_F32;
  void *r = at(0), *y = at(4096), *a = at(8192), *b = at(12288), *g = at(16384), *be = at(16640);
  CHECK(kiln_residual_layernorm_fwd(r, y, nullptr, nullptr, a, b, g, be, 0, 64, 1e-5, f32,
                                    nullptr) == KILN_STATUS_OK);
  CHECK(kiln_residual_layernorm_fwd(a, y, nullptr, nullptr, a, b, g, be, 0, 64, 1e-5, f32,
                                    nullptr) == KILN_STATUS_OK);
  CHECK(kiln_residual_layernorm_fwd(b, y, nullptr, nullptr, a, b, g, be, 0, 64, 1e-5, f32,
                                    nullptr) == KILN_STATUS_OK);
  expect_invalid(kiln_residual_layernorm_fwd(at(8208), y, nullptr, nullptr, a, b, g, be, 4, 64,
                                             1e-5, f32, nullptr),
                 "residual and a overlap");
  expect_invalid(
      kiln_residual_layernorm_fwd(r, r, nullptr, nullptr, a, b, g, be, 4, 64, 1e-5, f32, nullptr),
      "y and residual overlap");
  expect_invalid(
      kiln_residual_layernorm_fwd(r, a, nullptr, nullptr, a, b, g, be, 4, 64, 1e-5, f32, nullptr),
      "y and a overlap");
  expect_invalid(kiln_residual_layernorm_fwd(nullptr, y, nullptr, nullptr, a, b, g, be, 4, 64, 1e-5,
                                             f32, nullptr),
                 "kiln_residual_layernorm_fwd: residual is null");
  expect_invalid(kiln_residual_layernorm_fwd(r, y, nullptr, nullptr, a, at(12296), g, be, 4, 64,
                                             1e-5, f32, nullptr),
                 "b (");
  // mean and rstd overlap no input and not the residual (as in kiln_residual_rmsnorm_fwd).
  float* stat = fat(20480);
  CHECK(kiln_residual_layernorm_fwd(r, y, stat, stat + 4, a, b, g, be, 0, 64, 1e-5, f32, nullptr) ==
        KILN_STATUS_OK);
  expect_invalid(kiln_residual_layernorm_fwd(r, y, fat(8192 + 256), stat, a, b, g, be, 4, 64, 1e-5,
                                             f32, nullptr),
                 "mean and a overlap");
  expect_invalid(kiln_residual_layernorm_fwd(r, y, stat, fat(12288 + 1008), a, b, g, be, 4, 64,
                                             1e-5, f32, nullptr),
                 "rstd and b overlap");
  expect_invalid(
      kiln_residual_layernorm_fwd(r, y, fat(16), stat, a, b, g, be, 4, 64, 1e-5, f32, nullptr),
      "residual and mean overlap");
}

TEST_CASE("kiln_layernorm_bwd_workspace_size is one fp32 partial row pair per block",
          "[layernorm][api]") {
  size_t bytes = 1;
  REQUIRE(kiln_layernorm_bwd_workspace_size(0, 768, &bytes) == KILN_STATUS_OK);
  CHECK(bytes == 0);
  REQUIRE(kiln_layernorm_bwd_workspace_size(1, 768, &bytes) == KILN_STATUS_OK);
  CHECK(bytes == 2 * 768 * sizeof(float));
  // C rounded up to 16 bytes per partial row.
  REQUIRE(kiln_layernorm_bwd_workspace_size(1, 7, &bytes) == KILN_STATUS_OK);
  CHECK(bytes == 2 * 8 * sizeof(float));
  // Grows with N up to a cap, so a large batch needs a bounded workspace.
  size_t small = 0, large = 0, huge = 0;
  REQUIRE(kiln_layernorm_bwd_workspace_size(1000, 768, &small) == KILN_STATUS_OK);
  REQUIRE(kiln_layernorm_bwd_workspace_size(100000, 768, &large) == KILN_STATUS_OK);
  REQUIRE(kiln_layernorm_bwd_workspace_size(1000000, 768, &huge) == KILN_STATUS_OK);
  CHECK(small < large);
  CHECK(large == huge);
  CHECK(huge <= 1024 * 2 * 768 * sizeof(float));
  CHECK(kiln::layernorm_bwd_workspace_size(1000, 768) == small);
  expect_invalid(kiln_layernorm_bwd_workspace_size(4, 768, nullptr), "bytes is null");
  expect_invalid(kiln_layernorm_bwd_workspace_size(4, 0, &bytes), "C must be in");
}

TEST_CASE("kiln_layernorm_bwd rejects bad arguments before launching", "[layernorm][api]") {
  const auto bf16 = KILN_DTYPE_BF16;
  void *dx = at(0), *dy = at(4096), *x = at(8192), *g = at(12288), *ws = at(16384);
  float *dg = fat(40000), *db = fat(44000), *mean = fat(48000), *rstd = fat(48512);
  const int64_t N = 16, C = 64;
  size_t need = 0;
  REQUIRE(kiln_layernorm_bwd_workspace_size(N, C, &need) == KILN_STATUS_OK);
  REQUIRE(need > 0);
  CHECK(kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, 0, C, nullptr, 0, bf16, nullptr) ==
        KILN_STATUS_OK);
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, N, C, ws, need - 1, bf16, nullptr),
      "kiln_layernorm_bwd: workspace_bytes is");
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("kiln_layernorm_bwd_workspace_size"));
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, N, C, nullptr, need, bf16, nullptr),
      "workspace is null");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, N, C, at(16392), need, bf16, nullptr),
      "workspace (");
  expect_invalid(
      kiln_layernorm_bwd(dx, nullptr, db, dy, x, g, mean, rstd, N, C, ws, need, bf16, nullptr),
      "dgamma is null");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, nullptr, dy, x, g, mean, rstd, N, C, ws, need, bf16, nullptr),
      "dbeta is null");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, nullptr, rstd, N, C, ws, need, bf16, nullptr),
      "mean is null");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, nullptr, N, C, ws, need, bf16, nullptr),
      "rstd is null");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, nullptr, x, g, mean, rstd, N, C, ws, need, bf16, nullptr),
      "dy is null");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, at(8200), g, mean, rstd, N, C, ws, need, bf16, nullptr),
      "x (");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, dg, dy, x, g, mean, rstd, N, C, ws, need, bf16, nullptr),
      "dgamma and dbeta overlap");
  expect_invalid(
      kiln_layernorm_bwd(dy, dg, db, dy, x, g, mean, rstd, N, C, ws, need, bf16, nullptr),
      "dx and dy overlap");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, N, C, dx, need, bf16, nullptr),
      "workspace and dx overlap");
  expect_invalid(
      kiln_layernorm_bwd(dx, dg, db, dy, x, g, mean, rstd, N, -3, ws, need, bf16, nullptr),
      "C must be in");
}
