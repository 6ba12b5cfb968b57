// The fused classifier's reference: its gradient against central differences of its own loss,
// known values, in-place aliasing, the ignore index, invalid targets and non-finite logits.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/classifier/classifier_ref.hpp"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"

namespace {

using kiln::ref::classifier_mean_loss_ref;
using kiln::ref::classifier_ref;

constexpr std::int32_t kIgnore = -100;

struct Case {
  std::int64_t N, V, Vp;
  std::vector<std::int32_t> targets;
};

// dloss * sum of the per-row losses: the scalar whose gradient classifier_ref returns.
double total_loss(const std::vector<double>& logits, const Case& c, double dloss) {
  std::vector<double> losses(c.N), dlogits(logits.size());
  classifier_ref(losses.data(), dlogits.data(), logits.data(), c.targets.data(), c.N, c.V, c.Vp,
                 dloss, kIgnore);
  double s = 0;
  for (double l : losses)
    s += l;
  return dloss * s;
}

}  // namespace

TEST_CASE("classifier_ref: dlogits is the gradient of dloss * sum(losses)", "[classifier]") {
  auto rng = kiln::test::make_rng(101);
  // Rows with ordinary targets, the last class, an ignored row, V not a multiple of 8, padding.
  for (const Case& c : {Case{4, 7, 10, {3, 0, kIgnore, 6}}, Case{3, 1, 1, {0, 0, kIgnore}},
                        Case{2, 13, 16, {12, 5}}}) {
    const double dloss = 0.37;
    auto logits = kiln::test::random_uniform_double(c.N * c.Vp, -3, 3, rng);
    std::vector<double> losses(c.N), dlogits(logits.size(), 99.0);
    classifier_ref(losses.data(), dlogits.data(), logits.data(), c.targets.data(), c.N, c.V, c.Vp,
                   dloss, kIgnore);
    const auto numeric = kiln::test::central_difference(
        [&](const std::vector<double>& x) { return total_loss(x, c, dloss); }, logits, 1e-5);
    kiln::test::check_close("dlogits vs central differences", numeric, dlogits, 1e-6, 1e-9);
    for (std::int64_t r = 0; r < c.N; ++r) {
      double row_sum = 0;
      for (std::int64_t j = 0; j < c.Vp; ++j) {
        const double g = dlogits[r * c.Vp + j];
        if (j >= c.V || c.targets[r] == kIgnore) CHECK(g == 0.0);  // exact zeros
        row_sum += g;
      }
      CHECK(row_sum == Approx(0.0).margin(1e-12));  // softmax sums to one
      if (c.targets[r] == kIgnore) CHECK(losses[r] == 0.0);
    }
  }
}

TEST_CASE("classifier_ref: known losses, shift invariance, large logits", "[classifier]") {
  const std::int64_t V = 50257, Vp = 50304;
  std::vector<double> logits(2 * Vp, 0.0);
  for (std::int64_t j = 0; j < V; ++j)
    logits[Vp + j] = 1000.0 + 0.001 * double(j % 7);  // would overflow a naive exp
  logits[Vp + 17] = 1030.0;
  std::vector<std::int32_t> targets{123, 17};
  std::vector<double> losses(2), dlogits(2 * Vp);
  classifier_ref(losses.data(), dlogits.data(), logits.data(), targets.data(), 2, V, Vp, 1.0,
                 kIgnore);
  CHECK(losses[0] == Approx(std::log(double(V))).epsilon(1e-12));  // uniform: log V
  CHECK(dlogits[0] == Approx(1.0 / V).epsilon(1e-12));
  CHECK(dlogits[123] == Approx(1.0 / V - 1.0).epsilon(1e-12));
  CHECK(std::isfinite(losses[1]));
  CHECK(losses[1] > 0);
  CHECK(losses[1] < 1e-6);  // the target dominates by e^30
  // Subtracting a constant from a row changes nothing.
  std::vector<double> shifted(logits);
  for (std::int64_t j = 0; j < Vp; ++j)
    shifted[Vp + j] -= 1000.0;
  std::vector<double> losses2(2), dlogits2(2 * Vp);
  classifier_ref(losses2.data(), dlogits2.data(), shifted.data(), targets.data(), 2, V, Vp, 1.0,
                 kIgnore);
  // lse - x_target cancels near 1030 in one row: compare absolutely.
  CHECK(losses2[1] == Approx(losses[1]).margin(1e-12));
  kiln::test::check_close("shifted row", std::vector<double>(dlogits.begin() + Vp, dlogits.end()),
                          std::vector<double>(dlogits2.begin() + Vp, dlogits2.end()), 1e-9, 1e-15);
}

