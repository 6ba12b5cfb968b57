// kiln_gemm on the device, what the epilogues owe beyond the grid of gemm_test.cpp: the bias
// gradient bitwise repeatable (and cuBLASLt's fallback row sums, tested directly), and the GELU
// each backend applies (the tanh approximation, not erf).
#include <catch2/catch.hpp>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/gemm/gemm.hpp"
#include "kernels/gemm/gemm_ref.hpp"
#include "kiln/gemm.h"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/gemm_support.hpp"

using kiln::test::DeviceBuffer;
using kiln::test::gemm::available;
using kiln::test::gemm::bf16;
using kiln::test::gemm::env;
using kiln::test::gemm::kBackends;

TEST_CASE("gemm: the bias gradient is bitwise repeatable", "[gemm]") {
  const std::int64_t M = 3 * 768, N = 768, K = kiln::test::quick_mode() ? 512 : 8192;
  auto rng = kiln::test::make_rng(11);
  const auto a = kiln::test::to_bf16(kiln::test::random_uniform(K * M, -1, 1, rng));
  const auto b = kiln::test::to_bf16(kiln::test::random_uniform(K * N, -1, 1, rng));
  const auto g0 = kiln::test::random_uniform(M, -1, 1, rng);
  const auto w0 = kiln::test::random_uniform(M * N, -1, 1, rng);
  DeviceBuffer<bf16> da(a), db(b);
  for (kiln_gemm_backend_t backend : kBackends) {
    if (!available(backend)) continue;
    INFO("backend " << kiln_gemm_backend_name(backend));
    std::vector<std::vector<float>> grads, weights;
    for (int run = 0; run < 3; ++run) {
      DeviceBuffer<float> dw(w0), dbias(g0);
      kiln_gemm_params_t p;
      kiln_gemm_params_init(&p);
      p.m = M;
      p.n = N;
      p.k = K;
      p.trans_a = 1;
      p.a = da.get();
      p.b = db.get();
      p.c = dw.get();
      p.d = dw.get();
      p.beta = 1.0f;
      p.cd_dtype = KILN_DTYPE_F32;
      p.epilogue = KILN_GEMM_EPILOGUE_BIAS_GRAD;
      p.bias_grad = dbias.get();
      p.backend = backend;
      REQUIRE(kiln_gemm(env().ctx.get(), &p, nullptr) == KILN_STATUS_OK);
      grads.push_back(dbias.download());
      weights.push_back(dw.download());
    }
    CHECK(kiln::test::bitwise_equal(grads[0], grads[1]));
    CHECK(kiln::test::bitwise_equal(grads[0], grads[2]));
    CHECK(kiln::test::bitwise_equal(weights[0], weights[1]));
    CHECK(kiln::test::bitwise_equal(weights[0], weights[2]));
    CHECK(grads[0] != g0);  // it did accumulate
  }
}

namespace {

double gelu_erf(double x) {
  return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}
double gelu_erf_grad(double x) {
  const double pi = 3.14159265358979323846;
  return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) +
         x * std::exp(-0.5 * x * x) / std::sqrt(2 * pi);
}
float to_bf16_value(double x) {
  return __bfloat162float(__float2bfloat16(static_cast<float>(x)));
}

}  // namespace

TEST_CASE("gemm: which GELU each backend applies (tanh approximation, not erf)", "[gemm]") {
  // D = gelu(bias[n]) exactly: A = 0, so the pre-activation is the bias itself, a bf16 value.
  // For each bias value where the two GELUs round to different bf16 values, see which one D
  // equals. cuBLASLt does not document its GELU; kiln's contract is the tanh approximation.
  // DGELU the same way: acc = 1 exactly (A row (1, 0, ...), B row (1, 0, ...)), pre_gelu = x.
  std::vector<float> xs;
  for (float x = -6.0f; x <= 6.0f; x = std::nextafter(to_bf16_value(x), 10.0f))
    if (to_bf16_value(x) == x) xs.push_back(x);
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  const std::int64_t N = static_cast<std::int64_t>((xs.size() + 7) / 8 * 8), M = 8, K = 8;
  xs.resize(N, 0.0f);
  std::vector<float> a(M * K, 0.0f), b(N * K, 0.0f), pre(M * N);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n)
      pre[m * N + n] = xs[n];
  DeviceBuffer<bf16> bias(kiln::test::to_bf16(xs)), zero_a(kiln::test::to_bf16(a)),
      pre_in(kiln::test::to_bf16(pre));
  for (std::int64_t m = 0; m < M; ++m)
    a[m * K] = 1.0f;
  for (std::int64_t n = 0; n < N; ++n)
    b[n * K] = 1.0f;
  DeviceBuffer<bf16> unit_a(kiln::test::to_bf16(a)), unit_b(kiln::test::to_bf16(b));
  for (kiln_gemm_backend_t backend : kBackends) {
    if (!available(backend)) continue;
    for (int grad = 0; grad < 2; ++grad) {
      DeviceBuffer<bf16> d(M * N), pre_out(M * N);
      d.poison();
      kiln_gemm_params_t p;
      kiln_gemm_params_init(&p);
      p.m = M;
      p.n = N;
      p.k = K;
      p.trans_b = 1;
      p.a = grad ? unit_a.get() : zero_a.get();
      p.b = unit_b.get();
      p.d = d.get();
      p.epilogue = grad ? KILN_GEMM_EPILOGUE_DGELU : KILN_GEMM_EPILOGUE_BIAS_GELU;
      p.bias = bias.get();
      p.pre_gelu_out = pre_out.get();
      p.pre_gelu = pre_in.get();
      p.backend = backend;
      REQUIRE(kiln_gemm(env().ctx.get(), &p, nullptr) == KILN_STATUS_OK);
      const std::vector<float> got = kiln::test::to_float(d.download());
      int tanh_wins = 0, erf_wins = 0, neither = 0;
      for (std::int64_t n = 0; n < N; ++n) {
        const double x = xs[n];
        const float t =
            to_bf16_value(grad ? kiln::ref::gelu_tanh_grad_ref(x) : kiln::ref::gelu_tanh_ref(x));
        const float e = to_bf16_value(grad ? gelu_erf_grad(x) : gelu_erf(x));
        if (t == e) continue;
        const float g = got[(M - 1) * N + n];
        if (g == t)
          ++tanh_wins;
        else if (g == e)
          ++erf_wins;
        else
          ++neither;
      }
      INFO("backend " << kiln_gemm_backend_name(backend) << (grad ? " dgelu" : " gelu")
                      << ": where the two GELUs round apart, D matches tanh " << tanh_wins
                      << " times, erf " << erf_wins << " times, neither " << neither);
      CHECK(tanh_wins > 10 * std::max(erf_wins, 1));
    }
  }
}

