// The embedding kernels against kiln::ref (double): forward bit for bit against the plain fp32
// computation, backward with the tolerance rule; accumulation into non-zero gradients, rows never
// touched left bitwise alone, skewed token distributions (long runs of one id), C from 8 to 4096
// (every split of a row across threads), over 100k tokens, twice bitwise, bad ids.
#include <catch2/catch.hpp>

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/embedding/embedding_ref.hpp"
#include "kiln/embedding.h"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/support.hpp"

namespace {

using kiln::test::DeviceBuffer;
using bf16 = __nv_bfloat16;

struct Shape {
  int64_t B, T, C, V, maxT;
  bool large;
};

const std::vector<Shape> kShapes{
    {1, 1, 8, 1, 1, false},
    {2, 5, 16, 3, 7, false},
    {4, 64, 768, 50257, 1024, false},   // GPT-2 small
    {3, 33, 1600, 1000, 64, false},     // 200 packs a row: threads past the row idle
    {2, 17, 4096, 50, 17, false},       // 512 packs a row: a thread takes two packs
    {1, 100003, 8, 7, 100003, false},   // over 100k tokens in runs of ~14k
    {8, 1024, 768, 50257, 1024, true},  // a GPT-2 micro-batch
};

// Token ids with a skewed distribution: a third of them id 0 (one long run after sorting), the
// rest uniform.
std::vector<int32_t> make_tokens(int64_t M, int64_t V, std::mt19937_64& rng) {
  std::uniform_int_distribution<int64_t> id(0, V - 1);
  std::uniform_int_distribution<int> coin(0, 2);
  std::vector<int32_t> t(M);
  for (auto& x : t)
    x = static_cast<int32_t>(coin(rng) == 0 ? 0 : id(rng));
  return t;
}

}  // namespace

TEST_CASE("embedding_fwd equals fp32 addition rounded to bf16, within the rule of double",
          "[embedding][smoke]") {
  auto rng = kiln::test::make_rng(501);
  for (const Shape& s : kShapes) {
    if (s.large && kiln::test::quick_mode()) continue;
    INFO("B=" << s.B << " T=" << s.T << " C=" << s.C << " V=" << s.V);
    const int64_t M = s.B * s.T;
    const auto wte = kiln::test::round_to_bf16(kiln::test::random_normal(s.V * s.C, 0, 1, rng));
    const auto wpe = kiln::test::round_to_bf16(kiln::test::random_normal(s.maxT * s.C, 0, 1, rng));
    const auto tokens = make_tokens(M, s.V, rng);
    DeviceBuffer<bf16> d_wte(kiln::test::to_bf16(wte)), d_wpe(kiln::test::to_bf16(wpe));
    DeviceBuffer<int32_t> d_tokens(tokens);
    DeviceBuffer<bf16> out(M * s.C);
    out.poison();
    kiln::embedding_fwd(out.get(), d_tokens.get(), d_wte.get(), d_wpe.get(), s.B, s.T, s.C, s.V,
                        s.maxT, nullptr);
    const auto got = out.download();

    const auto wte_d = kiln::test::to_double(wte), wpe_d = kiln::test::to_double(wpe);
    std::vector<double> ref(M * s.C);
    kiln::ref::embedding_fwd_ref(ref.data(), tokens.data(), wte_d.data(), wpe_d.data(), s.B, s.T,
                                 s.C);
    std::vector<float> base(M * s.C);
    kiln::ref::embedding_fwd_ref(base.data(), tokens.data(), wte.data(), wpe.data(), s.B, s.T, s.C);
    base = kiln::test::round_to_bf16(base);
    kiln::test::check_rule("out", ref, kiln::test::to_double(got), kiln::test::to_double(base),
                           0.0);
    CHECK(kiln::test::bitwise_equal(kiln::test::to_bf16(base), got));
  }
}

