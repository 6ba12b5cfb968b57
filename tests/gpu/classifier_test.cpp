// The fused classifier kernel against kiln::ref::classifier_ref (double) with the tolerance rule
// of DESIGN.md, on shapes that cover every path of the kernel: rows staged whole in shared memory
// (several blocks per SM, or one), rows staged in part (V = 128256 and 256K on H100), rows that
// do not start on 16 bytes (Vp not a multiple of 8), tiny V and over 100k rows; in place and out
// of place; outputs poisoned; twice, bitwise; ignored rows, bad targets, non-finite logits.
#include <catch2/catch.hpp>

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/classifier/classifier_ref.hpp"
#include "kiln/classifier.h"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/support.hpp"

namespace {

using kiln::test::DeviceBuffer;
using bf16 = __nv_bfloat16;

constexpr int32_t kIgnore = -100;
const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

struct Problem {
  int64_t N, V, Vp;
  std::vector<float> logits;  // (N, Vp), bf16 values; padding NaN (the kernel must not read it)
  std::vector<int32_t> targets;
  float dloss;
};

// Normal logits (std 2), a quarter of the rows made confident in their target (p near 1, where
// the target's gradient cancels), about 1 row in 16 ignored.
Problem make_problem(int64_t N, int64_t V, int64_t Vp, std::uint64_t stream) {
  auto rng = kiln::test::make_rng(stream);
  Problem p{N, V, Vp, {}, {}, 0.0f};
  p.logits.assign(N * Vp, kNaN);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::uniform_int_distribution<int64_t> cls(0, V - 1);
  std::uniform_int_distribution<int> coin(0, 63);
  p.targets.resize(N);
  int64_t count = 0;
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t j = 0; j < V; ++j)
      p.logits[r * Vp + j] = normal(rng);
    const int c = coin(rng);
    p.targets[r] = c < 4 && N > 1 ? kIgnore : static_cast<int32_t>(cls(rng));
    if (p.targets[r] != kIgnore && c >= 48) p.logits[r * Vp + p.targets[r]] += 14.0f;
    count += p.targets[r] != kIgnore;
  }
  p.logits = kiln::test::round_to_bf16(p.logits);
  p.dloss = count ? 1.0f / static_cast<float>(count) : 1.0f;
  return p;
}

struct Result {
  std::vector<float> losses;
  std::vector<bf16> dlogits;
};

Result run_kernel(const Problem& p, bool in_place) {
  DeviceBuffer<bf16> logits(kiln::test::to_bf16(p.logits));
  DeviceBuffer<bf16> separate(in_place ? 0 : p.logits.size());
  DeviceBuffer<int32_t> targets(p.targets);
  DeviceBuffer<float> losses(p.N);
  losses.poison();
  if (!in_place) separate.poison();
  bf16* dlogits = in_place ? logits.get() : separate.get();
  kiln::classifier_fwd_bwd(losses.get(), dlogits, logits.get(), targets.get(), p.N, p.V, p.Vp,
                           p.dloss, kIgnore, nullptr);
  return {losses.download(), in_place ? logits.download() : separate.download()};
}

