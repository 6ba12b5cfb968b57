// Softmax kernels against the double reference with the tolerance rule (see layernorm_test.cpp):
// the shape grid plus attention-score shapes, causal and not, bf16 and fp32, poisoned outputs,
// bitwise repeatability, fully masked rows (zeros, never NaN), NaN / +Inf propagation.
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/softmax/softmax_ref.hpp"
#include "kiln/softmax.h"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/rows_support.hpp"

using kiln::test::check_rule;
using kiln::test::DeviceBuffer;
namespace kt = kiln::test;
namespace rows = kiln::test::rows;

namespace {

template <typename T>
std::vector<double> run_fwd(const rows::Shape& s, const std::vector<float>& x, double scale,
                            bool causal) {
  DeviceBuffer<T> d_x(rows::to_device<T>(x)), d_y(s.elems());
  d_y.poison();
  KILN_REQUIRE_OK(kiln_softmax_fwd(d_y.get(), d_x.get(), s.N, s.C, scale, causal ? 1 : 0,
                                   rows::kDtype<T>, nullptr));
  return rows::from_device(d_y.download());
}

template <typename T>
void check_softmax(const rows::Shape& s, bool causal, std::mt19937_64& rng) {
  INFO(rows::describe(rows::dtype_name<T>(), s) << (causal ? " causal" : ""));
  const double scale = 0.3;
  const auto x = rows::stored<T>(kt::random_normal(s.elems(), 0.0f, 3.0f, rng));
  std::vector<double> y_ref(s.elems());
  kiln::ref::softmax_fwd_ref<double>(y_ref.data(), kt::to_double(x).data(), s.N, s.C, scale,
                                     causal);
  std::vector<float> y_base(s.elems());
  kiln::ref::softmax_fwd_ref<float, float>(y_base.data(), x.data(), s.N, s.C, scale, causal);
  y_base = rows::stored<T>(y_base);
  const auto y = run_fwd<T>(s, x, scale, causal);
  check_rule("y", y_ref, y, kt::to_double(y_base), rows::atol_for<T>(y_ref));
  CHECK(kt::bitwise_equal(y, run_fwd<T>(s, x, scale, causal)));
  if (causal) {  // masked entries are exact zeros
    std::size_t nonzero_masked = 0;
    for (std::int64_t n = 0; n < s.N; ++n)
      for (std::int64_t j = n % s.C + 1; j < s.C; ++j)
        nonzero_masked += y[n * s.C + j] != 0.0;
    CHECK(nonzero_masked == 0);
  }

  // Backward from the forward's output as stored.
  const auto y_stored = rows::stored<T>(std::vector<float>(y_ref.begin(), y_ref.end()));
  const auto dy = rows::stored<T>(kt::random_uniform(s.elems(), -1.0f, 1.0f, rng));
  std::vector<double> dx_ref(s.elems());
  kiln::ref::softmax_bwd_ref<double>(dx_ref.data(), kt::to_double(dy).data(),
                                     kt::to_double(y_stored).data(), s.N, s.C, scale);
  std::vector<float> dx_base(s.elems());
  kiln::ref::softmax_bwd_ref<float, float>(dx_base.data(), dy.data(), y_stored.data(), s.N, s.C,
                                           scale);
  dx_base = rows::stored<T>(dx_base);
  DeviceBuffer<T> d_dy(rows::to_device<T>(dy)), d_y(rows::to_device<T>(y_stored)), d_dx(s.elems());
  auto bwd = [&] {
    d_dx.poison();
    KILN_REQUIRE_OK(kiln_softmax_bwd(d_dx.get(), d_dy.get(), d_y.get(), s.N, s.C, scale,
                                     rows::kDtype<T>, nullptr));
    return rows::from_device(d_dx.download());
  };
  const auto dx = bwd();
  check_rule("dx", dx_ref, dx, kt::to_double(dx_base), rows::atol_for<T>(dx_ref));
  CHECK(kt::bitwise_equal(dx, bwd()));

  if (s.N <= 37) {  // in place, as kiln/softmax.h allows (y over x; dx over dy or y): same bits
    DeviceBuffer<T> d_xy(rows::to_device<T>(x));
    KILN_REQUIRE_OK(kiln_softmax_fwd(d_xy.get(), d_xy.get(), s.N, s.C, scale, causal ? 1 : 0,
                                     rows::kDtype<T>, nullptr));
    CHECK(kt::bitwise_equal(y, rows::from_device(d_xy.download())));
    DeviceBuffer<T> d_dydx(rows::to_device<T>(dy));
    KILN_REQUIRE_OK(kiln_softmax_bwd(d_dydx.get(), d_dydx.get(), d_y.get(), s.N, s.C, scale,
                                     rows::kDtype<T>, nullptr));
    CHECK(kt::bitwise_equal(dx, rows::from_device(d_dydx.download())));
    DeviceBuffer<T> d_ydx(rows::to_device<T>(y_stored));
    KILN_REQUIRE_OK(kiln_softmax_bwd(d_ydx.get(), d_dy.get(), d_ydx.get(), s.N, s.C, scale,
                                     rows::kDtype<T>, nullptr));
    CHECK(kt::bitwise_equal(dx, rows::from_device(d_ydx.download())));
  }
}

}  // namespace

