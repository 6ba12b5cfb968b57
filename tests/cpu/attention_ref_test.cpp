// The attention reference: its forward against independent identities (a single key, a causal first
// row, GQA as repeated heads, packed strides, the bottom-right causal rule), its backward against
// central finite differences in double.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/attention/attention_ref.hpp"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"

using kiln::ref::attention_bwd_ref;
using kiln::ref::attention_fwd_ref;
using kiln::ref::AttentionLayout;

namespace {

struct Shape {
  int64_t B, Tq, Tk, NHq, NHkv, HD;
  bool causal;
  int64_t q_elems() const { return B * Tq * NHq * HD; }
  int64_t kv_elems() const { return B * Tk * NHkv * HD; }
  int64_t lse_elems() const { return B * NHq * Tq; }
  double scale() const { return 1.0 / std::sqrt(static_cast<double>(HD)); }
};

std::vector<double> rand_vec(int64_t n, std::mt19937_64& rng) {
  return kiln::test::random_uniform_double(static_cast<size_t>(n), -1.0, 1.0, rng);
}

struct Fwd {
  std::vector<double> out, lse;
};

Fwd run_fwd(const Shape& s, const std::vector<double>& q, const std::vector<double>& k,
            const std::vector<double>& v) {
  Fwd r{std::vector<double>(s.q_elems()), std::vector<double>(s.lse_elems())};
  attention_fwd_ref(r.out.data(), r.lse.data(), q.data(), k.data(), v.data(), s.B, s.Tq, s.Tk,
                    s.NHq, s.NHkv, s.HD, s.scale(), s.causal);
  return r;
}

}  // namespace

TEST_CASE("attention reference: one key gives that key's value and its scaled score as LSE",
          "[attention]") {
  auto rng = kiln::test::make_rng(801);
  const Shape s{2, 5, 1, 3, 3, 8, false};
  const auto q = rand_vec(s.q_elems(), rng), k = rand_vec(s.kv_elems(), rng),
             v = rand_vec(s.kv_elems(), rng);
  const Fwd f = run_fwd(s, q, k, v);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.Tq; ++i)
      for (int64_t h = 0; h < s.NHq; ++h) {
        const double* qi = &q[((b * s.Tq + i) * s.NHq + h) * s.HD];
        const double* kj = &k[(b * s.NHkv + h) * s.HD];
        double dot = 0;
        for (int64_t d = 0; d < s.HD; ++d) {
          CHECK(f.out[((b * s.Tq + i) * s.NHq + h) * s.HD + d] ==
                Approx(v[(b * s.NHkv + h) * s.HD + d]).margin(1e-15));
          dot += qi[d] * kj[d];
        }
        CHECK(f.lse[(b * s.NHq + h) * s.Tq + i] == Approx(dot * s.scale()).margin(1e-14));
      }
}

TEST_CASE("attention reference: LSE is the log of the softmax normaliser, rows are convex sums",
          "[attention]") {
  auto rng = kiln::test::make_rng(802);
  const Shape s{1, 7, 9, 2, 2, 16, false};
  const auto q = rand_vec(s.q_elems(), rng), k = rand_vec(s.kv_elems(), rng);
  // V constant per head dim: every output must equal it (the weights sum to one).
  std::vector<double> v(s.kv_elems());
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = 0.25 * static_cast<double>(i % s.HD) - 1.0;
  const Fwd f = run_fwd(s, q, k, v);
  for (size_t i = 0; i < f.out.size(); ++i)
    CHECK(f.out[i] == Approx(0.25 * static_cast<double>(i % s.HD) - 1.0).margin(1e-13));
  // LSE from its definition.
  for (int64_t h = 0; h < s.NHq; ++h)
    for (int64_t i = 0; i < s.Tq; ++i) {
      double sum = 0;
      for (int64_t j = 0; j < s.Tk; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < s.HD; ++d)
          dot += q[(i * s.NHq + h) * s.HD + d] * k[(j * s.NHkv + h) * s.HD + d];
        sum += std::exp(dot * s.scale());
      }
      CHECK(f.lse[h * s.Tq + i] == Approx(std::log(sum)).epsilon(1e-13));
    }
}

