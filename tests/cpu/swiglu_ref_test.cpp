// The SwiGLU reference: the backward against central finite differences, in place against out of
// place, values at known and extreme points, float against double, and the kernels' fp32 math (the
// kernels' item code: swiglu_layout_test.cpp; the C ABI: swiglu_capi_test.cpp).
#include <catch2/catch.hpp>

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/swiglu/swiglu_math.hpp"
#include "kernels/swiglu/swiglu_ref.hpp"
#include "kiln/swiglu.h"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"

using kiln::ref::swiglu_bwd_ref;
using kiln::ref::swiglu_fwd_ref;
namespace kt = kiln::test;

TEST_CASE("swiglu_bwd_ref matches central finite differences", "[swiglu][ref]") {
  const std::int64_t N = GENERATE(1, 3), I = GENERATE(1, 5, 16);
  CAPTURE(N, I);
  auto rng = kt::make_rng(1701 + N * 100 + I);
  const auto gu = kt::random_uniform_double(N * 2 * I, -6, 6, rng);
  const auto w = kt::random_uniform_double(N * I, -1, 1, rng);
  auto f = [&](const std::vector<double>& v) {
    std::vector<double> out(N * I);
    swiglu_fwd_ref<double>(out.data(), v.data(), N, I);
    return kt::weighted_sum(out, w);
  };
  std::vector<double> dgu(N * 2 * I, std::nan(""));
  swiglu_bwd_ref<double>(dgu.data(), w.data(), gu.data(), N, I);  // overwrites dgu
  kt::check_close("dgu vs finite differences", kt::central_difference(f, gu), dgu, 1e-6, 1e-8);
}

TEST_CASE("swiglu_bwd_ref in place equals out of place", "[swiglu][ref]") {
  const std::int64_t N = 7, I = 33;
  auto rng = kt::make_rng(1702);
  const auto gu = kt::random_uniform(N * 2 * I, -8, 8, rng);
  const auto dout = kt::random_uniform(N * I, -1, 1, rng);
  std::vector<float> out_of_place(N * 2 * I);
  swiglu_bwd_ref<float>(out_of_place.data(), dout.data(), gu.data(), N, I);
  auto in_place = gu;
  swiglu_bwd_ref<float>(in_place.data(), dout.data(), in_place.data(), N, I);
  CHECK(kt::bitwise_equal(in_place, out_of_place));
}

TEST_CASE("swiglu references at known and extreme points", "[swiglu][ref]") {
  // One row, I = 6: gate | up.
  const std::vector<double> gu = {0, 1, -1, 50, -50, -800, 2, 3, 4, 5, 6, 7};
  std::vector<double> out(6), dgu(12);
  const std::vector<double> ones(6, 1.0);
  swiglu_fwd_ref<double>(out.data(), gu.data(), 1, 6);
  swiglu_bwd_ref<double>(dgu.data(), ones.data(), gu.data(), 1, 6);
  const double s1 = 1 / (1 + std::exp(-1.0));
  CHECK(out[0] == 0);
  CHECK(out[1] == Approx(s1 * 3).epsilon(1e-15));         // silu(1) * 3
  CHECK(out[2] == Approx(-(1 - s1) * 4).epsilon(1e-15));  // silu(-1) = -sigmoid(-1)
  CHECK(out[3] == Approx(50.0 * 5).epsilon(1e-15));       // silu(50) = 50 (to 1e-22)
  CHECK(std::fabs(out[4]) < 1e-18);                       // silu(-50) ~ -1e-20
  CHECK(out[5] == 0);                                     // exp(800) = inf: -800 * 0
  CHECK(dgu[0] == Approx(0.5 * 2).epsilon(1e-15));        // silu'(0) = 1/2, times up = 2
  CHECK(dgu[6] == 0);                                     // d up = silu(0)
  CHECK(dgu[1] == Approx(3 * s1 * (1 + (1 - s1))).epsilon(1e-14));
  CHECK(dgu[3] == Approx(5.0).epsilon(1e-15));  // silu'(50) = 1
  CHECK(std::isfinite(dgu[4]));
  CHECK(std::isfinite(dgu[5]));
  CHECK(dgu[5] == 0);
  CHECK(dgu[11] == 0);
  // The float instantiation stays finite at the extremes too.
  const std::vector<float> guf(gu.begin(), gu.end());
  std::vector<float> outf(6), dguf(12);
  const std::vector<float> onesf(6, 1.0f);
  swiglu_fwd_ref<float, float>(outf.data(), guf.data(), 1, 6);
  swiglu_bwd_ref<float, float>(dguf.data(), onesf.data(), guf.data(), 1, 6);
  for (const float v : outf)
    CHECK(std::isfinite(v));
  for (const float v : dguf)
    CHECK(std::isfinite(v));
}

