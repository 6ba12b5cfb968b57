// The rotary embedding reference: the backward as the exact adjoint (and central differences),
// norms, positions and offsets, Llama 3's frequency scaling against Hugging Face's formula, the
// packed QKV layout, and the kernels' sine / cosine against libm (the C ABI: rope_capi_test.cpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/rope/rope_math.hpp"
#include "kernels/rope/rope_ref.hpp"
#include "kiln/rope.h"
#include "tests/common/compare.hpp"
#include "tests/common/rope_configs.hpp"
#include "tests/common/support.hpp"

using kiln::ref::rope_bwd_ref;
using kiln::ref::rope_fwd_ref;
using kiln::ref::rope_inv_freq_ref;
namespace kt = kiln::test;
using kiln::test::rope_llama3;
using kiln::test::rope_plain;

namespace {

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

}  // namespace

TEST_CASE("rope_bwd_ref is the adjoint of rope_fwd_ref", "[rope][ref]") {
  const auto config =
      GENERATE(rope_plain(6), rope_plain(64), rope_llama3(32, 32), rope_llama3(128, 8));
  const std::int64_t B = 2, T = 5, H = 3, hd = config.head_dim, pos = 11;
  CAPTURE(hd, config.scaling);
  const std::int64_t st = H * hd, sb = T * st, n = B * sb;
  auto rng = kt::make_rng(1601 + hd);
  const auto x = kt::random_uniform_double(n, -2, 2, rng);
  const auto y = kt::random_uniform_double(n, -2, 2, rng);
  auto rx = x, rty = y;
  rope_fwd_ref<double>(rx.data(), B, T, H, sb, st, pos, config);
  rope_bwd_ref<double>(rty.data(), B, T, H, sb, st, pos, config);
  // <R x, y> = <x, R^T y>
  CHECK(dot(rx, y) == Approx(dot(x, rty)).epsilon(1e-13));
  // R^T R = I
  auto back = rx;
  rope_bwd_ref<double>(back.data(), B, T, H, sb, st, pos, config);
  kt::check_close("R^T R x", x, back, 1e-13, 1e-14);
  // Rotations keep the norm of each (b, t, h) row, indeed of each pair (i, i + HD/2).
  for (std::int64_t r = 0; r < n / hd; ++r) {
    for (std::int64_t i = 0; i < hd / 2; ++i) {
      const double a = x[r * hd + i], b = x[r * hd + i + hd / 2];
      const double c = rx[r * hd + i], d = rx[r * hd + i + hd / 2];
      CHECK(c * c + d * d == Approx(a * a + b * b).epsilon(1e-13));
    }
  }
}

TEST_CASE("rope_bwd_ref matches central finite differences", "[rope][ref]") {
  const auto config = GENERATE(rope_plain(4), rope_llama3(8, 8));
  const std::int64_t B = 2, T = 3, H = 2, hd = config.head_dim;
  const std::int64_t st = H * hd + 3, sb = T * st + 5, n = (B - 1) * sb + (T - 1) * st + H * hd;
  auto rng = kt::make_rng(1602 + hd);
  const auto x = kt::random_uniform_double(n, -2, 2, rng);
  const auto w = kt::random_uniform_double(n, -1, 1, rng);
  auto f = [&](const std::vector<double>& v) {
    auto y = v;
    rope_fwd_ref<double>(y.data(), B, T, H, sb, st, 3, config);
    return kt::weighted_sum(y, w);
  };
  // The gradient of sum(w * y) is R^T w on the rotated elements and w on the padding.
  auto g = w;
  rope_bwd_ref<double>(g.data(), B, T, H, sb, st, 3, config);
  kt::check_close("dx vs finite differences", kt::central_difference(f, x), g, 1e-7, 1e-8);
}

TEST_CASE("rope_fwd_ref at known angles", "[rope][ref]") {
  // HD = 2: inv_freq[0] = 1, so position p rotates (x1, x2) by p radians.
  const auto config = rope_plain(2);
  std::vector<double> x = {1, 0, 1, 0, 1, 0, 0, 1};  // T = 4, H = 1
  rope_fwd_ref<double>(x.data(), 1, 4, 1, 8, 2, 0, config);
  CHECK(x[0] == 1);  // position 0: identity
  CHECK(x[1] == 0);
  CHECK(x[2] == Approx(std::cos(1.0)).epsilon(1e-15));
  CHECK(x[3] == Approx(std::sin(1.0)).epsilon(1e-15));
  CHECK(x[4] == Approx(std::cos(2.0)).epsilon(1e-15));
  CHECK(x[5] == Approx(std::sin(2.0)).epsilon(1e-15));
  CHECK(x[6] == Approx(-std::sin(3.0)).epsilon(1e-15));  // (0, 1) -> (-sin, cos)
  CHECK(x[7] == Approx(std::cos(3.0)).epsilon(1e-15));
  // HD = 4, theta = 100: inv_freq = {1, 1/10}; rotate-half pairs (0, 2) and (1, 3).
  std::vector<double> inv(2);
  rope_inv_freq_ref(rope_plain(4, 100), inv.data());
  CHECK(inv[0] == 1);
  CHECK(inv[1] == Approx(0.1).epsilon(1e-15));
  std::vector<double> y = {1, 1, 0, 0};
  rope_fwd_ref<double>(y.data(), 1, 1, 1, 4, 4, 5, rope_plain(4, 100));
  CHECK(y[0] == Approx(std::cos(5.0)).epsilon(1e-15));
  CHECK(y[2] == Approx(std::sin(5.0)).epsilon(1e-15));
  CHECK(y[1] == Approx(std::cos(0.5)).epsilon(1e-15));
  CHECK(y[3] == Approx(std::sin(0.5)).epsilon(1e-15));
}

