// The GEMM reference: a hand-worked example, an independent computation for every layout and
// epilogue, and the backward semantics (dgelu, bias_grad, the three GEMMs of a linear layer)
// against central finite differences of a two-layer MLP built from the reference's forward.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/gemm/gemm_ref.hpp"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"

using kiln::ref::Epilogue;
using kiln::ref::gemm_ref;
using kiln::ref::GemmRefArgs;

namespace {

// gelu and gelu' written out again here (not calling the reference's helpers), so a slip in
// either copy shows.
double gelu_indep(double x) {
  const double pi = 3.14159265358979323846;
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / pi) * (x + 0.044715 * std::pow(x, 3))));
}

// A GEMM computed the slow obvious way: materialize op(A) and op(B) as dense (M, K) and (K, N)
// matrices from their storage, multiply, then apply the epilogue.
struct Naive {
  std::vector<double> d, pre, bias_grad;
};
Naive naive_gemm(const GemmRefArgs<double>& p) {
  const std::int64_t M = p.M, N = p.N, K = p.K;
  const std::int64_t lda = p.lda ? p.lda : (p.trans_a ? M : K);
  const std::int64_t ldb = p.ldb ? p.ldb : (p.trans_b ? K : N);
  const std::int64_t ldc = p.ldc ? p.ldc : N;
  const std::int64_t ldg = p.ld_pre_gelu ? p.ld_pre_gelu : N;
  std::vector<double> opa(M * K), opb(K * N);
  for (std::int64_t r = 0; r < (p.trans_a ? K : M); ++r)
    for (std::int64_t c = 0; c < (p.trans_a ? M : K); ++c) {
      const double v = p.a[r * lda + c];
      if (p.trans_a)
        opa[c * K + r] = v;
      else
        opa[r * K + c] = v;
    }
  for (std::int64_t r = 0; r < (p.trans_b ? N : K); ++r)
    for (std::int64_t c = 0; c < (p.trans_b ? K : N); ++c) {
      const double v = p.b[r * ldb + c];
      if (p.trans_b)
        opb[c * N + r] = v;
      else
        opb[r * N + c] = v;
    }
  Naive out;
  out.d.assign(M * N, 0);
  out.pre.assign(M * N, 0);
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (std::int64_t k = 0; k < K; ++k)
        s += opa[i * K + k] * opb[k * N + j];
      double v = p.alpha * s;
      if (p.beta != 0) v += p.beta * p.c[i * ldc + j];
      if (p.bias && (p.epilogue == Epilogue::bias || p.epilogue == Epilogue::bias_gelu ||
                     p.epilogue == Epilogue::residual))
        v += p.bias[j];
      if (p.epilogue == Epilogue::bias_gelu) {
        out.pre[i * N + j] = v;
        v = gelu_indep(v);
      } else if (p.epilogue == Epilogue::dgelu) {
        // gelu' by a very fine central difference of the independent gelu.
        const double x = p.pre_gelu[i * ldg + j], h = 1e-5;
        v *= (gelu_indep(x + h) - gelu_indep(x - h)) / (2 * h);
      }
      out.d[i * N + j] = v;
    }
  if (p.epilogue == Epilogue::bias_grad) {
    out.bias_grad.assign(p.bias_grad, p.bias_grad + M);
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t k = 0; k < K; ++k)
        out.bias_grad[i] += opa[i * K + k];
  }
  return out;
}

std::vector<double> strided_rows(const std::vector<double>& x, std::int64_t rows, std::int64_t cols,
                                 std::int64_t ld) {
  std::vector<double> y;
  for (std::int64_t r = 0; r < rows; ++r)
    y.insert(y.end(), x.begin() + r * ld, x.begin() + r * ld + cols);
  return y;
}

}  // namespace

