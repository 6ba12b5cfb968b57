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

  const auto fd_x = kt::weighted_gradient(
      [&](const std::vector<double>& v) { return ln_y(v, gamma, beta, N, C, eps); }, x, w);
  const auto fd_g = kt::weighted_gradient(
      [&](const std::vector<double>& v) { return ln_y(x, v, beta, N, C, eps); }, gamma, w);
  const auto fd_b = kt::weighted_gradient(
      [&](const std::vector<double>& v) { return ln_y(x, gamma, v, N, C, eps); }, beta, w);
  // h = 1e-6: truncation ~h^2, cancellation ~1e-16 / h; both far below these tolerances.
  kt::check_close("dx vs finite differences", fd_x, kt::added(dx, dx0), 1e-6, 1e-7);
  kt::check_close("dgamma vs finite differences", fd_g, kt::added(dgamma, dg0), 1e-6, 1e-7);
  kt::check_close("dbeta vs finite differences", fd_b, kt::added(dbeta, db0), 1e-6, 1e-7);
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