TEST_CASE("rope at pos_offset on a slice equals the same rows of a full call", "[rope][ref]") {
  const auto config = rope_llama3(16, 32);
  const std::int64_t B = 2, T = 9, H = 3, hd = 16, st = H * hd, sb = T * st;
  auto rng = kt::make_rng(1603);
  const auto x = kt::random_uniform_double(B * sb, -1, 1, rng);
  for (const std::int64_t base : {std::int64_t{0}, std::int64_t{1000}}) {
    auto full = x;
    rope_fwd_ref<double>(full.data(), B, T, H, sb, st, base, config);
    for (std::int64_t p = 0; p < T; ++p) {
      // One token (KV-cache decoding), batch stride unchanged.
      auto one = x;
      rope_fwd_ref<double>(one.data() + p * st, B, 1, H, sb, st, base + p, config);
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t e = 0; e < st; ++e)
          CHECK(one[b * sb + p * st + e] == full[b * sb + p * st + e]);
    }
    // The tail from token 4 on, as its own call at offset base + 4.
    auto tail = x;
    rope_fwd_ref<double>(tail.data() + 4 * st, B, T - 4, H, sb, st, base + 4, config);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t e = 4 * st; e < sb; ++e)
        CHECK(tail[b * sb + e] == full[b * sb + e]);
  }
}

TEST_CASE("rope on packed QKV rotates Q and K like separate calls and leaves V", "[rope][ref]") {
  const auto config = rope_plain(8, 10000);
  const std::int64_t B = 2, T = 3, NH = 4, NKV = 2, hd = 8;
  const std::int64_t st = (NH + 2 * NKV) * hd, sb = T * st;
  auto rng = kt::make_rng(1604);
  const auto qkv0 = kt::random_uniform_double(B * sb, -1, 1, rng);
  auto qkv = qkv0;
  rope_fwd_ref<double>(qkv.data(), B, T, NH + NKV, sb, st, 0, config);
  // The separate layout: q (B, T, NH, HD) and k (B, T, NKV, HD), contiguous.
  std::vector<double> q(B * T * NH * hd), k(B * T * NKV * hd);
  for (std::int64_t bt = 0; bt < B * T; ++bt) {
    for (std::int64_t e = 0; e < NH * hd; ++e)
      q[bt * NH * hd + e] = qkv0[bt * st + e];
    for (std::int64_t e = 0; e < NKV * hd; ++e)
      k[bt * NKV * hd + e] = qkv0[bt * st + NH * hd + e];
  }
  rope_fwd_ref<double>(q.data(), B, T, NH, T * NH * hd, NH * hd, 0, config);
  rope_fwd_ref<double>(k.data(), B, T, NKV, T * NKV * hd, NKV * hd, 0, config);
  for (std::int64_t bt = 0; bt < B * T; ++bt) {
    for (std::int64_t e = 0; e < NH * hd; ++e)
      CHECK(qkv[bt * st + e] == q[bt * NH * hd + e]);
    for (std::int64_t e = 0; e < NKV * hd; ++e)
      CHECK(qkv[bt * st + NH * hd + e] == k[bt * NKV * hd + e]);
    for (std::int64_t e = (NH + NKV) * hd; e < st; ++e)
      CHECK(qkv[bt * st + e] == qkv0[bt * st + e]);  // V untouched, bit for bit
  }
}