TEST_CASE("softmax smoke: forward and backward, plain and causal, one shape per mapping",
          "[softmax][smoke]") {
  auto rng = kt::make_rng(3009);
  for (const auto& s : rows::smoke_shapes())
    for (const bool causal : {false, true})
      check_softmax<rows::bf16>(s, causal, rng);
  check_softmax<float>(rows::Shape{37, 768}, true, rng);
}

TEST_CASE("softmax forward and backward match the reference over the shape grid", "[softmax]") {
  auto rng = kt::make_rng(3001);
  for (const auto& s : rows::grid()) {
    for (const bool causal : {false, true}) {
      check_softmax<rows::bf16>(s, causal, rng);
      if (s.elems() <= (1u << 20)) check_softmax<float>(s, causal, rng);
    }
  }
}

TEST_CASE("softmax over attention-score shapes (B * NH * T rows of T)", "[softmax]") {
  auto rng = kt::make_rng(3002);
  const std::vector<std::int64_t> Ts = kt::quick_mode()
                                           ? std::vector<std::int64_t>{64, 1000}
                                           : std::vector<std::int64_t>{64, 1000, 1024, 2048};
  for (const std::int64_t T : Ts) {
    const std::int64_t BNH = kt::quick_mode() ? 1 : 3;
    for (const bool causal : {false, true})
      check_softmax<rows::bf16>(rows::Shape{BNH * T, T}, causal, rng);
  }
}

TEST_CASE("softmax gives zeros for fully masked rows and propagates NaN and +Inf", "[softmax]") {
  const float inf = std::numeric_limits<float>::infinity();
  for (const std::int64_t C : {7, 64, 1024, 4096, 4100}) {
    INFO("C " << C);
    const rows::Shape s{5, C};
    auto rng = kt::make_rng(3003 + C);
    auto x = rows::stored<rows::bf16>(kt::random_normal(s.elems(), 0.0f, 2.0f, rng));
    for (std::int64_t j = 0; j < C; ++j)
      x[0 * C + j] = -inf;   // row 0: fully masked by the caller
    x[1 * C + C - 1] = NAN;  // row 1: NaN
    x[2 * C + C / 2] = inf;  // row 2: +Inf
    for (std::int64_t j = 0; j < C; j += 2)
      x[3 * C + j] = -inf;  // row 3: partly masked
    for (const bool causal : {false, true}) {
      INFO((causal ? "causal" : "no mask"));
      std::vector<double> y_ref(s.elems());
      kiln::ref::softmax_fwd_ref<double>(y_ref.data(), kt::to_double(x).data(), s.N, s.C, 1.0,
                                         causal);
      const auto y = run_fwd<rows::bf16>(s, x, 1.0, causal);
      check_rule("y", y_ref, y, y_ref, rows::atol_for<rows::bf16>(y_ref) * 16);
      for (std::int64_t j = 0; j < C; ++j)
        CHECK(y[j] == 0.0);  // never 0/0
      if (!causal) {
        CHECK(std::isnan(y[1 * C]));  // the NaN and the +Inf are visible without the mask
        CHECK(std::isnan(y[2 * C]));
      }
    }
  }
}