TEST_CASE("swiglu references in float agree with double", "[swiglu][ref]") {
  const std::int64_t N = 9, I = 40;
  auto rng = kt::make_rng(1703);
  const auto gu = kt::random_uniform(N * 2 * I, -8, 8, rng);
  const auto dout = kt::random_uniform(N * I, -1, 1, rng);
  std::vector<float> out(N * I), dgu(N * 2 * I);
  swiglu_fwd_ref<float>(out.data(), gu.data(), N, I);
  swiglu_bwd_ref<float>(dgu.data(), dout.data(), gu.data(), N, I);
  const auto gud = kt::to_double(gu), doutd = kt::to_double(dout);
  std::vector<double> outd(N * I), dgud(N * 2 * I);
  swiglu_fwd_ref<double>(outd.data(), gud.data(), N, I);
  swiglu_bwd_ref<double>(dgud.data(), doutd.data(), gud.data(), N, I);
  kt::check_close("out", outd, kt::to_double(out), 1e-6, 1e-7);
  kt::check_close("dgu", dgud, kt::to_double(dgu), 1e-6, 1e-7);
}

TEST_CASE("the kernels' fp32 SwiGLU math follows the double reference, extremes included",
          "[swiglu][ref]") {
  // kernels/swiglu/swiglu_math.hpp evaluated on the host (host expf; the device's is within
  // 2 ulp): relative error a few fp32 ulps wherever the reference is a normal number, the same
  // NaN / Inf pattern, and no NaN for any finite gate.
  auto rng = kt::make_rng(1704);
  std::vector<float> gates = kt::random_uniform(20000, -30.0f, 30.0f, rng);
  for (float g = -120.0f; g <= 120.0f; g += 0.25f)
    gates.push_back(g);
  const float inf = std::numeric_limits<float>::infinity();
  for (const float g : {0.0f, -0.0f, 1e-30f, -1e-30f, 87.0f, -87.0f, 88.5f, -88.5f, 89.0f, -89.0f,
                        104.0f, -104.0f, 1e30f, -1e30f, 3e38f, -3e38f, inf, -inf, NAN})
    gates.push_back(g);
  const auto others = kt::random_uniform(2 * gates.size(), -2.0f, 2.0f, rng);
  std::size_t bad = 0;
  std::string failures;
  for (std::size_t k = 0; k < gates.size(); ++k) {
    const float g = gates[k], up = others[2 * k], dy = others[2 * k + 1];
    const double gu[2] = {g, up}, d = dy;
    double out_ref = 0, dgu_ref[2] = {0, 0};
    swiglu_fwd_ref<double>(&out_ref, gu, 1, 1);
    swiglu_bwd_ref<double>(dgu_ref, &d, gu, 1, 1);
    float dgate = 0, dup = 0;
    const float out = kiln::swiglu_math::fwd(g, up);
    kiln::swiglu_math::bwd(g, up, dy, &dgate, &dup);
    // Relative to the size of the terms summed: silu'(g) = s + s g (1 - s) cancels near the
    // minimum of silu (g ~ -1.28), in fp32 as in any same-precision evaluation.
    auto agrees = [](double ref, float got, double scale) {
      if (std::isnan(ref) || std::isnan(got)) return std::isnan(ref) && std::isnan(got);
      // Past FLT_MAX (g near 3e38 times |up| > 1) fp32 overflows to an infinity of that sign.
      if (std::fabs(ref) > std::numeric_limits<float>::max())
        return std::isinf(got) && (got > 0) == (ref > 0);
      if (std::isinf(got)) return false;
      // fp32 underflows to 0 (or a subnormal) where the reference is below 1e-36.
      return std::fabs(got - ref) <= 4e-6 * scale + 1e-36;
    };
    const double sd = 1 / (1 + std::exp(-static_cast<double>(g)));
    const double terms = std::fabs(static_cast<double>(dy) * up) *
                         (sd + sd * std::fabs(static_cast<double>(g)) * (1 - sd));
    if (!agrees(out_ref, out, std::fabs(out_ref)) || !agrees(dgu_ref[0], dgate, terms) ||
        !agrees(dgu_ref[1], dup, std::fabs(dgu_ref[1]))) {
      if (++bad <= 5) {
        std::ostringstream os;
        os << "g " << g << " up " << up << " dy " << dy << ": " << out << " " << dgate << " " << dup
           << " vs " << out_ref << " " << dgu_ref[0] << " " << dgu_ref[1] << "\n";
        failures += os.str();
      }
    }
    if (std::isfinite(g)) CHECK_FALSE((std::isnan(out) || std::isnan(dgate) || std::isnan(dup)));
  }
  INFO(failures);
  CHECK(bad == 0);
}
