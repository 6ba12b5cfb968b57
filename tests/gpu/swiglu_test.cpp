// SwiGLU kernels against the double reference with the tolerance rule (see layernorm_test.cpp):
// I that is and is not a whole number of vectors, one row and many, Llama-sized MLPs, bf16 and
// fp32, poisoned outputs, the in-place backward (dgu = gu, as the runtime calls it) bit for bit
// equal to the out-of-place one, repeatability, and extreme gates (no overflow to NaN).
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/swiglu/swiglu_ref.hpp"
#include "kiln/swiglu.h"
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
void check_swiglu(std::int64_t N, std::int64_t I, std::mt19937_64& rng, bool extremes = false) {
  INFO(rows::dtype_name<T>() << " N " << N << " I " << I);
  const std::int64_t n_gu = N * 2 * I, n_out = N * I;
  auto gu = rows::stored<T>(kt::random_uniform(n_gu, -8.0f, 8.0f, rng));
  if (extremes) {
    // Gates where exp(-g) overflows or vanishes in fp32, and the non-finite ones; every up and
    // dout stays finite.
    const float inf = std::numeric_limits<float>::infinity();
    const float gates[] = {100.0f, -100.0f, 1e30f, -1e30f, 88.0f, -88.0f, 89.0f, -89.0f,
                           inf,    -inf,    NAN,   0.0f,   -0.0f, 1e-30f, 20.0f, -20.0f};
    for (std::int64_t k = 0; k < 16 && k < I; ++k)
      gu[k] = rows::stored<T>(std::vector<float>{gates[k]})[0];
  }
  const auto dout = rows::stored<T>(kt::random_uniform(n_out, -1.0f, 1.0f, rng));
  const auto gud = kt::to_double(gu), doutd = kt::to_double(dout);

  std::vector<double> out_ref(n_out), dgu_ref(n_gu);
  kiln::ref::swiglu_fwd_ref<double>(out_ref.data(), gud.data(), N, I);
  kiln::ref::swiglu_bwd_ref<double>(dgu_ref.data(), doutd.data(), gud.data(), N, I);
  std::vector<float> out_base(n_out), dgu_base(n_gu);
  kiln::ref::swiglu_fwd_ref<float, float>(out_base.data(), gu.data(), N, I);
  kiln::ref::swiglu_bwd_ref<float, float>(dgu_base.data(), dout.data(), gu.data(), N, I);
  out_base = rows::stored<T>(out_base);
  dgu_base = rows::stored<T>(dgu_base);

  DeviceBuffer<T> d_gu(rows::to_device<T>(gu)), d_dout(rows::to_device<T>(dout)), d_out(n_out),
      d_dgu(n_gu);
  auto fwd = [&] {
    d_out.poison();
    KILN_REQUIRE_OK(kiln_swiglu_fwd(d_out.get(), d_gu.get(), N, I, rows::kDtype<T>, nullptr));
    return rows::from_device(d_out.download());
  };
  auto bwd = [&] {
    d_dgu.poison();
    KILN_REQUIRE_OK(
        kiln_swiglu_bwd(d_dgu.get(), d_dout.get(), d_gu.get(), N, I, rows::kDtype<T>, nullptr));
    return rows::from_device(d_dgu.download());
  };
  const auto out = fwd();
  const auto dgu = bwd();
  // The rule's bounds are absolute, over the whole tensor: row 0's extreme gates (outputs near
  // 1e31) would make them vacuous for the other rows, so with extremes those rows are checked
  // on their own.
  auto rule = [&](const char* what, const std::vector<double>& ref, const std::vector<double>& got,
                  const std::vector<float>& base, std::int64_t width) {
    const std::int64_t split = extremes ? width : 0;
    auto part = [](const auto& v, std::int64_t lo, std::int64_t hi) {
      return std::vector<double>(v.begin() + lo, v.begin() + hi);
    };
    const auto n = static_cast<std::int64_t>(ref.size());
    for (const auto& [lo, hi] :
         {std::make_pair(std::int64_t{0}, split), std::make_pair(split, n)}) {
      if (lo == hi) continue;
      const auto r = part(ref, lo, hi);
      check_rule(what, r, part(got, lo, hi), part(kt::to_double(base), lo, hi),
                 rows::atol_for<T>(r));
    }
  };
  rule("out", out_ref, out, out_base, I);
  rule("dgu", dgu_ref, dgu, dgu_base, 2 * I);
  CHECK(kt::bitwise_equal(out, fwd()));
  CHECK(kt::bitwise_equal(dgu, bwd()));
  // gu was only read.
  CHECK(kt::bitwise_equal(rows::from_device(d_gu.download()), gud));

  // In place, as the runtime calls it: the gradient overwrites gu.
  DeviceBuffer<T> inplace(rows::to_device<T>(gu));
  KILN_REQUIRE_OK(
      kiln_swiglu_bwd(inplace.get(), d_dout.get(), inplace.get(), N, I, rows::kDtype<T>, nullptr));
  CHECK(kt::bitwise_equal(dgu, rows::from_device(inplace.download())));
}

}  // namespace

TEST_CASE("swiglu forward and backward, vector and scalar paths", "[swiglu][smoke]") {
  auto rng = kt::make_rng(6001);
  check_swiglu<rows::bf16>(37, 64, rng);  // 16-byte vectors
  check_swiglu<float>(37, 64, rng);
  check_swiglu<rows::bf16>(5, 7, rng);  // no vector divides I
  check_swiglu<float>(5, 6, rng);       // bf16 would not vectorize 6 either; fp32 does not
}

TEST_CASE("swiglu over shapes and Llama-sized MLPs", "[swiglu]") {
  auto rng = kt::make_rng(6002);
  for (const std::int64_t I : {1, 2, 4, 8, 12, 16, 100, 1536, 2048, 4864, 5632}) {
    for (const std::int64_t N : {1, 3, 129}) {
      check_swiglu<rows::bf16>(N, I, rng);
      check_swiglu<float>(N, I, rng);
    }
  }
  if (!kt::quick_mode()) {
    check_swiglu<rows::bf16>(2048, 8192, rng);  // Llama-3.2-1B, one 2048-token sequence
    check_swiglu<rows::bf16>(4096, 1536, rng);  // SmolLM2-135M
    check_swiglu<float>(1024, 2816, rng);
  }
}

TEST_CASE("swiglu at extreme gates follows the reference", "[swiglu]") {
  auto rng = kt::make_rng(6003);
  for (const std::int64_t I : {16, 24, 17}) {
    check_swiglu<rows::bf16>(3, I, rng, true);
    check_swiglu<float>(3, I, rng, true);
  }
}