// Checks a kernel result against the double reference and the fp32 baseline.
void check_against_reference(const Problem& p, const Result& got) {
  const auto x = kiln::test::to_double(p.logits);
  std::vector<double> ref_losses(p.N), ref_dlogits(p.N * p.Vp);
  kiln::ref::classifier_ref(ref_losses.data(), ref_dlogits.data(), x.data(), p.targets.data(), p.N,
                            p.V, p.Vp, p.dloss, kIgnore);
  std::vector<float> base_losses(p.N), base_dlogits(p.N * p.Vp);
  kiln::ref::classifier_ref<float, float>(base_losses.data(), base_dlogits.data(), p.logits.data(),
                                          p.targets.data(), p.N, p.V, p.Vp, p.dloss, kIgnore);
  base_dlogits = kiln::test::round_to_bf16(base_dlogits);
  const auto gd = kiln::test::to_double(got.dlogits);

  kiln::test::check_rule("losses", ref_losses, kiln::test::to_double(got.losses),
                         kiln::test::to_double(base_losses), 1e-5);

  // The target columns (p - 1) * dloss cancel when p is near 1: the rule, with one bf16 ulp of
  // dloss as the absolute term for a rounding that falls the other way. Every other column is one
  // product p * dloss: within one bf16 rounding (2^-8 relative) of the exact value, element by
  // element, plus the fp32 error before rounding (a few 1e-6 relative: ex2.approx and the rounded
  // exponent x log2(e) - max); ex2.approx.ftz flushes values below 2^-126 to zero (absolute term).
  std::vector<double> ref_t, got_t, base_t, ref_o, got_o;
  int64_t nonzero_padding = 0, nonzero_ignored = 0;
  for (int64_t r = 0; r < p.N; ++r) {
    for (int64_t j = 0; j < p.Vp; ++j) {
      const int64_t i = r * p.Vp + j;
      if (j >= p.V || p.targets[r] == kIgnore) {
        if (!(gd[i] == 0.0)) (j >= p.V ? nonzero_padding : nonzero_ignored) += 1;
      } else if (j == p.targets[r]) {
        ref_t.push_back(ref_dlogits[i]);
        got_t.push_back(gd[i]);
        base_t.push_back(base_dlogits[i]);
      } else {
        ref_o.push_back(ref_dlogits[i]);
        got_o.push_back(gd[i]);
      }
    }
    if (p.targets[r] == kIgnore) CHECK(got.losses[r] == 0.0f);
  }
  CHECK(nonzero_padding == 0);
  CHECK(nonzero_ignored == 0);
  kiln::test::check_rule("dlogits at the targets", ref_t, got_t, base_t,
                         std::ldexp(double(p.dloss), -7));
  kiln::test::check_close("dlogits off the targets", ref_o, got_o, std::ldexp(1.0, -8) + 2e-5,
                          1e-36);
}

struct Shape {
  int64_t N, V, Vp;
  bool large;  // skipped in quick mode
};

}  // namespace

TEST_CASE("classifier matches the reference on every path of the kernel", "[classifier]") {
  // V = 24500 stages 3064 units (48.9 KiB): past 48 KiB less the kernel's static shared memory
  // but not past 48 KiB, so it needs the opt-in too; it comes before the larger rows, whose
  // opt-in would cover it.
  const std::vector<Shape> shapes{
      {1, 1, 1, false},             // one class: loss 0, gradient 0
      {5, 1, 8, false},             // one class, padded
      {7, 3, 3, false},             // every row at a 2-byte offset
      {8, 24500, 24504, false},     // staged whole in 48.9 KiB: needs the opt-in
      {3, 50257, 50257, false},     // GPT-2, unpadded: rows at varying 16-byte offsets
      {33, 50257, 50304, false},    // GPT-2, padded: the fast path
      {17, 50304, 50304, false},    // V a multiple of 8, no padding
      {9, 80000, 80003, false},     // staged whole, one block per SM (H100), misaligned rows
      {20, 128256, 128256, false},  // Llama 3: staged in part on H100 and A100
      {4, 262144, 262151, true},    // 256K classes, misaligned rows
      {100003, 7, 8, false},        // over 100k rows
      {2048, 50257, 50304, true},   // a training-size slab
  };
  std::uint64_t stream = 1000;
  for (const Shape& s : shapes) {
    if (s.large && kiln::test::quick_mode()) continue;
    for (bool in_place : {true, false}) {
      INFO("N=" << s.N << " V=" << s.V << " Vp=" << s.Vp << (in_place ? " in place" : ""));
      const Problem p = make_problem(s.N, s.V, s.Vp, ++stream);
      const Result first = run_kernel(p, in_place);
      check_against_reference(p, first);
      const Result second = run_kernel(p, in_place);
      CHECK(kiln::test::bitwise_equal(first.losses, second.losses));
      CHECK(kiln::test::bitwise_equal(first.dlogits, second.dlogits));
    }
  }
}

