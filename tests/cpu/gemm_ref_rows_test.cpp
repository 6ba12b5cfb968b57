// The GPU tests' fast GEMM reference (tests/common/gemm_ref_rows): bitwise the plain reference,
// and (hidden, run by hand: kiln_cpu_tests "[.perf]") how long GPT-2's lm-head check takes.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "kernels/gemm/gemm_ref.hpp"
#include "tests/common/gemm_ref_rows.hpp"
#include "tests/common/support.hpp"

namespace {

using kiln::ref::Epilogue;
using kiln::ref::GemmRefArgs;

struct Problem {
  std::vector<float> a, b, c, bias, pre;
  GemmRefArgs<float> args(std::int64_t M, std::int64_t N, std::int64_t K, bool tb, Epilogue e) {
    auto rng = kiln::test::make_rng(static_cast<std::uint64_t>(M * 131 + N * 7 + K + tb));
    a = kiln::test::random_uniform(M * K, -1, 1, rng);
    b = kiln::test::random_uniform(K * N + 3 * (tb ? N : K), -1, 1, rng);
    c = kiln::test::random_uniform(M * N, -1, 1, rng);
    bias = kiln::test::random_uniform(N, -1, 1, rng);
    pre = kiln::test::random_uniform(M * N, -2, 2, rng);
    GemmRefArgs<float> p;
    p.M = M;
    p.N = N;
    p.K = K;
    p.trans_b = tb;
    p.ldb = tb ? K + 3 : N + 3;  // padded rows
    p.alpha = 0.75;
    p.beta = e == Epilogue::residual ? 0.5 : 0.0;
    p.epilogue = e;
    p.a = a.data();
    p.b = b.data();
    p.c = p.beta != 0 ? c.data() : nullptr;
    p.bias = bias.data();
    p.pre_gelu = pre.data();
    return p;
  }
};

template <typename Acc>
std::vector<float> run(GemmRefArgs<float> p, bool fast, std::vector<float>* pre_out,
                       std::vector<float>* bias_grad) {
  std::vector<float> d(p.M * p.N);
  pre_out->assign(p.M * p.N, 0.0f);
  bias_grad->assign(p.M, 0.25f);
  p.d = d.data();
  p.pre_gelu_out = pre_out->data();
  p.bias_grad = bias_grad->data();
  if (fast) {
    kiln::test::gemm_ref_rows<Acc>(p);
  } else {
    kiln::ref::gemm_ref<float, Acc>(p);
  }
  return d;
}

}  // namespace

TEST_CASE("gemm_ref_rows gives the plain reference's bits: transposed B, threads, epilogues",
          "[gemm_ref_rows]") {
  for (const bool tb : {false, true})
    for (const Epilogue e : {Epilogue::none, Epilogue::bias_gelu, Epilogue::dgelu,
                             Epilogue::residual, Epilogue::bias_grad})
      for (const std::int64_t M : {1, 7, 300}) {
        INFO("trans_b " << tb << " epilogue " << kiln::ref::epilogue_name(e) << " M " << M);
        Problem prob;
        const auto p = prob.args(M, 200, 97, tb, e);
        std::vector<float> pre0, pre1, bg0, bg1;
        CHECK(run<double>(p, false, &pre0, &bg0) == run<double>(p, true, &pre1, &bg1));
        CHECK(pre0 == pre1);
        CHECK(bg0 == bg1);
        CHECK(run<float>(p, false, &pre0, &bg0) == run<float>(p, true, &pre1, &bg1));
      }
}

TEST_CASE("gemm_ref_rows: time of GPT-2's lm-head check (48 rows of 50304 x 768, B^T)",
          "[.perf][gemm_ref_rows]") {
  Problem prob;
  const auto p = prob.args(48, 50304, 768, true, Epilogue::none);
  std::vector<float> pre, bg;
  for (const bool fast : {true, false}) {
    const auto t0 = std::chrono::steady_clock::now();
    run<double>(p, fast, &pre, &bg);
    run<float>(p, fast, &pre, &bg);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("lm-head reference (double + float): %s %.2f s (%.2f GMAC/s)\n",
                fast ? "gemm_ref_rows" : "gemm_ref plain", s, 2 * 48.0 * 50304 * 768 / s / 1e9);
  }
}