TEST_CASE("embedding_bwd accumulates the reference's gradients, deterministically",
          "[embedding][smoke]") {
  auto rng = kiln::test::make_rng(502);
  for (const Shape& s : kShapes) {
    if (s.large && kiln::test::quick_mode()) continue;
    INFO("B=" << s.B << " T=" << s.T << " C=" << s.C << " V=" << s.V);
    const int64_t M = s.B * s.T;
    const auto dout =
        kiln::test::round_to_bf16(kiln::test::random_uniform(M * s.C, -1.0f, 1.0f, rng));
    const auto tokens = make_tokens(M, s.V, rng);
    const auto dwte0 = kiln::test::random_uniform(s.V * s.C, -1.0f, 1.0f, rng);
    const auto dwpe0 = kiln::test::random_uniform(s.maxT * s.C, -1.0f, 1.0f, rng);

    DeviceBuffer<bf16> d_dout(kiln::test::to_bf16(dout));
    DeviceBuffer<int32_t> d_tokens(tokens);
    const size_t ws_bytes = kiln::embedding_bwd_workspace_size(s.B, s.T, s.V);
    DeviceBuffer<unsigned char> ws(ws_bytes);
    auto run = [&] {
      DeviceBuffer<float> dwte(dwte0), dwpe(dwpe0);
      ws.poison();  // the workspace is scratch: its contents must not matter
      kiln::embedding_bwd(dwte.get(), dwpe.get(), d_dout.get(), d_tokens.get(), s.B, s.T, s.C, s.V,
                          s.maxT, ws.get(), ws.size(), nullptr);
      return std::make_pair(dwte.download(), dwpe.download());
    };
    const auto [dwte, dwpe] = run();

    // Reference: double, from the same starting values. Baseline: fp32, rows summed one by one.
    std::vector<double> ref_wte = kiln::test::to_double(dwte0),
                        ref_wpe = kiln::test::to_double(dwpe0);
    const auto dout_d = kiln::test::to_double(dout);
    kiln::ref::embedding_bwd_ref(ref_wte.data(), ref_wpe.data(), dout_d.data(), tokens.data(), s.B,
                                 s.T, s.C);
    std::vector<float> base_wte(dwte0), base_wpe(dwpe0);
    std::vector<float> sum(s.C);
    for (int64_t t = 0; t < s.T; ++t) {
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int64_t b = 0; b < s.B; ++b)
        for (int64_t c = 0; c < s.C; ++c)
          sum[c] += dout[(b * s.T + t) * s.C + c];
      for (int64_t c = 0; c < s.C; ++c)
        base_wpe[t * s.C + c] += sum[c];
    }
    std::vector<float> acc(s.V * s.C, 0.0f);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t c = 0; c < s.C; ++c)
        acc[tokens[i] * s.C + c] += dout[i * s.C + c];
    for (int64_t i = 0; i < s.V * s.C; ++i)
      base_wte[i] += acc[i];

    const double atol = 1e-6;
    kiln::test::check_rule("dwte", ref_wte, kiln::test::to_double(dwte),
                           kiln::test::to_double(base_wte), atol);
    kiln::test::check_rule("dwpe", ref_wpe, kiln::test::to_double(dwpe),
                           kiln::test::to_double(base_wpe), atol);
    // Rows no token (or no position) reaches are not written at all.
    std::vector<char> used(s.V, 0);
    for (int32_t t : tokens)
      used[t] = 1;
    int64_t changed = 0;
    for (int64_t v = 0; v < s.V; ++v)
      if (!used[v])
        for (int64_t c = 0; c < s.C; ++c)
          changed += dwte[v * s.C + c] != dwte0[v * s.C + c];
    for (int64_t i = s.T * s.C; i < s.maxT * s.C; ++i)
      changed += dwpe[i] != dwpe0[i];
    CHECK(changed == 0);

    const auto [dwte2, dwpe2] = run();
    CHECK(kiln::test::bitwise_equal(dwte, dwte2));
    CHECK(kiln::test::bitwise_equal(dwpe, dwpe2));
  }
}

