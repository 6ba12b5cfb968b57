// Attention backward on the device against the double reference, every path forced, both modes
// (attention_support.hpp): ragged shapes, GQA, Tq != Tk, (B, NH, T, HD) strides, a packed dQKV
// buffer written completely, zero gradients where rows see no key, the deterministic mode
// bitwise repeatable, and the forced Hopper backward's own cases.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/attention.h"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/attention_support.hpp"
#include "tests/gpu/paths.hpp"

using namespace kiln::test::attn;

namespace {

std::vector<Shape> backward_shapes() {
  std::vector<Shape> shapes;
  for (const bool causal : {false, true})
    for (const int64_t hd : kHeadDims) {
      shapes.push_back({2, 1, 1, 4, 4, hd, causal});
      shapes.push_back({3, 17, 17, 8, 2, hd, causal});
      shapes.push_back({1, 113, 113, 8, 1, hd, causal});
      shapes.push_back({2, 128, 128, 4, 4, hd, causal});
      shapes.push_back({2, 17, 113, 4, 1, hd, causal});
      shapes.push_back({1, 113, 17, 4, 4, hd, causal});
      shapes.push_back({1, 1023, 1023, 2, 2, hd, causal});
      if (!kiln::test::quick_mode() && kiln_head_dim(hd)) {
        shapes.push_back({1, 1024, 1024, 2, 1, hd, causal});
        shapes.push_back({1, 4224, 4224, 1, 1, hd, causal});
      }
    }
  return shapes;
}

}  // namespace

TEST_CASE("attention backward matches the reference on every path, both modes", "[attention]") {
  uint64_t stream = 500;
  for (const Shape& s : backward_shapes()) {
    const Inputs in = make_inputs(s, stream++);
    const Grads ref = reference_bwd(s, in);
    const Baseline base = baseline(s, in, true);
    check_bwd_paths(s, in, ref, base.grads);
  }
}

TEST_CASE("attention forward and backward take (B, NH, T, HD) strides", "[attention]") {
  uint64_t stream = 250;
  for (const Shape& s :
       {Shape{2, 100, 100, 4, 2, 64, true}, Shape{1, 257, 129, 4, 4, 128, false}}) {
    const Inputs in = make_inputs(s, stream++);
    const FwdResult ref = reference_fwd(s, in);
    const Grads gref = reference_bwd(s, in);
    const Baseline base = baseline(s, in, true);
    check_fwd_paths(s, in, ref, base.fwd, Layout::kBhsd);
    check_bwd_paths(s, in, gref, base.grads, {false}, Layout::kBhsd);
  }
}

TEST_CASE("attention backward writes a packed dQKV buffer completely", "[attention]") {
  uint64_t stream = 600;
  for (const Shape& s : {Shape{2, 77, 77, 8, 2, 64, true}, Shape{1, 200, 200, 4, 4, 128, false},
                         Shape{1, 90, 90, 6, 3, 256, true}}) {
    const Inputs in = make_inputs(s, stream++);
    const Grads ref = reference_bwd(s, in);
    const Baseline base = baseline(s, in, true);
    check_bwd_paths(s, in, ref, base.grads, {false, true}, Layout::kPacked);
  }
}

TEST_CASE("attention deterministic backward is bitwise repeatable", "[attention]") {
  const int reps = kiln::test::quick_mode() ? 3 : 20;
  for (const Shape& s :
       {Shape{2, 500, 500, 8, 2, 128, true}, Shape{1, 333, 1000, 4, 1, 64, false}}) {
    const Inputs in = make_inputs(s, 700);
    for (const auto impl : paths(s, true, true)) {
      INFO(s.str() << " [" << name(impl) << "]");
      const auto d = make_desc(s, impl, false, true);
      const DeviceInputs di = upload(s, in, d, false);
      std::vector<bf16> first, again;
      run_bwd(d, s, di, false, &first);
      for (int rep = 0; rep < reps; ++rep) {
        run_bwd(d, s, di, false, &again);
        CHECK(kiln::test::bitwise_equal(first, again));
      }
    }
  }
}

