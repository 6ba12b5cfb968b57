// Attention forward on the device against the double reference, every path forced, with
// FlashAttention's tolerance rule (attention_support.hpp): ragged shapes (no multiple of any
// tile), GQA, Tq != Tk (rows that see no key), packed QKV strides, bitwise repeatability; and the
// smoke set. The backward is in attention_bwd_test.cpp, AUTO and cuDNN's plans in
// attention_dispatch_test.cpp.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kiln/attention.h"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/attention_support.hpp"

using namespace kiln::test::attn;

namespace {

std::vector<Shape> forward_shapes() {
  std::vector<Shape> shapes;
  for (const bool causal : {false, true}) {
    for (const int64_t hd : kHeadDims) {
      shapes.push_back({2, 1, 1, 4, 4, hd, causal});
      shapes.push_back({3, 17, 17, 8, 2, hd, causal});    // GQA 4
      shapes.push_back({1, 113, 113, 8, 1, hd, causal});  // MQA (GQA 8)
      shapes.push_back({2, 128, 128, 4, 4, hd, causal});
      shapes.push_back({2, 17, 113, 4, 1, hd, causal});  // Tq < Tk
      shapes.push_back({1, 113, 17, 4, 4, hd, causal});  // Tq > Tk: causal rows with no key
      shapes.push_back({1, 1, 1024, 8, 8, hd, causal});  // one query (decoding)
      shapes.push_back({1, 1023, 1023, 2, 2, hd, causal});
      shapes.push_back({1, 1024, 1024, 2, 1, hd, causal});
      if (!kiln::test::quick_mode() && kiln_head_dim(hd))
        shapes.push_back({1, 4224, 4224, 1, 1, hd, causal});
    }
  }
  return shapes;
}

}  // namespace

TEST_CASE("attention forward matches the reference on every path", "[attention]") {
  uint64_t stream = 100;
  for (const Shape& s : forward_shapes()) {
    const Inputs in = make_inputs(s, stream++);
    const FwdResult ref = reference_fwd(s, in);
    const Baseline base = baseline(s, in, false);
    check_fwd_paths(s, in, ref, base.fwd);
  }
}

TEST_CASE("attention forward reads Q, K, V inside a packed QKV buffer", "[attention]") {
  uint64_t stream = 200;
  for (const Shape& s : {Shape{2, 77, 77, 8, 2, 64, true}, Shape{1, 300, 300, 4, 4, 128, false},
                         Shape{3, 129, 129, 6, 1, 128, true}, Shape{2, 77, 77, 8, 2, 96, true},
                         Shape{1, 130, 130, 4, 2, 256, false}}) {
    const Inputs in = make_inputs(s, stream++);
    const FwdResult ref = reference_fwd(s, in);
    const Baseline base = baseline(s, in, false);
    check_fwd_paths(s, in, ref, base.fwd, Layout::kPacked);
  }
}

TEST_CASE("attention forward gives zeros and -inf, never NaN, for rows that see no key",
          "[attention]") {
  const Shape s{2, 200, 64, 4, 2, 128, true};  // rows 0..135 see no key
  const Inputs in = make_inputs(s, 300);
  for (const auto impl : paths(s, false)) {
    INFO(name(impl));
    const auto d = make_desc(s, impl, false, false);
    const DeviceInputs di = upload(s, in, d, false);
    const DeviceFwd f = run_fwd(d, s, di);
    const auto o = kiln::test::to_double(f.o.download());
    const auto lse = f.lse.download();
    size_t bad = 0;
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t h = 0; h < s.NHq; ++h)
        for (int64_t i = 0; i < s.Tq; ++i) {
          const bool empty = i + s.Tk - s.Tq < 0;
          const float l = lse[static_cast<size_t>((b * s.NHq + h) * s.Tq + i)];
          if (empty ? !(std::isinf(l) && l < 0) : !std::isfinite(l)) ++bad;
          for (int64_t dd = 0; dd < s.HD; ++dd) {
            const double x = o[static_cast<size_t>(((b * s.Tq + i) * s.NHq + h) * s.HD + dd)];
            if (!std::isfinite(x) || (empty && x != 0.0)) ++bad;
          }
        }
    CHECK(bad == 0);
  }
}

TEST_CASE("attention forward is bitwise repeatable", "[attention]") {
  const Shape s{2, 333, 333, 4, 2, 128, true};
  const Inputs in = make_inputs(s, 400);
  for (const auto impl : paths(s, false)) {
    INFO(name(impl));
    const auto d = make_desc(s, impl, false, false);
    const DeviceInputs di = upload(s, in, d, false);
    const auto first = run_fwd(d, s, di).o.download();
    for (int rep = 0; rep < 5; ++rep)
      CHECK(kiln::test::bitwise_equal(first, run_fwd(d, s, di).o.download()));
  }
}

// The smoke set (scripts/gpu-window.sh runs it first and under compute-sanitizer): every path
// that serves the shape (sm_80, sm_90a, cuDNN: required on Hopper, paths()), forward and both
// backward modes, on one causal GQA shape with ragged blocks, for each of kiln's head dims.
TEST_CASE("attention smoke: every path, forward and backward, one small shape per head dim",
          "[attention][smoke]") {
  uint64_t stream = 700;
  for (const int64_t hd : {int64_t{64}, int64_t{128}}) {
    const Shape s{2, 130, 130, 4, 2, hd, true};
    const Inputs in = make_inputs(s, stream++);
    const FwdResult ref_fwd = reference_fwd(s, in);
    const Grads ref = reference_bwd(s, in);
    const Baseline base_fwd = baseline(s, in, false);
    const Baseline base = baseline(s, in, true);
    check_fwd_paths(s, in, ref_fwd, base_fwd.fwd);
    check_bwd_paths(s, in, ref, base.grads);
  }
}