TEST_CASE("attention reference: causal with Tq != Tk is aligned to the bottom right",
          "[attention]") {
  auto rng = kiln::test::make_rng(803);
  for (const auto& [Tq, Tk] : {std::pair<int64_t, int64_t>{5, 9}, {9, 5}, {6, 6}}) {
    const Shape s{1, Tq, Tk, 2, 1, 8, true};
    const auto q = rand_vec(s.q_elems(), rng), k = rand_vec(s.kv_elems(), rng),
               v = rand_vec(s.kv_elems(), rng);
    const Fwd f = run_fwd(s, q, k, v);
    for (int64_t i = 0; i < Tq; ++i) {
      const int64_t visible = i + Tk - Tq + 1;  // keys 0 .. i + Tk - Tq
      INFO("Tq " << Tq << " Tk " << Tk << " row " << i << " sees " << visible << " keys");
      for (int64_t h = 0; h < s.NHq; ++h) {
        const double* oi = &f.out[(i * s.NHq + h) * s.HD];
        const double lse = f.lse[h * Tq + i];
        if (visible <= 0) {
          // No key: zeros and -inf, never NaN.
          for (int64_t d = 0; d < s.HD; ++d)
            CHECK(oi[d] == 0.0);
          CHECK(lse == -std::numeric_limits<double>::infinity());
          continue;
        }
        // The row equals bidirectional attention over the visible prefix of the keys.
        const Shape p{1, 1, visible, 1, 1, 8, false};
        std::vector<double> qi(&q[(i * s.NHq + h) * s.HD], &q[(i * s.NHq + h) * s.HD] + 8);
        std::vector<double> kp(static_cast<size_t>(visible * 8)), vp(kp.size());
        for (int64_t j = 0; j < visible; ++j)
          for (int64_t d = 0; d < 8; ++d) {
            kp[j * 8 + d] = k[j * 8 + d];
            vp[j * 8 + d] = v[j * 8 + d];
          }
        const Fwd r = run_fwd(p, qi, kp, vp);
        for (int64_t d = 0; d < s.HD; ++d)
          CHECK(oi[d] == Approx(r.out[d]).margin(1e-14));
        CHECK(lse == Approx(r.lse[0]).margin(1e-14));
      }
    }
  }
}

TEST_CASE("attention reference: GQA equals attention with the K/V heads repeated", "[attention]") {
  auto rng = kiln::test::make_rng(804);
  for (const int64_t NHkv : {int64_t{1}, int64_t{2}, int64_t{4}}) {
    const Shape g{2, 6, 7, 8, NHkv, 8, true};
    const Shape m{2, 6, 7, 8, 8, 8, true};
    const auto q = rand_vec(g.q_elems(), rng), k = rand_vec(g.kv_elems(), rng),
               v = rand_vec(g.kv_elems(), rng), dout = rand_vec(g.q_elems(), rng);
    std::vector<double> k8(m.kv_elems()), v8(m.kv_elems());
    const int64_t group = g.NHq / NHkv;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t j = 0; j < 7; ++j)
        for (int64_t h = 0; h < 8; ++h)
          for (int64_t d = 0; d < 8; ++d) {
            k8[((b * 7 + j) * 8 + h) * 8 + d] = k[((b * 7 + j) * NHkv + h / group) * 8 + d];
            v8[((b * 7 + j) * 8 + h) * 8 + d] = v[((b * 7 + j) * NHkv + h / group) * 8 + d];
          }
    const Fwd fg = run_fwd(g, q, k, v), fm = run_fwd(m, q, k8, v8);
    kiln::test::check_close("GQA out", fm.out, fg.out, 0, 1e-14);
    kiln::test::check_close("GQA lse", fm.lse, fg.lse, 0, 1e-14);
    // Backward: dQ equal; dK, dV of a shared head are the sums over its query heads.
    std::vector<double> dq(g.q_elems()), dk(g.kv_elems()), dv(g.kv_elems());
    std::vector<double> dq8(m.q_elems()), dk8(m.kv_elems()), dv8(m.kv_elems());
    attention_bwd_ref(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(),
                      g.B, g.Tq, g.Tk, g.NHq, g.NHkv, g.HD, g.scale(), g.causal);
    attention_bwd_ref(dq8.data(), dk8.data(), dv8.data(), dout.data(), q.data(), k8.data(),
                      v8.data(), m.B, m.Tq, m.Tk, m.NHq, m.NHkv, m.HD, m.scale(), m.causal);
    kiln::test::check_close("GQA dq", dq8, dq, 0, 1e-14);
    std::vector<double> dk_sum(g.kv_elems(), 0.0), dv_sum(g.kv_elems(), 0.0);
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t j = 0; j < 7; ++j)
        for (int64_t h = 0; h < 8; ++h)
          for (int64_t d = 0; d < 8; ++d) {
            dk_sum[((b * 7 + j) * NHkv + h / group) * 8 + d] += dk8[((b * 7 + j) * 8 + h) * 8 + d];
            dv_sum[((b * 7 + j) * NHkv + h / group) * 8 + d] += dv8[((b * 7 + j) * 8 + h) * 8 + d];
          }
    kiln::test::check_close("GQA dk", dk_sum, dk, 0, 1e-13);
    kiln::test::check_close("GQA dv", dv_sum, dv, 0, 1e-13);
  }
}

