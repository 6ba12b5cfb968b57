// The embedding's reference: forward values, and the accumulated backward against central
// differences of sum(w * out) with respect to both tables.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "kernels/embedding/embedding_ref.hpp"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"

using kiln::ref::embedding_bwd_ref;
using kiln::ref::embedding_fwd_ref;

TEST_CASE("embedding_fwd_ref: token row plus position row", "[embedding]") {
  const std::int64_t B = 2, T = 3, C = 2, V = 4, maxT = 5;
  std::vector<double> wte(V * C), wpe(maxT * C);
  for (std::int64_t i = 0; i < V * C; ++i)
    wte[i] = double(i);
  for (std::int64_t i = 0; i < maxT * C; ++i)
    wpe[i] = 100.0 * double(i);
  const std::vector<std::int32_t> tokens{3, 0, 3, 1, 1, 2};
  std::vector<double> out(B * T * C);
  embedding_fwd_ref(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
  // out[b, t, c] = wte[token, c] + wpe[t, c]
  const std::vector<double> expected{6, 107, 200, 301, 406, 507, 2, 103, 202, 303, 404, 505};
  CHECK(out == expected);
}

TEST_CASE("embedding_bwd_ref: accumulated gradients match central differences", "[embedding]") {
  auto rng = kiln::test::make_rng(201);
  const std::int64_t B = 3, T = 4, C = 5, V = 6, maxT = 7;
  // Repeated tokens (0 three times), an unused row (5), rows of wpe past T untouched.
  const std::vector<std::int32_t> tokens{0, 2, 0, 1, 4, 4, 3, 2, 0, 1, 2, 3};
  const auto wte = kiln::test::random_uniform_double(V * C, -1, 1, rng);
  const auto wpe = kiln::test::random_uniform_double(maxT * C, -1, 1, rng);
  const auto w = kiln::test::random_uniform_double(B * T * C, -1, 1, rng);

  auto loss_wte = [&](const std::vector<double>& e) {
    std::vector<double> out(B * T * C);
    embedding_fwd_ref(out.data(), tokens.data(), e.data(), wpe.data(), B, T, C);
    return kiln::test::weighted_sum(out, w);
  };
  auto loss_wpe = [&](const std::vector<double>& p) {
    std::vector<double> out(B * T * C);
    embedding_fwd_ref(out.data(), tokens.data(), wte.data(), p.data(), B, T, C);
    return kiln::test::weighted_sum(out, w);
  };
  const auto numeric_wte = kiln::test::central_difference(loss_wte, wte, 1e-5);
  const auto numeric_wpe = kiln::test::central_difference(loss_wpe, wpe, 1e-5);

  // Parameter gradients accumulate: start from non-zero buffers and subtract them after.
  const auto dwte0 = kiln::test::random_uniform_double(V * C, -1, 1, rng);
  const auto dwpe0 = kiln::test::random_uniform_double(maxT * C, -1, 1, rng);
  std::vector<double> dwte(dwte0), dwpe(dwpe0);
  embedding_bwd_ref(dwte.data(), dwpe.data(), w.data(), tokens.data(), B, T, C);
  std::vector<double> got_wte(V * C), got_wpe(maxT * C);
  for (std::int64_t i = 0; i < V * C; ++i)
    got_wte[i] = dwte[i] - dwte0[i];
  for (std::int64_t i = 0; i < maxT * C; ++i)
    got_wpe[i] = dwpe[i] - dwpe0[i];
  kiln::test::check_close("dwte vs central differences", numeric_wte, got_wte, 1e-7, 1e-9);
  kiln::test::check_close("dwpe vs central differences", numeric_wpe, got_wpe, 1e-7, 1e-9);
  for (std::int64_t c = 0; c < C; ++c) {
    CHECK(dwte[5 * C + c] == dwte0[5 * C + c]);  // token 5 never occurs: untouched
    for (std::int64_t t = T; t < maxT; ++t)
      CHECK(dwpe[t * C + c] == dwpe0[t * C + c]);
  }
}

TEST_CASE("embedding_bwd_ref: float accumulates in double before rounding", "[embedding]") {
  // 4096 copies of 1e-4 added to 1.0: summed in float one by one they would be lost
  // (1e-4 is below half an ulp of 1.0f after enough additions); in double they are not.
  const std::int64_t B = 1, T = 4096, C = 1;
  std::vector<std::int32_t> tokens(T, 0);
  std::vector<float> dout(T, 1e-4f), dwte{1.0f}, dwpe(T, 0.0f);
  embedding_bwd_ref(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  CHECK(dwte[0] == Approx(1.0 + 4096 * double(1e-4f)).epsilon(1e-7));
}

TEST_CASE("embedding references without a position table: the token rows, no dwpe", "[embedding]") {
  auto rng = kiln::test::make_rng(202);
  const std::int64_t B = 2, T = 3, C = 4, V = 5;
  const std::vector<std::int32_t> tokens{4, 0, 4, 1, 3, 2};
  const auto wte = kiln::test::random_uniform_double(V * C, -1, 1, rng);
  std::vector<double> out(B * T * C);
  embedding_fwd_ref(out.data(), tokens.data(), wte.data(), static_cast<const double*>(nullptr), B,
                    T, C);
  for (std::int64_t i = 0; i < B * T; ++i)
    for (std::int64_t c = 0; c < C; ++c)
      CHECK(out[i * C + c] == wte[tokens[i] * C + c]);
  // dwte is the same with and without a dwpe beside it.
  const auto dout = kiln::test::random_uniform_double(B * T * C, -1, 1, rng);
  std::vector<double> with(V * C, 0.5), without(V * C, 0.5), dwpe(T * C, 0.0);
  embedding_bwd_ref(with.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  embedding_bwd_ref(without.data(), static_cast<double*>(nullptr), dout.data(), tokens.data(), B, T,
                    C);
  CHECK(with == without);
}