TEST_CASE("classifier: non-finite logits and bad targets give NaN rows, never a fault",
          "[classifier][smoke]") {
  for (const int64_t V : {int64_t{37}, int64_t{50257}}) {
    const int64_t Vp = V == 37 ? 40 : 50304, N = 8;
    Problem p = make_problem(N, V, Vp, 77 + V);
    for (int64_t r = 0; r < N; ++r)
      p.targets[r] = static_cast<int32_t>((r * 5) % V);
    p.logits[0 * Vp + 3] = kNaN;                        // row 0: NaN logit
    p.logits[1 * Vp + 1] = kInf;                        // row 1: +Inf
    p.logits[2 * Vp + (p.targets[2] + 1) % V] = -kInf;  // row 2: a masked class (finite row)
    for (int64_t j = 0; j < V; ++j)
      p.logits[3 * Vp + j] = -kInf;          // row 3: all classes masked
    p.targets[4] = static_cast<int32_t>(V);  // rows 4-6: out of range, never read
    p.targets[5] = -1;
    p.targets[6] = 1 << 30;
    p.targets[7] = kIgnore;
    p.dloss = 0.125f;
    const Result got = run_kernel(p, true);
    for (int64_t r : {0, 1, 3, 4, 5, 6}) {
      INFO("V=" << V << " row " << r);
      CHECK(std::isnan(got.losses[r]));
    }
    CHECK(std::isfinite(got.losses[2]));
    CHECK(got.losses[7] == 0.0f);
    check_against_reference(p, got);  // NaN exactly where the reference has NaN
  }
}

TEST_CASE("classifier_mean_loss: deterministic mean over the rows not ignored", "[classifier]") {
  auto rng = kiln::test::make_rng(31);
  for (const int64_t N : {int64_t{0}, int64_t{1}, int64_t{1000}, int64_t{131077}}) {
    INFO("N=" << N);
    auto losses = kiln::test::random_uniform(N, 0.0f, 12.0f, rng);
    std::vector<int32_t> targets(N);
    std::uniform_int_distribution<int> coin(0, 9);
    for (auto& t : targets)
      t = coin(rng) == 0 ? kIgnore : 5;
    DeviceBuffer<float> d_losses(losses), mean(1);
    DeviceBuffer<int32_t> d_targets(targets);
    mean.poison();
    kiln::classifier_mean_loss(mean.get(), d_losses.get(), d_targets.get(), N, kIgnore, nullptr);
    const float first = mean.download()[0];
    const double ref =
        kiln::ref::classifier_mean_loss_ref(losses.data(), targets.data(), N, kIgnore);
    CHECK(double(first) == Approx(ref).epsilon(1e-7).margin(1e-30));
    mean.poison();
    kiln::classifier_mean_loss(mean.get(), d_losses.get(), d_targets.get(), N, kIgnore, nullptr);
    const float second = mean.download()[0];
    CHECK(kiln::test::bitwise_equal(std::vector<float>{first}, std::vector<float>{second}));
  }
  // Every row ignored: 0, not NaN.
  DeviceBuffer<float> losses(std::vector<float>(10, 3.0f)), mean(1);
  DeviceBuffer<int32_t> targets(std::vector<int32_t>(10, kIgnore));
  mean.poison();
  kiln::classifier_mean_loss(mean.get(), losses.get(), targets.get(), 10, kIgnore, nullptr);
  CHECK(mean.download()[0] == 0.0f);
}

TEST_CASE("classifier: the fused pass and the mean give PyTorch's mean cross-entropy",
          "[classifier][smoke]") {
  // End to end as the runtime uses it: dloss = 1 / count, then the device mean.
  const Problem p = make_problem(64, 50257, 50304, 4242);
  DeviceBuffer<bf16> logits(kiln::test::to_bf16(p.logits));
  DeviceBuffer<int32_t> targets(p.targets);
  DeviceBuffer<float> losses(p.N), mean(1);
  kiln::classifier_fwd_bwd(losses.get(), logits.get(), logits.get(), targets.get(), p.N, p.V, p.Vp,
                           p.dloss, kIgnore, nullptr);
  kiln::classifier_mean_loss(mean.get(), losses.get(), targets.get(), p.N, kIgnore, nullptr);
  const auto x = kiln::test::to_double(p.logits);
  std::vector<double> ref_losses(p.N), ref_dlogits(p.N * p.Vp);
  kiln::ref::classifier_ref(ref_losses.data(), ref_dlogits.data(), x.data(), p.targets.data(), p.N,
                            p.V, p.Vp, p.dloss, kIgnore);
  const double ref_mean =
      kiln::ref::classifier_mean_loss_ref(ref_losses.data(), p.targets.data(), p.N, kIgnore);
  CHECK(double(mean.download()[0]) == Approx(ref_mean).epsilon(1e-5));
}