TEST_CASE("embedding: ids outside [0, V) give NaN rows forward and no dwte update backward",
          "[embedding]") {
  auto rng = kiln::test::make_rng(503);
  const int64_t B = 2, T = 8, C = 64, V = 100, maxT = 8, M = B * T;
  auto tokens = make_tokens(M, V, rng);
  tokens[3] = static_cast<int32_t>(V);
  tokens[9] = -5;
  tokens[12] = 1 << 30;
  const auto wte = kiln::test::round_to_bf16(kiln::test::random_normal(V * C, 0, 1, rng));
  const auto wpe = kiln::test::round_to_bf16(kiln::test::random_normal(maxT * C, 0, 1, rng));
  DeviceBuffer<bf16> d_wte(kiln::test::to_bf16(wte)), d_wpe(kiln::test::to_bf16(wpe)), out(M * C);
  DeviceBuffer<int32_t> d_tokens(tokens);
  out.poison();
  kiln::embedding_fwd(out.get(), d_tokens.get(), d_wte.get(), d_wpe.get(), B, T, C, V, maxT,
                      nullptr);
  const auto got = kiln::test::to_double(out.download());
  for (int64_t i = 0; i < M; ++i) {
    const bool bad = tokens[i] < 0 || tokens[i] >= V;
    int64_t nan = 0;
    for (int64_t c = 0; c < C; ++c)
      nan += std::isnan(got[i * C + c]);
    CHECK(nan == (bad ? C : 0));
  }

  const auto dout = kiln::test::round_to_bf16(kiln::test::random_uniform(M * C, -1, 1, rng));
  std::vector<float> zeros_wte(V * C, 0.0f), zeros_wpe(maxT * C, 0.0f);
  DeviceBuffer<float> dwte(zeros_wte), dwpe(zeros_wpe);
  DeviceBuffer<bf16> d_dout(kiln::test::to_bf16(dout));
  DeviceBuffer<unsigned char> ws(kiln::embedding_bwd_workspace_size(B, T, V));
  kiln::embedding_bwd(dwte.get(), dwpe.get(), d_dout.get(), d_tokens.get(), B, T, C, V, maxT,
                      ws.get(), ws.size(), nullptr);
  // Expected: the bad positions' rows contribute to dwpe but to no row of dwte.
  std::vector<int32_t> clean(tokens);
  std::vector<double> dout_wte = kiln::test::to_double(dout);
  for (int64_t i = 0; i < M; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V) {
      clean[i] = 0;
      for (int64_t c = 0; c < C; ++c)
        dout_wte[i * C + c] = 0.0;
    }
  }
  std::vector<double> ref_wte(V * C, 0.0), ref_wpe(maxT * C, 0.0), unused(maxT * C, 0.0);
  kiln::ref::embedding_bwd_ref(ref_wte.data(), unused.data(), dout_wte.data(), clean.data(), B, T,
                               C);
  // dwpe over every position, the bad ones included.
  const auto dout_d = kiln::test::to_double(dout);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c)
        ref_wpe[t * C + c] += dout_d[(b * T + t) * C + c];
  kiln::test::check_close("dwte without the bad ids", ref_wte,
                          kiln::test::to_double(dwte.download()), 1e-6, 1e-6);
  kiln::test::check_close("dwpe with every position", ref_wpe,
                          kiln::test::to_double(dwpe.download()), 1e-6, 1e-6);
}