TEST_CASE("gemm_ref: a hand-worked 2x2 example with every epilogue", "[gemm_ref]") {
  const std::vector<double> a = {1, 2, 3, 4}, b = {5, 6, 7, 8}, bias = {1, -1};
  std::vector<double> d(4), pre(4);
  GemmRefArgs<double> p;
  p.M = p.N = p.K = 2;
  p.a = a.data();
  p.b = b.data();
  p.d = d.data();
  gemm_ref<double>(p);
  CHECK(d == std::vector<double>{19, 22, 43, 50});

  p.trans_b = true;  // B^T = [[5, 7], [6, 8]]
  gemm_ref<double>(p);
  CHECK(d == std::vector<double>{17, 23, 39, 53});
  p.trans_b = false;

  p.epilogue = Epilogue::bias;
  p.bias = bias.data();
  gemm_ref<double>(p);
  CHECK(d == std::vector<double>{20, 21, 44, 49});

  const std::vector<double> c = {100, 200, 300, 400};
  p.epilogue = Epilogue::residual;
  p.c = c.data();
  p.beta = 1;
  p.alpha = 2;
  gemm_ref<double>(p);
  CHECK(d == std::vector<double>{139, 243, 387, 499});

  std::vector<double> bias_grad = {10, 20};
  p.epilogue = Epilogue::bias_grad;
  p.bias = nullptr;
  p.alpha = 1;
  p.beta = 0;
  p.bias_grad = bias_grad.data();
  gemm_ref<double>(p);
  CHECK(bias_grad == std::vector<double>{13, 27});  // += row sums of A
  CHECK(d == std::vector<double>{19, 22, 43, 50});
}

TEST_CASE("gemm_ref matches an independent computation for every layout and epilogue",
          "[gemm_ref]") {
  auto rng = kiln::test::make_rng(41);
  const std::int64_t M = 7, N = 5, K = 6;
  const Epilogue epilogues[] = {Epilogue::none,     Epilogue::bias,  Epilogue::bias_gelu,
                                Epilogue::residual, Epilogue::dgelu, Epilogue::bias_grad};
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (Epilogue e : epilogues)
        for (int padded = 0; padded < 2; ++padded) {
          const std::int64_t pad = padded ? 3 : 0;
          GemmRefArgs<double> p;
          p.M = M;
          p.N = N;
          p.K = K;
          p.trans_a = ta;
          p.trans_b = tb;
          p.epilogue = e;
          p.alpha = 0.75;
          p.beta = (e == Epilogue::residual || e == Epilogue::none) ? -0.5 : 0.0;
          p.lda = (ta ? M : K) + pad;
          p.ldb = (tb ? K : N) + pad;
          p.ldc = N + pad;
          p.ldd = N + 2 * pad;
          p.ld_pre_gelu = N + pad;
          const auto a = kiln::test::random_uniform_double((ta ? K : M) * p.lda, -1, 1, rng);
          const auto b = kiln::test::random_uniform_double((tb ? N : K) * p.ldb, -1, 1, rng);
          const auto c = kiln::test::random_uniform_double(M * p.ldc, -1, 1, rng);
          const auto bias = kiln::test::random_uniform_double(N, -1, 1, rng);
          const auto pre_in = kiln::test::random_uniform_double(M * p.ld_pre_gelu, -3, 3, rng);
          const auto bias_grad0 = kiln::test::random_uniform_double(M, -1, 1, rng);
          const double sentinel = 12345.0;
          std::vector<double> d(M * p.ldd, sentinel), pre(M * p.ld_pre_gelu, sentinel),
              bias_grad = bias_grad0;
          p.a = a.data();
          p.b = b.data();
          p.c = p.beta != 0 ? c.data() : nullptr;
          p.d = d.data();
          if (e == Epilogue::bias || e == Epilogue::bias_gelu || e == Epilogue::residual)
            p.bias = bias.data();
          if (e == Epilogue::bias_gelu) p.pre_gelu_out = pre.data();
          if (e == Epilogue::dgelu) p.pre_gelu = pre_in.data();
          if (e == Epilogue::bias_grad) p.bias_grad = bias_grad.data();
          const Naive want = naive_gemm(p);  // before gemm_ref accumulates into bias_grad
          gemm_ref<double>(p);

          INFO("trans_a " << ta << " trans_b " << tb << " epilogue " << kiln::ref::epilogue_name(e)
                          << " padded " << padded);
          kiln::test::check_close("d", want.d, strided_rows(d, M, N, p.ldd), 1e-8, 1e-8);
          // Padding between rows is never written.
          for (std::int64_t r = 0; r < M; ++r)
            for (std::int64_t j = N; j < p.ldd; ++j)
              REQUIRE(d[r * p.ldd + j] == sentinel);
          if (e == Epilogue::bias_gelu)
            kiln::test::check_close("pre_gelu_out", want.pre,
                                    strided_rows(pre, M, N, p.ld_pre_gelu), 1e-12, 1e-12);
          if (e == Epilogue::bias_grad)
            kiln::test::check_close("bias_grad", want.bias_grad, bias_grad, 1e-12, 1e-12);
        }
}