namespace {

// Whether this device and build run kiln's sm_90a kernels: the forced Hopper forward resolves.
bool hopper_kernels_here() {
  const Shape s{1, 128, 128, 2, 2, 128, false};
  const auto d = make_desc(s, KILN_ATTENTION_IMPL_SM90, false, false);
  kiln_attention_impl_t got;
  return kiln_attention_resolve_impl(&d, 0, &got) == KILN_STATUS_OK;
}

}  // namespace

// The grid above runs the Hopper backward through paths() wherever it resolves; this case makes
// sure it does resolve where the Hopper forward does, and stresses what is its own: 128-key CTAs
// of two consumer warpgroups (ragged Tk), query blocks of 64 (HD 128) or 128 (HD 64) with ragged
// Tq, dQ by bulk reductions into an accumulator kept in wgmma order (several key blocks and GQA
// heads adding into one query block), causal blocks skipped on both sides of the diagonal.
TEST_CASE("attention Hopper backward (forced sm90): both modes, causal, GQA, ragged, Tq != Tk",
          "[attention]") {
  if (!hopper_kernels_here()) {
    if (kiln::test::hopper_paths_required())
      FAIL("the forced sm90 attention does not resolve on compute capability 9.0 with sm_90a");
    WARN("no sm_90a kernels on this device or build: the Hopper backward is not exercised");
    return;
  }
  const int reps = kiln::test::quick_mode() ? 2 : 5;
  uint64_t stream = 900;
  for (const Shape& s : {Shape{2, 200, 333, 8, 2, 128, true},  // Tq < Tk, GQA 4
                         Shape{1, 333, 200, 4, 4, 64, true},   // Tq > Tk: rows with no key
                         Shape{3, 129, 129, 6, 3, 64, false},  // one key past a CTA, GQA 2
                         Shape{1, 1, 300, 4, 1, 128, false},   // one query, MQA
                         Shape{2, 257, 257, 2, 1, 128, true}, Shape{1, 511, 130, 2, 2, 64, false},
                         Shape{1, 65, 640, 8, 1, 64, true}}) {
    const Inputs in = make_inputs(s, stream++);
    const Grads ref = reference_bwd(s, in);
    const Baseline base = baseline(s, in, true);
    for (const bool det : {false, true}) {
      const std::string what = s.str() + " [sm90" + (det ? ", deterministic]" : "]");
      INFO(what);
      const auto d = make_desc(s, KILN_ATTENTION_IMPL_SM90, false, det);
      kiln_attention_impl_t got;
      REQUIRE(kiln_attention_resolve_impl(&d, 1, &got) == KILN_STATUS_OK);
      REQUIRE(got == KILN_ATTENTION_IMPL_SM90);
      const DeviceInputs di = upload(s, in, d, false);
      std::vector<bf16> first, again;
      check_grads(what, ref, base.grads, run_bwd(d, s, di, false, &first));
      if (!det) continue;
      for (int rep = 0; rep < reps; ++rep) {
        run_bwd(d, s, di, false, &again);
        CHECK(kiln::test::bitwise_equal(first, again));
      }
    }
  }
}

TEST_CASE("attention backward gives zero gradients, never NaN, where rows see no key",
          "[attention]") {
  const Shape s{1, 150, 40, 4, 2, 64, true};  // rows 0..109 see no key
  const Inputs in = make_inputs(s, 800);
  const Grads ref = reference_bwd(s, in);
  const Baseline base = baseline(s, in, true);
  for (const bool det : {false, true})
    for (const auto impl : paths(s, true, det)) {
      const std::string what = s.str() + " [" + name(impl) + (det ? ", det]" : "]");
      INFO(what);
      const auto d = make_desc(s, impl, false, det);
      const DeviceInputs di = upload(s, in, d, false);
      const Grads g = run_bwd(d, s, di, false);
      check_grads(what, ref, base.grads, g);
      size_t bad = 0;
      for (int64_t h = 0; h < s.NHq; ++h)
        for (int64_t i = 0; i < 110; ++i)
          for (int64_t dd = 0; dd < s.HD; ++dd)
            if (g.dq[static_cast<size_t>((i * s.NHq + h) * s.HD + dd)] != 0.0) ++bad;
      CHECK(bad == 0);
    }
}

// AUTO keeps the sm_80 backward on Hopper until the sm_90a one has been verified there