TEST_CASE("attention reference: packed QKV strides give the contiguous results", "[attention]") {
  auto rng = kiln::test::make_rng(805);
  const int64_t B = 2, T = 5, NHq = 4, NHkv = 2, HD = 8;
  const int64_t width = (NHq + 2 * NHkv) * HD;
  const auto qkv = rand_vec(B * T * width, rng), dout = rand_vec(B * T * NHq * HD, rng);
  std::vector<double> q(B * T * NHq * HD), k(B * T * NHkv * HD), v(k.size());
  for (int64_t bt = 0; bt < B * T; ++bt) {
    for (int64_t e = 0; e < NHq * HD; ++e)
      q[bt * NHq * HD + e] = qkv[bt * width + e];
    for (int64_t e = 0; e < NHkv * HD; ++e) {
      k[bt * NHkv * HD + e] = qkv[bt * width + NHq * HD + e];
      v[bt * NHkv * HD + e] = qkv[bt * width + (NHq + NHkv) * HD + e];
    }
  }
  const double scale = 0.3;
  const AttentionLayout packed = AttentionLayout::packed_qkv(T, NHq, NHkv, HD);
  std::vector<double> out(q.size()), lse(B * NHq * T), out_c(q.size()), lse_c(lse.size());
  attention_fwd_ref(out.data(), lse.data(), qkv.data(), qkv.data() + NHq * HD,
                    qkv.data() + (NHq + NHkv) * HD, B, T, T, NHq, NHkv, HD, scale, true, packed);
  attention_fwd_ref(out_c.data(), lse_c.data(), q.data(), k.data(), v.data(), B, T, T, NHq, NHkv,
                    HD, scale, true);
  kiln::test::check_close("packed out", out_c, out, 0, 0);
  kiln::test::check_close("packed lse", lse_c, lse, 0, 0);

  // The gradient lands in a packed dQKV buffer; its parts equal the contiguous gradients.
  const double sentinel = 12345.0;
  std::vector<double> dqkv(qkv.size(), sentinel);
  attention_bwd_ref(dqkv.data(), dqkv.data() + NHq * HD, dqkv.data() + (NHq + NHkv) * HD,
                    dout.data(), qkv.data(), qkv.data() + NHq * HD, qkv.data() + (NHq + NHkv) * HD,
                    B, T, T, NHq, NHkv, HD, scale, true, packed);
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
  attention_bwd_ref(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), B,
                    T, T, NHq, NHkv, HD, scale, true);
  std::vector<double> dq_p(q.size()), dk_p(k.size()), dv_p(v.size());
  for (int64_t bt = 0; bt < B * T; ++bt) {
    for (int64_t e = 0; e < NHq * HD; ++e)
      dq_p[bt * NHq * HD + e] = dqkv[bt * width + e];
    for (int64_t e = 0; e < NHkv * HD; ++e) {
      dk_p[bt * NHkv * HD + e] = dqkv[bt * width + NHq * HD + e];
      dv_p[bt * NHkv * HD + e] = dqkv[bt * width + (NHq + NHkv) * HD + e];
    }
  }
  kiln::test::check_close("packed dq", dq, dq_p, 0, 0);
  kiln::test::check_close("packed dk", dk, dk_p, 0, 0);
  kiln::test::check_close("packed dv", dv, dv_p, 0, 0);
}