TEST_CASE("gemm_ref accumulates in place when C is D", "[gemm_ref]") {
  auto rng = kiln::test::make_rng(42);
  const std::int64_t M = 6, N = 4, K = 9;
  const auto a = kiln::test::random_uniform_double(K * M, -1, 1, rng);
  const auto b = kiln::test::random_uniform_double(K * N, -1, 1, rng);
  const auto d0 = kiln::test::random_uniform_double(M * N, -1, 1, rng);
  std::vector<double> d = d0, fresh(M * N);
  GemmRefArgs<double> p;
  p.M = M;
  p.N = N;
  p.K = K;
  p.trans_a = true;
  p.a = a.data();
  p.b = b.data();
  p.d = fresh.data();
  gemm_ref<double>(p);  // fresh = A^T B
  p.beta = 1;
  p.c = d.data();
  p.d = d.data();
  gemm_ref<double>(p);  // d += A^T B
  std::vector<double> want(M * N);
  for (std::int64_t i = 0; i < M * N; ++i)
    want[i] = d0[i] + fresh[i];
  kiln::test::check_close("d += A^T B", want, d, 1e-13, 1e-13);
}

TEST_CASE("gemm_ref backward epilogues give the gradients of a two-layer GELU MLP", "[gemm_ref]") {
  // Forward, as the runtime runs it:
  //   P = X W1^T + b1 (bias_gelu: pre_gelu_out = P, G = gelu(P)),  Y = G W2^T + b2 (bias)
  //   L = sum(U * Y) for a fixed upstream gradient U.
  // Backward with the reference's GEMMs:
  //   dP = (U W2) * gelu'(P)       dgelu           dX = dP W1
  //   dW2 += U^T G, db2 += colsum(U)               dW1 += dP^T X, db1 += colsum(dP)  (bias_grad)
  auto rng = kiln::test::make_rng(43);
  const std::int64_t T = 3, C = 4, H = 5, O = 3;
  auto X = kiln::test::random_uniform_double(T * C, -1, 1, rng);
  auto W1 = kiln::test::random_uniform_double(H * C, -1, 1, rng);
  auto b1 = kiln::test::random_uniform_double(H, -1, 1, rng);
  auto W2 = kiln::test::random_uniform_double(O * H, -1, 1, rng);
  auto b2 = kiln::test::random_uniform_double(O, -1, 1, rng);
  const auto U = kiln::test::random_uniform_double(T * O, -1, 1, rng);

  auto linear = [](std::vector<double>& out, std::vector<double>* pre, const std::vector<double>& x,
                   const std::vector<double>& w, const std::vector<double>& bias, std::int64_t rows,
                   std::int64_t in, std::int64_t outs, bool gelu) {
    GemmRefArgs<double> p;
    p.M = rows;
    p.N = outs;
    p.K = in;
    p.trans_b = true;
    p.a = x.data();
    p.b = w.data();
    p.bias = bias.data();
    p.d = out.data();
    p.epilogue = gelu ? Epilogue::bias_gelu : Epilogue::bias;
    if (gelu) p.pre_gelu_out = pre->data();
    gemm_ref<double>(p);
  };
  std::vector<double> P(T * H), G(T * H), Y(T * O);
  auto loss = [&]() {
    linear(G, &P, X, W1, b1, T, C, H, true);
    linear(Y, nullptr, G, W2, b2, T, H, O, false);
    return kiln::test::weighted_sum(Y, U);
  };
  loss();

  // dP = (U W2) * gelu'(P)
  std::vector<double> dP(T * H), dX(T * C);
  {
    GemmRefArgs<double> p;
    p.M = T;
    p.N = H;
    p.K = O;
    p.a = U.data();
    p.b = W2.data();
    p.d = dP.data();
    p.epilogue = Epilogue::dgelu;
    p.pre_gelu = P.data();
    gemm_ref<double>(p);
  }
  // dX = dP W1
  {
    GemmRefArgs<double> p;
    p.M = T;
    p.N = C;
    p.K = H;
    p.a = dP.data();
    p.b = W1.data();
    p.d = dX.data();
    gemm_ref<double>(p);
  }
  // Parameter gradients accumulate: start from a known nonzero value and subtract it after.
  const double g0 = 0.25;
  auto weight_grad = [&](std::vector<double>& dw, std::vector<double>& db,
                         const std::vector<double>& dy, const std::vector<double>& x,
                         std::int64_t outs, std::int64_t in) {
    dw.assign(outs * in, g0);
    db.assign(outs, g0);
    GemmRefArgs<double> p;
    p.M = outs;
    p.N = in;
    p.K = T;
    p.trans_a = true;
    p.a = dy.data();
    p.b = x.data();
    p.beta = 1;
    p.c = dw.data();
    p.d = dw.data();
    p.epilogue = Epilogue::bias_grad;
    p.bias_grad = db.data();
    gemm_ref<double>(p);
    for (auto& v : dw)
      v -= g0;
    for (auto& v : db)
      v -= g0;
  };
  std::vector<double> dW1, db1, dW2, db2;
  weight_grad(dW2, db2, U, G, O, H);
  weight_grad(dW1, db1, dP, X, H, C);

  auto fd = [&](std::vector<double>& param) {
    return kiln::test::central_difference(
        [&](const std::vector<double>& v) {
          const std::vector<double> saved = param;
          param = v;
          const double l = loss();
          param = saved;
          return l;
        },
        param, 1e-6);
  };
  kiln::test::check_close("dX", fd(X), dX, 1e-6, 1e-8);
  kiln::test::check_close("dW1", fd(W1), dW1, 1e-6, 1e-8);
  kiln::test::check_close("db1", fd(b1), db1, 1e-6, 1e-8);
  kiln::test::check_close("dW2", fd(W2), dW2, 1e-6, 1e-8);
  kiln::test::check_close("db2", fd(b2), db2, 1e-6, 1e-8);
}

