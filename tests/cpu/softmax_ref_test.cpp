// The softmax reference: backward against central finite differences in double, rows summing to
// one, the causal mask, fully masked rows, and NaN / Inf propagation.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/softmax/softmax_ref.hpp"
#include "kiln/softmax.h"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"

using kiln::ref::softmax_bwd_ref;
using kiln::ref::softmax_fwd_ref;
namespace kt = kiln::test;

namespace {

struct SmCase {
  std::int64_t N, C;
  bool causal;
};

}  // namespace

TEST_CASE("softmax_bwd_ref matches central finite differences", "[softmax][ref]") {
  const SmCase shape = GENERATE(SmCase{1, 1, false}, SmCase{3, 7, false}, SmCase{4, 16, false},
                                SmCase{10, 5, true}, SmCase{6, 3, true});
  const std::int64_t N = shape.N, C = shape.C;
  CAPTURE(N, C, shape.causal);
  const double scale = 0.37;
  auto rng = kt::make_rng(301 + N * 1000 + C);
  const auto x = kt::random_uniform_double(N * C, -4, 4, rng);
  const auto w = kt::random_uniform_double(N * C, -1, 1, rng);
  auto f = [&](const std::vector<double>& v) {
    std::vector<double> y(v.size());
    softmax_fwd_ref<double>(y.data(), v.data(), N, C, scale, shape.causal);
    return kt::weighted_sum(y, w);
  };
  std::vector<double> y(N * C), dx(N * C, std::nan(""));
  softmax_fwd_ref<double>(y.data(), x.data(), N, C, scale, shape.causal);
  softmax_bwd_ref<double>(dx.data(), w.data(), y.data(), N, C, scale);  // overwrites dx
  kt::check_close("dx vs finite differences", kt::central_difference(f, x), dx, 1e-6, 1e-8);
}

TEST_CASE("softmax_fwd_ref rows sum to one and the causal mask gives exact zeros",
          "[softmax][ref]") {
  const std::int64_t C = 37, N = 3 * C;  // three stacked C x C score blocks
  auto rng = kt::make_rng(302);
  const auto x = kt::random_uniform_double(N * C, -30, 30, rng);
  for (const bool causal : {false, true}) {
    std::vector<double> y(N * C);
    softmax_fwd_ref<double>(y.data(), x.data(), N, C, 0.125, causal);
    for (std::int64_t n = 0; n < N; ++n) {
      double sum = 0;
      for (std::int64_t j = 0; j < C; ++j) {
        const double v = y[n * C + j];
        CHECK(v >= 0);
        if (causal && j > n % C) CHECK(v == 0);
        if (!causal || j <= n % C) CHECK(v > 0);  // |scale * x| <= 3.75: no underflow
        sum += v;
      }
      CHECK(std::fabs(sum - 1) < 1e-13);
    }
  }
}

TEST_CASE("softmax_fwd_ref is shift-invariant and stable for large inputs", "[softmax][ref]") {
  const std::int64_t C = 9;
  auto rng = kt::make_rng(303);
  const auto x = kt::random_uniform_double(C, -1, 1, rng);
  std::vector<double> shifted(C), y(C), ys(C);
  for (std::int64_t j = 0; j < C; ++j)
    shifted[j] = x[j] + 1e4;  // exp(1e4) overflows: the max must be subtracted first
  softmax_fwd_ref<double>(y.data(), x.data(), 1, C, 2.0, false);
  softmax_fwd_ref<double>(ys.data(), shifted.data(), 1, C, 2.0, false);
  kt::check_close("softmax(x + 1e4) vs softmax(x)", y, ys, 1e-9, 1e-12);
}

TEST_CASE("softmax_fwd_ref gives zeros for a fully masked row and propagates NaN and +Inf",
          "[softmax][ref]") {
  const double inf = std::numeric_limits<double>::infinity();
  const std::int64_t C = 4;
  std::vector<double> x = {
      -inf, -inf, -inf, -inf,  // fully masked: zeros
      1.0,  -inf, 2.0,  -inf,  // partly masked: a softmax over the finite entries
      1.0,  NAN,  2.0,  3.0,   // NaN: the row is NaN
      NAN,  NAN,  NAN,  NAN,   // all NaN: NaN, not the masked row's zeros
      1.0,  inf,  2.0,  3.0,   // +Inf: NaN (inf - inf), as PyTorch
  };
  const std::int64_t N = static_cast<std::int64_t>(x.size()) / C;
  std::vector<double> y(N * C);
  softmax_fwd_ref<double>(y.data(), x.data(), N, C, 1.0, false);
  for (std::int64_t j = 0; j < C; ++j)
    CHECK(y[j] == 0);
  CHECK(y[C + 1] == 0);
  CHECK(y[C + 3] == 0);
  CHECK(y[C + 0] == Approx(1 / (1 + std::exp(1.0))).epsilon(1e-14));
  CHECK(y[C + 2] == Approx(1 / (1 + std::exp(-1.0))).epsilon(1e-14));
  for (std::int64_t i = 2 * C; i < N * C; ++i)
    CHECK(std::isnan(y[i]));

  // With the causal mask the masked columns are zero whatever they hold.
  // Rows 0 and 1 of a 3 x 3 score block: row 0 sees column 0 only, row 1 columns 0 and 1.
  std::vector<double> xc = {1.0, NAN, inf, NAN, 2.0, 3.0};
  std::vector<double> yc(6);
  softmax_fwd_ref<double>(yc.data(), xc.data(), 2, 3, 1.0, true);
  CHECK(yc[0] == 1.0);
  CHECK(yc[1] == 0);
  CHECK(yc[2] == 0);
  CHECK(std::isnan(yc[3]));
  CHECK(std::isnan(yc[4]));
  CHECK(yc[5] == 0);
}

TEST_CASE("softmax references in float agree with double", "[softmax][ref]") {
  const std::int64_t N = 12, C = 50;
  auto rng = kt::make_rng(304);
  const auto x = kt::random_uniform(N * C, -5, 5, rng);
  const auto dy = kt::random_uniform(N * C, -1, 1, rng);
  std::vector<float> y(N * C), dx(N * C);
  softmax_fwd_ref<float>(y.data(), x.data(), N, C, 0.5, true);
  softmax_bwd_ref<float>(dx.data(), dy.data(), y.data(), N, C, 0.5);
  std::vector<double> yd(N * C), dxd(N * C);
  const auto xd = kt::to_double(x), dyd = kt::to_double(dy);
  softmax_fwd_ref<double>(yd.data(), xd.data(), N, C, 0.5, true);
  softmax_bwd_ref<double>(dxd.data(), dyd.data(), kt::to_double(y).data(), N, C, 0.5);
  kt::check_close("y", yd, kt::to_double(y), 1e-6, 1e-8);
  kt::check_close("dx", dxd, kt::to_double(dx), 1e-5, 1e-7);
}