TEST_CASE("attention reference: backward matches central finite differences", "[attention]") {
  auto rng = kiln::test::make_rng(806);
  // Bidirectional and causal, MHA and GQA, Tq < Tk and Tq > Tk (rows that see no key).
  const Shape shapes[] = {{1, 4, 4, 2, 2, 4, false},
                          {2, 3, 5, 4, 2, 4, true},
                          {1, 6, 3, 2, 1, 4, true},
                          {1, 5, 6, 3, 1, 8, false}};
  for (const Shape& s : shapes) {
    INFO("B " << s.B << " Tq " << s.Tq << " Tk " << s.Tk << " NHq " << s.NHq << " NHkv " << s.NHkv
              << " HD " << s.HD << " causal " << s.causal);
    const auto q = rand_vec(s.q_elems(), rng), k = rand_vec(s.kv_elems(), rng),
               v = rand_vec(s.kv_elems(), rng), w = rand_vec(s.q_elems(), rng);
    std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
    attention_bwd_ref(dq.data(), dk.data(), dv.data(), w.data(), q.data(), k.data(), v.data(), s.B,
                      s.Tq, s.Tk, s.NHq, s.NHkv, s.HD, s.scale(), s.causal);
    const auto loss = [&](const std::vector<double>& qq, const std::vector<double>& kk,
                          const std::vector<double>& vv) {
      return kiln::test::weighted_sum(run_fwd(s, qq, kk, vv).out, w);
    };
    const auto nq = kiln::test::central_difference(
        [&](const std::vector<double>& x) { return loss(x, k, v); }, q);
    const auto nk = kiln::test::central_difference(
        [&](const std::vector<double>& x) { return loss(q, x, v); }, k);
    const auto nv = kiln::test::central_difference(
        [&](const std::vector<double>& x) { return loss(q, k, x); }, v);
    kiln::test::check_close("dq", nq, dq, 1e-6, 1e-8);
    kiln::test::check_close("dk", nk, dk, 1e-6, 1e-8);
    kiln::test::check_close("dv", nv, dv, 1e-6, 1e-8);
  }
}

TEST_CASE("attention reference: float instantiation agrees with double", "[attention]") {
  auto rng = kiln::test::make_rng(807);
  const Shape s{1, 9, 11, 4, 2, 16, true};
  const auto q = rand_vec(s.q_elems(), rng), k = rand_vec(s.kv_elems(), rng),
             v = rand_vec(s.kv_elems(), rng), w = rand_vec(s.q_elems(), rng);
  const Fwd d = run_fwd(s, q, k, v);
  const auto f32 = [](const std::vector<double>& x) {
    return std::vector<float>(x.begin(), x.end());
  };
  const auto qf = f32(q), kf = f32(k), vf = f32(v), wf = f32(w);
  std::vector<float> out(q.size()), lse(s.lse_elems());
  attention_fwd_ref(out.data(), lse.data(), qf.data(), kf.data(), vf.data(), s.B, s.Tq, s.Tk, s.NHq,
                    s.NHkv, s.HD, s.scale(), s.causal);
  kiln::test::check_close("float out", d.out, kiln::test::to_double(out), 1e-5, 1e-6);
  kiln::test::check_close("float lse", d.lse, kiln::test::to_double(lse), 1e-5, 1e-6);
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
  attention_bwd_ref(dq.data(), dk.data(), dv.data(), wf.data(), qf.data(), kf.data(), vf.data(),
                    s.B, s.Tq, s.Tk, s.NHq, s.NHkv, s.HD, s.scale(), s.causal);
  std::vector<double> dqd(q.size()), dkd(k.size()), dvd(v.size());
  attention_bwd_ref(dqd.data(), dkd.data(), dvd.data(), w.data(), q.data(), k.data(), v.data(), s.B,
                    s.Tq, s.Tk, s.NHq, s.NHkv, s.HD, s.scale(), s.causal);
  kiln::test::check_close("float dq", dqd, kiln::test::to_double(dq), 1e-4, 1e-5);
  kiln::test::check_close("float dk", dkd, kiln::test::to_double(dk), 1e-4, 1e-5);
  kiln::test::check_close("float dv", dvd, kiln::test::to_double(dv), 1e-4, 1e-5);
}
