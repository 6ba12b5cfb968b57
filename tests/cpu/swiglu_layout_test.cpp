// The SwiGLU kernels' item code (kernels/swiglu/swiglu_item.hpp) run on the CPU over host arrays,
// every item of a call in turn as the grid-stride loop visits them (bf16 emulated by rounding each
// stored value), against the reference by the tolerance rule; in place bitwise equal to out of
// place. The work items' index math is in rope_layout_test.cpp.
#include <catch2/catch.hpp>

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/swiglu/swiglu_item.hpp"
#include "kernels/swiglu/swiglu_math.hpp"
#include "kernels/swiglu/swiglu_ref.hpp"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"
#include "tests/cpu/host_run.hpp"

using kiln::ref::swiglu_bwd_ref;
using kiln::ref::swiglu_fwd_ref;
namespace kt = kiln::test;

namespace {

using kiln::test::HostRun;

template <int kVec, bool kBf16>
void check_emulated(std::int64_t N, std::int64_t I, std::mt19937_64& rng) {
  CAPTURE(N, I, kVec, kBf16);
  auto gu = kt::random_uniform(N * 2 * I, -8, 8, rng);
  auto dout = kt::random_uniform(N * I, -1, 1, rng);
  if (kBf16) {
    gu = kt::round_to_bf16(gu);
    dout = kt::round_to_bf16(dout);
  }
  const auto gud = kt::to_double(gu), doutd = kt::to_double(dout);
  std::vector<double> out_ref(N * I), dgu_ref(N * 2 * I);
  swiglu_fwd_ref<double>(out_ref.data(), gud.data(), N, I);
  swiglu_bwd_ref<double>(dgu_ref.data(), doutd.data(), gud.data(), N, I);
  std::vector<float> out_base(N * I), dgu_base(N * 2 * I);
  swiglu_fwd_ref<float, float>(out_base.data(), gu.data(), N, I);
  swiglu_bwd_ref<float, float>(dgu_base.data(), dout.data(), gu.data(), N, I);
  if (kBf16) {
    out_base = kt::round_to_bf16(out_base);
    dgu_base = kt::round_to_bf16(dgu_base);
  }
  const std::int64_t runs = I / kVec;
  std::vector<float> out(N * I, NAN), dgu(N * 2 * I, NAN), in_place = gu;
  for (std::int64_t i = 0; i < N * runs; ++i) {
    const auto item = static_cast<std::uint32_t>(i);
    kiln::swiglu_math::fwd_item<HostRun<kVec, kBf16>, kVec>(out.data(), gu.data(), runs, I, item);
    kiln::swiglu_math::bwd_item<HostRun<kVec, kBf16>, kVec>(dgu.data(), dout.data(), gu.data(),
                                                            runs, I, item);
    kiln::swiglu_math::bwd_item<HostRun<kVec, kBf16>, kVec>(in_place.data(), dout.data(),
                                                            in_place.data(), runs, I, item);
  }
  const double tiny = kBf16 ? std::ldexp(1.0, -12) : std::ldexp(1.0, -20);
  kt::check_rule("out", out_ref, kt::to_double(out), kt::to_double(out_base), 64 * tiny);
  kt::check_rule("dgu", dgu_ref, kt::to_double(dgu), kt::to_double(dgu_base), 64 * tiny);
  CHECK(kt::bitwise_equal(dgu, in_place));
}

}  // namespace

TEST_CASE("the swiglu kernels' item code, run on the CPU, matches the reference", "[swiglu][ref]") {
  auto rng = kt::make_rng(1705);
  for (const std::int64_t N : {1, 7}) {
    check_emulated<8, true>(N, 64, rng);
    check_emulated<1, true>(N, 13, rng);
    check_emulated<4, false>(N, 44, rng);
    check_emulated<1, false>(N, 9, rng);
  }
  check_emulated<8, true>(33, 1536, rng);
}
