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

  const auto fd_x = kt::weighted_gradient(
      [&](const std::vector<double>& v) { return rms_y(v, gamma, N, C, eps); }, x, w);
  const auto fd_g = kt::weighted_gradient(
      [&](const std::vector<double>& v) { return rms_y(x, v, N, C, eps); }, gamma, w);
  kt::check_close("dx vs finite differences", fd_x, kt::added(dx, dx0), 1e-6, 1e-7);
  kt::check_close("dgamma vs finite differences", fd_g, kt::added(dgamma, dg0), 1e-6, 1e-7);
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
