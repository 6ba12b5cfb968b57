// The GELU (tanh approximation) reference: backward against central finite differences, known
// values, and the float instantiation against double.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/gelu/gelu_ref.hpp"
#include "kiln/gelu.h"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"

using kiln::ref::gelu_bwd_ref;
using kiln::ref::gelu_fwd_ref;
namespace kt = kiln::test;

TEST_CASE("gelu_bwd_ref matches central finite differences", "[gelu][ref]") {
  auto rng = kt::make_rng(401);
  const std::int64_t n = 200;
  const auto x = kt::random_uniform_double(n, -6, 6, rng);
  const auto w = kt::random_uniform_double(n, -1, 1, rng);
  auto f = [&](const std::vector<double>& v) {
    std::vector<double> y(v.size());
    gelu_fwd_ref<double>(y.data(), v.data(), n);
    return kt::weighted_sum(y, w);
  };
  std::vector<double> dx(n, std::nan(""));
  gelu_bwd_ref<double>(dx.data(), w.data(), x.data(), n);  // overwrites dx
  kt::check_close("dx vs finite differences", kt::central_difference(f, x), dx, 1e-6, 1e-8);
}

TEST_CASE("gelu_fwd_ref at known points", "[gelu][ref]") {
  const std::vector<double> x = {0.0, 1.0, -1.0, 3.0, -10.0, 10.0};
  std::vector<double> y(x.size()), dx(x.size()), ones(x.size(), 1.0);
  gelu_fwd_ref<double>(y.data(), x.data(), static_cast<std::int64_t>(x.size()));
  gelu_bwd_ref<double>(dx.data(), ones.data(), x.data(), static_cast<std::int64_t>(x.size()));
  CHECK(y[0] == 0);
  // 0.5 * (1 + tanh(sqrt(2/pi) * 1.044715)), the GPT-2 formula evaluated independently.
  CHECK(y[1] == Approx(0.8411919906082768).epsilon(1e-14));
  CHECK(y[2] == Approx(-0.15880800939172324).epsilon(1e-13));
  CHECK(y[1] - y[2] == Approx(1.0).epsilon(1e-14));  // gelu(x) - gelu(-x) = x
  CHECK(y[3] == Approx(2.996362607918227).epsilon(1e-13));
  CHECK(std::fabs(y[4]) < 1e-30);
  CHECK(y[5] == 10.0);
  CHECK(dx[0] == 0.5);
  CHECK(dx[5] == 1.0);
  CHECK(std::fabs(dx[4]) < 1e-30);
}

TEST_CASE("gelu references in float agree with double", "[gelu][ref]") {
  auto rng = kt::make_rng(402);
  const std::int64_t n = 1000;
  const auto x = kt::random_uniform(n, -8, 8, rng);
  const auto dy = kt::random_uniform(n, -1, 1, rng);
  std::vector<float> y(n), dx(n);
  gelu_fwd_ref<float>(y.data(), x.data(), n);
  gelu_bwd_ref<float>(dx.data(), dy.data(), x.data(), n);
  std::vector<double> yd(n), dxd(n);
  const auto xd = kt::to_double(x), dyd = kt::to_double(dy);
  gelu_fwd_ref<double>(yd.data(), xd.data(), n);
  gelu_bwd_ref<double>(dxd.data(), dyd.data(), xd.data(), n);
  kt::check_close("y", yd, kt::to_double(y), 1e-6, 1e-7);
  kt::check_close("dx", dxd, kt::to_double(dx), 1e-6, 1e-7);
}

TEST_CASE("gelu references propagate NaN and Inf", "[gelu][ref]") {
  const std::vector<double> x = {NAN, INFINITY, -INFINITY};
  std::vector<double> y(3), dx(3), ones(3, 1.0);
  gelu_fwd_ref<double>(y.data(), x.data(), 3);
  gelu_bwd_ref<double>(dx.data(), ones.data(), x.data(), 3);
  CHECK(std::isnan(y[0]));
  CHECK(y[1] == INFINITY);
  CHECK(std::isnan(y[2]));  // -inf * (1 + tanh(-inf)) = -inf * 0
  CHECK(std::isnan(dx[0]));
}
