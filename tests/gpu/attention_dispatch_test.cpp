// Attention dispatch on the device: AUTO's choice of path per direction and head dim, and
// cuDNN's plan cache (one plan per shape and direction, the scale a by-value input).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/attention/attention.hpp"
#include "kernels/attention/attention_ref.hpp"
#include "kiln/attention.h"
#include "tests/gpu/attention_support.hpp"

using namespace kiln::test::attn;

// AUTO keeps the sm_80 backward on Hopper until the sm_90a one has been verified there
// (kAutoHopperBackward in kernels/attention/attention.cpp; change both together).
TEST_CASE("attention AUTO picks the Hopper forward only where it exists", "[attention]") {
  const Shape s{1, 128, 128, 2, 2, 128, true};
  const auto d = make_desc(s, KILN_ATTENTION_IMPL_AUTO, false, false);
  kiln_attention_impl_t fwd = KILN_ATTENTION_IMPL_AUTO, bwd = KILN_ATTENTION_IMPL_AUTO;
  REQUIRE(kiln_attention_resolve_impl(&d, 0, &fwd) == KILN_STATUS_OK);
  REQUIRE(kiln_attention_resolve_impl(&d, 1, &bwd) == KILN_STATUS_OK);
  CHECK(fwd != KILN_ATTENTION_IMPL_AUTO);
  CHECK(bwd == KILN_ATTENTION_IMPL_SM80);
  auto forced = d;
  forced.impl = KILN_ATTENTION_IMPL_SM90;
  kiln_attention_impl_t got;
  const bool hopper = kiln_attention_resolve_impl(&forced, 0, &got) == KILN_STATUS_OK;
  CHECK(fwd == (hopper ? KILN_ATTENTION_IMPL_SM90 : KILN_ATTENTION_IMPL_SM80));
}

TEST_CASE("attention AUTO sends head dims kiln's kernels lack to cuDNN", "[attention]") {
  for (const int64_t hd : {int64_t{96}, int64_t{256}}) {
    const Shape s{1, 128, 128, 2, 2, hd, true};
    const auto d = make_desc(s, KILN_ATTENTION_IMPL_AUTO, false, false);
    for (const int backward : {0, 1}) {
      kiln_attention_impl_t got = KILN_ATTENTION_IMPL_AUTO;
      const kiln_status_t st = kiln_attention_resolve_impl(&d, backward, &got);
      INFO(s.str() << (backward ? " backward: " : " forward: ") << kiln_last_error());
      if (st == KILN_STATUS_OK) {
        CHECK(got == KILN_ATTENTION_IMPL_CUDNN);
      } else {
        CHECK(st == KILN_STATUS_NOT_SUPPORTED);
        CHECK(!cudnn_must_serve());
      }
    }
  }
}

TEST_CASE("attention cuDNN builds one plan per shape and direction, for every scale",
          "[attention]") {
  const Shape s{2, 100, 100, 4, 2, 96, true};
  auto d = make_desc(s, KILN_ATTENTION_IMPL_CUDNN, false, false);
  kiln_attention_impl_t got;
  if (kiln_attention_resolve_impl(&d, 1, &got) != KILN_STATUS_OK) {
    CHECK(!cudnn_must_serve());
    return;
  }
  const Inputs in = make_inputs(s, 1000);
  const DeviceInputs di = upload(s, in, d, false);
  run_bwd(d, s, di, false);  // both plans now exist
  const std::size_t built = kiln::impl::attention_cudnn_plan_builds();
  for (int rep = 0; rep < 3; ++rep)
    run_bwd(d, s, di, false);
  // The scale is a by-value input of the plan: another scale reuses it, and is honoured.
  d.scale = 0.3;
  const auto o = gather(run_fwd(d, s, di).o.download(), 0, d.o, s.B, s.Tq, s.NHq, s.HD);
  CHECK(kiln::impl::attention_cudnn_plan_builds() == built);
  std::vector<double> ref(s.q_elems()), lse(s.lse_elems());
  const auto q = dbl(in.q), k = dbl(in.k), v = dbl(in.v);
  kiln::ref::attention_fwd_ref(ref.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.Tq,
                               s.Tk, s.NHq, s.NHkv, s.HD, 0.3, s.causal);
  std::vector<double> other(s.q_elems());
  kiln::ref::attention_fwd_ref(other.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.Tq,
                               s.Tk, s.NHq, s.NHkv, s.HD, s.scale(), s.causal);
  double worst = 0, apart = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    worst = std::max(worst, std::fabs(o[i] - ref[i]));
    apart = std::max(apart, std::fabs(other[i] - ref[i]));
  }
  CHECK(worst < 3e-2);        // bf16 outputs of magnitude below 4
  CHECK(apart > 10 * worst);  // and the default scale's output is far from it
}