TEST_CASE("embedding_bwd refuses a workspace smaller than it asked for", "[embedding]") {
  const int64_t B = 2, T = 16, C = 8, V = 50, maxT = 16;
  const size_t need = kiln::embedding_bwd_workspace_size(B, T, V);
  REQUIRE(need > 0);
  DeviceBuffer<float> dwte(V * C), dwpe(maxT * C);
  DeviceBuffer<bf16> dout(B * T * C);
  DeviceBuffer<int32_t> tokens(std::vector<int32_t>(B * T, 1));
  DeviceBuffer<unsigned char> ws(need);
  CHECK(kiln_embedding_bwd(dwte.get(), dwpe.get(), dout.get(), tokens.get(), B, T, C, V, maxT,
                           ws.get(), need - 1, KILN_DTYPE_BF16,
                           nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("workspace_bytes"));
}

TEST_CASE("embedding: NaN and Inf propagate to exactly the elements they feed", "[embedding]") {
  auto rng = kiln::test::make_rng(504);
  const int64_t B = 2, T = 4, C = 16, V = 10, maxT = 4, M = B * T;
  std::vector<int32_t> tokens{1, 2, 3, 4, 1, 6, 7, 8};
  auto wte = kiln::test::round_to_bf16(kiln::test::random_normal(V * C, 0, 1, rng));
  auto wpe = kiln::test::round_to_bf16(kiln::test::random_normal(maxT * C, 0, 1, rng));
  wte[1 * C + 3] = std::numeric_limits<float>::quiet_NaN();  // token 1: rows 0 and 4
  wpe[2 * C + 5] = std::numeric_limits<float>::infinity();   // position 2: rows 2 and 6
  DeviceBuffer<bf16> d_wte(kiln::test::to_bf16(wte)), d_wpe(kiln::test::to_bf16(wpe)), out(M * C);
  DeviceBuffer<int32_t> d_tokens(tokens);
  kiln::embedding_fwd(out.get(), d_tokens.get(), d_wte.get(), d_wpe.get(), B, T, C, V, maxT,
                      nullptr);
  const auto got = kiln::test::to_double(out.download());
  std::vector<double> ref(M * C);
  const auto wte_d = kiln::test::to_double(wte), wpe_d = kiln::test::to_double(wpe);
  kiln::ref::embedding_fwd_ref(ref.data(), tokens.data(), wte_d.data(), wpe_d.data(), B, T, C);
  kiln::test::check_close("out", ref, got, 1e-2, 0);  // non-finite exactly where the reference is
  CHECK(std::isnan(got[0 * C + 3]));
  CHECK(std::isinf(got[6 * C + 5]));

  auto dout = kiln::test::round_to_bf16(kiln::test::random_uniform(M * C, -1, 1, rng));
  dout[5 * C + 7] = std::numeric_limits<float>::quiet_NaN();  // token 6, position 1
  DeviceBuffer<bf16> d_dout(kiln::test::to_bf16(dout));
  DeviceBuffer<float> dwte(std::vector<float>(V * C, 0.0f)),
      dwpe(std::vector<float>(maxT * C, 0.0f));
  DeviceBuffer<unsigned char> ws(kiln::embedding_bwd_workspace_size(B, T, V));
  kiln::embedding_bwd(dwte.get(), dwpe.get(), d_dout.get(), d_tokens.get(), B, T, C, V, maxT,
                      ws.get(), ws.size(), nullptr);
  std::vector<double> ref_wte(V * C, 0.0), ref_wpe(maxT * C, 0.0);
  const auto dout_d = kiln::test::to_double(dout);
  kiln::ref::embedding_bwd_ref(ref_wte.data(), ref_wpe.data(), dout_d.data(), tokens.data(), B, T,
                               C);
  kiln::test::check_close("dwte", ref_wte, kiln::test::to_double(dwte.download()), 1e-6, 1e-6);
  kiln::test::check_close("dwpe", ref_wpe, kiln::test::to_double(dwpe.download()), 1e-6, 1e-6);
  CHECK(std::isnan(ref_wte[6 * C + 7]));
  CHECK(std::isnan(ref_wpe[1 * C + 7]));
}

TEST_CASE("embedding without a position table: the token rows forward, dwte alone backward",
          "[embedding][smoke]") {
  auto rng = kiln::test::make_rng(506);
  for (const Shape& s : kShapes) {
    if (s.large) continue;
    INFO("B=" << s.B << " T=" << s.T << " C=" << s.C << " V=" << s.V);
    const int64_t M = s.B * s.T;
    auto tokens = make_tokens(M, s.V, rng);
    tokens[M / 2] = -1;  // a bad id still gives a NaN row
    const auto wte = kiln::test::round_to_bf16(kiln::test::random_normal(s.V * s.C, 0, 1, rng));
    const auto wte_bits = kiln::test::to_bf16(wte);
    DeviceBuffer<bf16> d_wte(wte_bits), out(M * s.C);
    DeviceBuffer<int32_t> d_tokens(tokens);
    out.poison();
    // maxT is not read without a table: 0 would be refused with one.
    kiln::embedding_fwd(out.get(), d_tokens.get(), d_wte.get(), nullptr, s.B, s.T, s.C, s.V, 0,
                        nullptr);
    const auto got = out.download();
    int64_t wrong = 0;
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t c = 0; c < s.C; ++c) {
        const bf16 g = got[i * s.C + c];
        if (tokens[i] < 0) {
          wrong += !std::isnan(__bfloat162float(g));
        } else {
          const bf16 w = wte_bits[tokens[i] * s.C + c];
          wrong += __bfloat16_as_ushort(g) != __bfloat16_as_ushort(w);
        }
      }
    }
    CHECK(wrong == 0);

    // Backward: dwte bitwise as with a position gradient beside it; no dwpe anywhere.
    tokens[M / 2] = 0;
    DeviceBuffer<int32_t> d_tokens2(tokens);
    const auto dout = kiln::test::round_to_bf16(kiln::test::random_uniform(M * s.C, -1, 1, rng));
    const auto dwte0 = kiln::test::random_uniform(s.V * s.C, -1.0f, 1.0f, rng);
    DeviceBuffer<bf16> d_dout(kiln::test::to_bf16(dout));
    DeviceBuffer<unsigned char> ws(kiln::embedding_bwd_workspace_size(s.B, s.T, s.V));
    DeviceBuffer<float> with(dwte0), without(dwte0), dwpe(std::vector<float>(s.maxT * s.C, 0.0f));
    kiln::embedding_bwd(with.get(), dwpe.get(), d_dout.get(), d_tokens2.get(), s.B, s.T, s.C, s.V,
                        s.maxT, ws.get(), ws.size(), nullptr);
    kiln::embedding_bwd(without.get(), nullptr, d_dout.get(), d_tokens2.get(), s.B, s.T, s.C, s.V,
                        0, ws.get(), ws.size(), nullptr);
    CHECK(kiln::test::bitwise_equal(with.download(), without.download()));
  }
}