TEST_CASE("gemm: cuBLASLt's bias-gradient fallback sums op(A)'s rows deterministically", "[gemm]") {
  // kiln's own row sums run when cuBLASLt has no BGRADB algorithm for a problem; which problems
  // those are depends on the cuBLASLt version, so they are tested here directly.
  auto rng = kiln::test::make_rng(13);
  int multiprocessors = 0;
  REQUIRE(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, 0) ==
          cudaSuccess);
  struct Shape {
    std::int64_t M, K;
  };
  for (const Shape s : {Shape{1, 1}, Shape{17, 1000}, Shape{768, 8192}, Shape{3000, 333}}) {
    for (int trans = 0; trans < 2; ++trans)
      for (int f32 = 0; f32 < 2; ++f32)
        for (std::size_t scratch_bytes : {std::size_t{0}, std::size_t{32} << 20}) {
          INFO("M " << s.M << " K " << s.K << " trans_a " << trans << " f32 " << f32 << " scratch "
                    << scratch_bytes);
          const std::int64_t lda = (trans ? s.M : s.K) + 3;
          const std::int64_t rows = trans ? s.K : s.M;
          std::vector<float> a =
              kiln::test::round_to_bf16(kiln::test::random_uniform(rows * lda, -1, 1, rng));
          std::vector<float> g0 = kiln::test::random_uniform(s.M, -1, 1, rng);
          if (!f32) g0 = kiln::test::round_to_bf16(g0);
          std::vector<double> want(s.M), base(s.M);
          for (std::int64_t m = 0; m < s.M; ++m) {
            double sd = 0;
            float sf = 0;
            for (std::int64_t k = 0; k < s.K; ++k) {
              const float v = trans ? a[k * lda + m] : a[m * lda + k];
              sd += v;
              sf += v;
            }
            want[m] = g0[m] + sd;
            base[m] = f32 ? g0[m] + sf : __bfloat162float(__float2bfloat16(g0[m] + sf));
          }
          DeviceBuffer<bf16> da(kiln::test::to_bf16(a));
          DeviceBuffer<std::uint8_t> scratch(scratch_bytes);
          std::vector<std::vector<double>> runs;
          for (int run = 0; run < 2; ++run) {
            std::vector<double> got;
            if (f32) {
              DeviceBuffer<float> g(g0);
              kiln::impl::op_a_row_sums_accumulate(g.get(), true, da.get(), trans, lda, s.M, s.K,
                                                   scratch.get(), scratch_bytes, multiprocessors,
                                                   nullptr);
              got = kiln::test::to_double(g.download());
            } else {
              DeviceBuffer<bf16> g(kiln::test::to_bf16(g0));
              kiln::impl::op_a_row_sums_accumulate(g.get(), false, da.get(), trans, lda, s.M, s.K,
                                                   scratch.get(), scratch_bytes, multiprocessors,
                                                   nullptr);
              got = kiln::test::to_double(g.download());
            }
            runs.push_back(got);
          }
          double scale = 0;
          for (double v : want)
            scale = std::max(scale, std::fabs(v));
          kiln::test::check_rule("row sums", want, runs[0], base,
                                 f32 ? 1e-5 * scale + 1e-6 : std::ldexp(scale, -9));
          CHECK(kiln::test::bitwise_equal(runs[0], runs[1]));
        }
  }
}