TEST_CASE("gemm_ref in float with float accumulation stays close to the double reference",
          "[gemm_ref]") {
  // The float/float instantiation is the GPU tests' same-precision baseline: it must differ from
  // the double reference only by rounding.
  auto rng = kiln::test::make_rng(44);
  const std::int64_t M = 9, N = 11, K = 300;
  const auto a = kiln::test::random_uniform(M * K, -1, 1, rng);
  const auto b = kiln::test::random_uniform(N * K, -1, 1, rng);
  const auto bias = kiln::test::random_uniform(N, -1, 1, rng);
  std::vector<float> d32(M * N), pre32(M * N), d64(M * N), pre64(M * N);
  GemmRefArgs<float> p;
  p.M = M;
  p.N = N;
  p.K = K;
  p.trans_b = true;
  p.a = a.data();
  p.b = b.data();
  p.bias = bias.data();
  p.epilogue = Epilogue::bias_gelu;
  p.d = d32.data();
  p.pre_gelu_out = pre32.data();
  gemm_ref<float, float>(p);
  p.d = d64.data();
  p.pre_gelu_out = pre64.data();
  gemm_ref<float, double>(p);
  kiln::test::check_close("pre_gelu float vs double", kiln::test::to_double(pre64),
                          kiln::test::to_double(pre32), 1e-4, 1e-4);
  kiln::test::check_close("d float vs double", kiln::test::to_double(d64),
                          kiln::test::to_double(d32), 1e-4, 1e-4);
  CHECK(kiln::test::to_double(d64) != kiln::test::to_double(d32));  // really a different path
}
