// The optimizer references: AdamW against steps derived by hand, bias correction, decay only
// where marked, the clip scale; the global norm.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/optimizer/optimizer_ref.hpp"

using kiln::ref::adamw_ref;
using kiln::ref::AdamWConfig;
using kiln::ref::clip_scale_ref;
using kiln::ref::global_norm_ref;

TEST_CASE("adamw_ref: two steps derived by hand", "[optimizer]") {
  const AdamWConfig cfg{0.1, 0.9, 0.999, 1e-8, 0.01};
  double p = 1.0, m = 0.0, v = 0.0;
  // Step 1, g = 0.5: m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 0.00025; the bias corrections
  // (0.1, 0.001) undo the (1 - beta) factors: m_hat = 0.5, v_hat = 0.25, so the update is
  // 0.5 / (0.5 + 1e-8) + 0.01 * 1 and p = 1 - 0.1 * (0.99999998 + 0.01) = 0.899000002.
  double g = 0.5;
  adamw_ref(&p, &m, &v, &g, 1, cfg, 1, 1.0, true);
  CHECK(m == Approx(0.05).epsilon(1e-14));
  CHECK(v == Approx(0.00025).epsilon(1e-14));
  CHECK(p == Approx(0.899000002).epsilon(1e-14));
  // Step 2, g = -0.2: m = 0.9 * 0.05 - 0.02 = 0.025, v = 0.999 * 0.00025 + 0.001 * 0.04 =
  // 0.00028975; bias corrections 1 - 0.9^2 = 0.19 and 1 - 0.999^2 = 0.001999: m_hat = 0.025 /
  // 0.19 = 0.13157894736842, v_hat = 0.1449474737368684, sqrt(v_hat) = 0.380719678683504;
  // p = 0.899000002 - 0.1 * (0.13157894736842 / (0.380719678683504 + 1e-8) + 0.00899000002)
  //   = 0.8635404181145.
  g = -0.2;
  adamw_ref(&p, &m, &v, &g, 1, cfg, 2, 1.0, true);
  CHECK(m == Approx(0.025).epsilon(1e-13));
  CHECK(v == Approx(0.00028975).epsilon(1e-13));
  CHECK(p == Approx(0.8635404181145109).epsilon(1e-13));
}

TEST_CASE("adamw_ref: weight decay applies only to tensors marked for it", "[optimizer]") {
  const AdamWConfig cfg{0.01, 0.9, 0.95, 1e-8, 0.1};
  // A zero gradient on zero moments gives a zero Adam update: only decay can move p.
  for (bool decay : {false, true}) {
    double p = 2.0, m = 0.0, v = 0.0, g = 0.0;
    adamw_ref(&p, &m, &v, &g, 1, cfg, 3, 1.0, decay);
    CHECK(p == (decay ? Approx(2.0 * (1 - 0.01 * 0.1)).epsilon(1e-15) : Approx(2.0)));
    CHECK(m == 0.0);
    CHECK(v == 0.0);
  }
}

TEST_CASE("adamw_ref: the clip scale multiplies the gradient", "[optimizer]") {
  const AdamWConfig cfg{0.001, 0.9, 0.999, 1e-8, 0.0};
  std::vector<double> p{1.0, -2.0, 0.5}, m{0.1, -0.2, 0.0}, v{0.01, 0.02, 0.0};
  std::vector<double> g{3.0, -1.0, 0.25};
  auto p2 = p, m2 = m, v2 = v;
  std::vector<double> g_scaled{0.75, -0.25, 0.0625};
  adamw_ref(p.data(), m.data(), v.data(), g.data(), 3, cfg, 10, 0.25, false);
  adamw_ref(p2.data(), m2.data(), v2.data(), g_scaled.data(), 3, cfg, 10, 1.0, false);
  for (int i = 0; i < 3; ++i) {
    CHECK(p[i] == Approx(p2[i]).epsilon(1e-15));
    CHECK(m[i] == Approx(m2[i]).epsilon(1e-15));
    CHECK(v[i] == Approx(v2[i]).epsilon(1e-15));
  }
  // Late in training the bias corrections vanish: m_hat -> m, v_hat -> v.
  double pl = 1.0, ml = 0.2, vl = 0.04, gl = 0.2;
  adamw_ref(&pl, &ml, &vl, &gl, 1, cfg, 100000, 1.0, false);
  CHECK(pl == Approx(1.0 - 0.001 * 0.2 / (0.2 + 1e-8)).epsilon(1e-12));
}

TEST_CASE("global_norm_ref and clip_scale_ref", "[optimizer]") {
  const std::vector<float> a{3.0f, 4.0f}, b{}, c{12.0f};
  const float* tensors[] = {a.data(), b.data(), c.data()};
  const std::int64_t sizes[] = {2, 0, 1};
  CHECK(global_norm_ref(tensors, sizes, 3) == 13.0);
  CHECK(global_norm_ref(tensors, sizes, 0) == 0.0);

  CHECK(clip_scale_ref(13.0, 1.0) == Approx(1.0 / (13.0 + 1e-6)).epsilon(1e-15));
  CHECK(clip_scale_ref(0.5, 1.0) == 1.0);
  CHECK(clip_scale_ref(13.0, 0.0) == 1.0);  // max_norm <= 0: no clipping
  CHECK(std::isnan(clip_scale_ref(std::numeric_limits<double>::quiet_NaN(), 1.0)));
  CHECK(clip_scale_ref(std::numeric_limits<double>::infinity(), 1.0) == 0.0);
}
