// GELU kernels against the double reference with the tolerance rule (see layernorm_test.cpp):
// sizes that are and are not whole vectors, tail-only sizes, large sizes, bf16 and fp32, poisoned
// outputs, in-place calls, bitwise repeatability, NaN / Inf propagation.
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/gelu/gelu_ref.hpp"
#include "kiln/gelu.h"
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
void check_gelu(std::int64_t n, std::mt19937_64& rng) {
  INFO(rows::dtype_name<T>() << " n " << n);
  auto x = rows::stored<T>(kt::random_uniform(n, -8.0f, 8.0f, rng));
  if (n > 16) {  // the special values, somewhere in the middle
    x[n / 2] = std::numeric_limits<float>::quiet_NaN();
    x[n / 3] = std::numeric_limits<float>::infinity();
    x[n / 5] = -std::numeric_limits<float>::infinity();
  }
  const auto dy = rows::stored<T>(kt::random_uniform(n, -1.0f, 1.0f, rng));
  std::vector<double> y_ref(n), dx_ref(n);
  kiln::ref::gelu_fwd_ref<double>(y_ref.data(), kt::to_double(x).data(), n);
  kiln::ref::gelu_bwd_ref<double>(dx_ref.data(), kt::to_double(dy).data(), kt::to_double(x).data(),
                                  n);
  std::vector<float> y_base(n), dx_base(n);
  kiln::ref::gelu_fwd_ref<float, float>(y_base.data(), x.data(), n);
  kiln::ref::gelu_bwd_ref<float, float>(dx_base.data(), dy.data(), x.data(), n);
  y_base = rows::stored<T>(y_base);
  dx_base = rows::stored<T>(dx_base);

  DeviceBuffer<T> d_x(rows::to_device<T>(x)), d_dy(rows::to_device<T>(dy)), d_y(n), d_dx(n);
  auto fwd = [&] {
    d_y.poison();
    KILN_REQUIRE_OK(kiln_gelu_fwd(d_y.get(), d_x.get(), n, rows::kDtype<T>, nullptr));
    return rows::from_device(d_y.download());
  };
  auto bwd = [&] {
    d_dx.poison();
    KILN_REQUIRE_OK(kiln_gelu_bwd(d_dx.get(), d_dy.get(), d_x.get(), n, rows::kDtype<T>, nullptr));
    return rows::from_device(d_dx.download());
  };
  const auto y = fwd();
  const auto dx = bwd();
  check_rule("y", y_ref, y, kt::to_double(y_base), rows::atol_for<T>(y_ref));
  check_rule("dx", dx_ref, dx, kt::to_double(dx_base), rows::atol_for<T>(dx_ref));
  CHECK(kt::bitwise_equal(y, fwd()));
  CHECK(kt::bitwise_equal(dx, bwd()));

  // In place: y over x, dx over dy.
  DeviceBuffer<T> inplace_x(rows::to_device<T>(x)), inplace_dy(rows::to_device<T>(dy));
  KILN_REQUIRE_OK(kiln_gelu_bwd(inplace_dy.get(), inplace_dy.get(), inplace_x.get(), n,
                                rows::kDtype<T>, nullptr));
  KILN_REQUIRE_OK(kiln_gelu_fwd(inplace_x.get(), inplace_x.get(), n, rows::kDtype<T>, nullptr));
  CHECK(kt::bitwise_equal(y, rows::from_device(inplace_x.download())));
  CHECK(kt::bitwise_equal(dx, rows::from_device(inplace_dy.download())));
}

}  // namespace

TEST_CASE("gelu smoke: forward and backward, ragged sizes", "[gelu][smoke]") {
  auto rng = kt::make_rng(4009);
  for (const std::int64_t n : {7, 4097, 3 * 4096 + 5}) {
    check_gelu<rows::bf16>(n, rng);
    check_gelu<float>(n, rng);
  }
}

TEST_CASE("gelu forward and backward match the reference", "[gelu]") {
  auto rng = kt::make_rng(4001);
  std::vector<std::int64_t> sizes = {1, 3, 7, 8, 9, 4096, 4097, 4104, 8191, 8192, 4096 * 3 + 5};
  if (!kt::quick_mode()) {
    sizes.push_back(1000003);
    sizes.push_back(8 * 1024 * 3072 + 3);  // GPT-2 124M's MLP activations, ragged
  }
  for (const std::int64_t n : sizes) {
    check_gelu<rows::bf16>(n, rng);
    if (n <= (1 << 22)) check_gelu<float>(n, rng);
  }
}

TEST_CASE("gelu at extreme inputs follows the reference", "[gelu]") {
  // Past |x| ~ 7e12 x^3 overflows fp32 and past ~2e19 so does x^2; the double reference stays
  // finite there (gelu(x) = x or 0, gelu' = 1 or 0), and so must the kernels. At +-inf the
  // reference gives inf / NaN (inf * 0), and NaN stays NaN.
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {1e30f, -1e30f, 3e19f,  -3e19f,  1e13f, -1e13f, 30.0f, -30.0f,
                                0.0f,  -0.0f,  1e-30f, -1e-30f, inf,   -inf,   NAN,   2.5f};
  const std::int64_t n = static_cast<std::int64_t>(x.size());
  const std::vector<float> dy(x.size(), 0.75f);
  for (const bool bf16 : {true, false}) {
    INFO((bf16 ? "bf16" : "fp32"));
    const auto xs = bf16 ? kt::round_to_bf16(x) : x;
    std::vector<double> y_ref(n), dx_ref(n);
    kiln::ref::gelu_fwd_ref<double>(y_ref.data(), kt::to_double(xs).data(), n);
    kiln::ref::gelu_bwd_ref<double>(dx_ref.data(), kt::to_double(dy).data(),
                                    kt::to_double(xs).data(), n);
    std::vector<double> y, dx;
    if (bf16) {
      DeviceBuffer<rows::bf16> d_x(kt::to_bf16(xs)), d_dy(kt::to_bf16(dy)), d_y(n), d_dx(n);
      d_y.poison();
      d_dx.poison();
      KILN_REQUIRE_OK(kiln_gelu_fwd(d_y.get(), d_x.get(), n, KILN_DTYPE_BF16, nullptr));
      KILN_REQUIRE_OK(
          kiln_gelu_bwd(d_dx.get(), d_dy.get(), d_x.get(), n, KILN_DTYPE_BF16, nullptr));
      y = kt::to_double(d_y.download());
      dx = kt::to_double(d_dx.download());
    } else {
      DeviceBuffer<float> d_x(xs), d_dy(dy), d_y(n), d_dx(n);
      d_y.poison();
      d_dx.poison();
      KILN_REQUIRE_OK(kiln_gelu_fwd(d_y.get(), d_x.get(), n, KILN_DTYPE_F32, nullptr));
      KILN_REQUIRE_OK(kiln_gelu_bwd(d_dx.get(), d_dy.get(), d_x.get(), n, KILN_DTYPE_F32, nullptr));
      y = kt::to_double(d_y.download());
      dx = kt::to_double(d_dx.download());
    }
    // Element-wise: a bf16 ulp (or 1e-6) relative, 1e-30 absolute for the tiny ones.
    const double rtol = bf16 ? 1.0 / 128 : 1e-6;
    kt::check_close("y", y_ref, y, rtol, 1e-30);
    kt::check_close("dx", dx_ref, dx, rtol, 1e-30);
  }
}