TEST_CASE("kiln_rope_inv_freq gives Hugging Face's Llama 3 frequencies", "[rope][ref]") {
  // Hugging Face's _compute_llama3_parameters evaluated by hand (in double) for Llama 3.2
  // (head_dim 64, factor 32) and Llama 3.1 (head_dim 128, factor 8), theta 500000, low / high
  // frequency factors 1 / 4, original context 8192: the bands switch at wavelengths 2048 and 8192.
  struct Value {
    int i;
    double inv_freq;
  };
  const std::vector<Value> l32 = {
      {0, 1.0},                       // high band, kept
      {14, 0.0032114459947525913},    // wavelength 1956.5: kept
      {15, 0.001290547928209264},     // 2948.3: interpolated
      {16, 0.00042955679655936815},   // 4442.9: (1 - s) f / 32 + s f, s = (8192 / wl - 1) / 3
      {17, 9.7082878026276702e-05},   // 6695.1
      {18, 1.9461638184831125e-05},   // 10089: f / 32
      {31, 9.4183067254349087e-08}};  // last
  const std::vector<Value> l31 = {{0, 1.0},
                                  {28, 0.0032114459947525913},
                                  {29, 0.0021665707635033591},
                                  {34, 0.00017850781276799638},
                                  {35, 9.5562123539646833e-05},  // 8218.7, just past 8192: f / 8
                                  {63, 3.0689259889145111e-07}};
  for (const auto& [config, values] :
       {std::make_pair(rope_llama3(64, 32), l32), std::make_pair(rope_llama3(128, 8), l31)}) {
    CAPTURE(config.head_dim);
    std::vector<float> f(config.head_dim / 2, NAN);
    REQUIRE(kiln_rope_inv_freq(&config, f.data()) == KILN_STATUS_OK);
    std::vector<double> d(config.head_dim / 2);
    rope_inv_freq_ref(config, d.data());
    for (const auto& v : values) {
      CAPTURE(v.i);
      CHECK(d[v.i] == Approx(v.inv_freq).epsilon(1e-14));
      CHECK(f[v.i] == static_cast<float>(d[v.i]));  // the fp32 rounding of the double value
    }
    for (std::size_t i = 1; i < f.size(); ++i)
      CHECK(f[i] < f[i - 1]);  // still decreasing across the band edges
  }
  // Without scaling: theta^(-2i/HD).
  const auto c = rope_plain(64, 10000);
  std::vector<float> f(32);
  kiln::rope_inv_freq(c, f.data());
  for (int i = 0; i < 32; ++i)
    CHECK(f[i] == static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / 64)));
  // The table kept from the last call is not reused for a configuration that differs in one field.
  std::vector<float> g(32), h(32);
  kiln::rope_inv_freq(rope_llama3(64, 32), g.data());
  kiln::rope_inv_freq(rope_llama3(64, 8), h.data());
  CHECK(g[31] * 4 == Approx(h[31]).epsilon(1e-6));  // the low band: f / 32 against f / 8
  auto k = rope_llama3(64, 8);
  k.original_max_position = 4096;
  kiln::rope_inv_freq(k, g.data());
  CHECK(g != h);
  kiln::rope_inv_freq(rope_plain(64, 500000), g.data());
  CHECK(g[0] == 1);
  CHECK(g[31] == Approx(h[31] * 8).epsilon(1e-6));
}

TEST_CASE("rope references in float agree with double", "[rope][ref]") {
  const auto config = rope_llama3(64, 32);
  const std::int64_t B = 2, T = 7, H = 5, hd = 64, st = H * hd, sb = T * st;
  auto rng = kt::make_rng(1605);
  const auto x = kt::random_uniform(B * sb, -2, 2, rng);
  auto xf = x;
  auto xd = kt::to_double(x);
  rope_fwd_ref<float>(xf.data(), B, T, H, sb, st, 100, config);
  rope_fwd_ref<double>(xd.data(), B, T, H, sb, st, 100, config);
  kt::check_close("fwd", xd, kt::to_double(xf), 1e-6, 1e-6);
  // The same-precision baseline (Acc = float: fp32 angle) drifts with the position, as fp32
  // angles do, but stays a rotation.
  auto xb = x;
  rope_fwd_ref<float, float>(xb.data(), B, T, H, sb, st, 100, config);
  kt::check_close("fp32 baseline", xd, kt::to_double(xb), 1e-4, 1e-4);
}

TEST_CASE("the kernels' sine and cosine of fp32 angles match libm in double", "[rope][ref]") {
  auto rng = kt::make_rng(1606);
  double worst = 0;
  auto check_angle = [&](float a) {
    float s = 0, c = 0;
    kiln::rope_math::sincos_angle(a, &s, &c);
    const double es = std::fabs(s - std::sin(static_cast<double>(a)));
    const double ec = std::fabs(c - std::cos(static_cast<double>(a)));
    worst = std::max({worst, es, ec});
  };
  for (const double hi : {4.0, 1e3, 1.1e5, 2.2e9}) {
    for (const float a :
         kt::random_uniform(200000, static_cast<float>(-hi), static_cast<float>(hi), rng))
      check_angle(a);
  }
  // Near multiples of pi/2 (the reduction's hard cases) and at exact integers (positions).
  for (int k = -200000; k <= 200000; k += 7) {
    check_angle(static_cast<float>(k * 1.5707963267948966));
    check_angle(static_cast<float>(k));
  }
  check_angle(0.0f);
  check_angle(2147483520.0f);  // the largest fp32 position below 2^31
  CAPTURE(worst);
  CHECK(worst < 1.5e-7);  // about 1 ulp of values near 1; libm's sinf / cosf: 3e-8
}