TEST_CASE("classifier_ref: in place equals out of place; float follows double", "[classifier]") {
  auto rng = kiln::test::make_rng(102);
  const std::int64_t N = 6, V = 37, Vp = 40;
  const std::vector<std::int32_t> targets{0, 36, kIgnore, 5, 20, 11};
  auto logits = kiln::test::random_uniform(N * Vp, -4, 4, rng);
  std::vector<float> losses(N), dlogits(N * Vp);
  classifier_ref(losses.data(), dlogits.data(), logits.data(), targets.data(), N, V, Vp, 0.25,
                 kIgnore);
  std::vector<float> inplace(logits), losses_inplace(N);
  classifier_ref(losses_inplace.data(), inplace.data(), inplace.data(), targets.data(), N, V, Vp,
                 0.25, kIgnore);
  CHECK(kiln::test::bitwise_equal(dlogits, inplace));
  CHECK(kiln::test::bitwise_equal(losses, losses_inplace));

  const auto logits_d = kiln::test::to_double(logits);
  std::vector<double> losses_d(N), dlogits_d(N * Vp);
  classifier_ref(losses_d.data(), dlogits_d.data(), logits_d.data(), targets.data(), N, V, Vp, 0.25,
                 kIgnore);
  kiln::test::check_close("float losses", losses_d, kiln::test::to_double(losses), 1e-6, 1e-7);
  kiln::test::check_close("float dlogits", dlogits_d, kiln::test::to_double(dlogits), 1e-6, 1e-9);
}

TEST_CASE("classifier_ref: invalid targets and non-finite logits give NaN rows", "[classifier]") {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::int64_t N = 6, V = 5, Vp = 8;
  std::vector<double> logits(N * Vp, 0.5);
  for (std::int64_t r = 0; r < N; ++r)
    for (std::int64_t j = V; j < Vp; ++j)
      logits[r * Vp + j] = nan;  // padding is never read
  logits[2 * Vp + 1] = nan;      // row 2: a NaN logit
  logits[3 * Vp + 4] = inf;      // row 3: +Inf
  logits[4 * Vp + 0] = -inf;     // row 4: a masked class, not the target
  for (std::int64_t j = 0; j < V; ++j)
    logits[5 * Vp + j] = -inf;                                 // row 5: every class masked
  const std::vector<std::int32_t> targets{5, -1, 0, 0, 2, 1};  // rows 0, 1: out of range
  std::vector<double> losses(N), dlogits(N * Vp);
  classifier_ref(losses.data(), dlogits.data(), logits.data(), targets.data(), N, V, Vp, 1.0,
                 kIgnore);
  for (std::int64_t r : {0, 1, 2, 3, 5}) {
    INFO("row " << r);
    CHECK(std::isnan(losses[r]));
    for (std::int64_t j = 0; j < V; ++j)
      CHECK(std::isnan(dlogits[r * Vp + j]));
    for (std::int64_t j = V; j < Vp; ++j)
      CHECK(dlogits[r * Vp + j] == 0.0);
  }
  CHECK(losses[4] == Approx(std::log(4.0)).epsilon(1e-12));
  CHECK(dlogits[4 * Vp + 0] == 0.0);
  CHECK(dlogits[4 * Vp + 2] == Approx(0.25 - 1.0).epsilon(1e-12));
}

TEST_CASE("classifier_mean_loss_ref: mean over the rows that are not ignored", "[classifier]") {
  const std::vector<double> losses{1.0, 99.0, 2.0, 6.0};
  const std::vector<std::int32_t> targets{3, kIgnore, 0, 7};
  CHECK(classifier_mean_loss_ref(losses.data(), targets.data(), 4, kIgnore) == 3.0);
  const std::vector<std::int32_t> all_ignored(4, kIgnore);
  CHECK(classifier_mean_loss_ref(losses.data(), all_ignored.data(), 4, kIgnore) == 0.0);
  CHECK(classifier_mean_loss_ref(losses.data(), targets.data(), 0, kIgnore) == 0.0);
}
