#include "kernels/gemm/gemm_ref.hpp"

#include <cmath>
#include <vector>

namespace kiln::ref {

template <typename Acc>
Acc gelu_tanh_ref(Acc x) {
  const Acc s = static_cast<Acc>(0.7978845608028654);  // sqrt(2 / pi)
  const Acc c = static_cast<Acc>(0.044715);
  const Acc u = s * (x + c * x * x * x);
  return static_cast<Acc>(0.5) * x * (static_cast<Acc>(1) + std::tanh(u));
}

template <typename Acc>
Acc gelu_tanh_grad_ref(Acc x) {
  const Acc s = static_cast<Acc>(0.7978845608028654);
  const Acc c = static_cast<Acc>(0.044715);
  const Acc t = std::tanh(s * (x + c * x * x * x));
  const Acc half = static_cast<Acc>(0.5), one = static_cast<Acc>(1);
  return half * (one + t) + half * x * (one - t * t) * s * (one + 3 * c * x * x);
}

template <typename T, typename Acc>
void gemm_ref(const GemmRefArgs<T>& p) {
  const std::int64_t M = p.M, N = p.N, K = p.K;
  const std::int64_t lda = p.lda ? p.lda : (p.trans_a ? M : K);
  const std::int64_t ldb = p.ldb ? p.ldb : (p.trans_b ? K : N);
  const std::int64_t ldc = p.ldc ? p.ldc : N;
  const std::int64_t ldd = p.ldd ? p.ldd : N;
  const std::int64_t ldg = p.ld_pre_gelu ? p.ld_pre_gelu : N;
  // op(A)[m, k] and op(B)[k, n] in storage.
  auto a_at = [&](std::int64_t m, std::int64_t k) {
    return static_cast<Acc>(p.trans_a ? p.a[k * lda + m] : p.a[m * lda + k]);
  };
  auto b_at = [&](std::int64_t k, std::int64_t n) {
    return static_cast<Acc>(p.trans_b ? p.b[n * ldb + k] : p.b[k * ldb + n]);
  };
  const Acc alpha = static_cast<Acc>(p.alpha), beta = static_cast<Acc>(p.beta);
  const bool add_bias =
      p.bias != nullptr && (p.epilogue == Epilogue::bias || p.epilogue == Epilogue::bias_gelu ||
                            p.epilogue == Epilogue::residual);

  // Rows one at a time: C may alias D, and each output element reads only its own C element
  // before writing it, so row order keeps in-place accumulation exact.
  std::vector<Acc> row(static_cast<std::size_t>(N));
  for (std::int64_t m = 0; m < M; ++m) {
    for (std::int64_t n = 0; n < N; ++n)
      row[n] = 0;
    for (std::int64_t k = 0; k < K; ++k) {
      const Acc av = a_at(m, k);
      for (std::int64_t n = 0; n < N; ++n)
        row[n] += av * b_at(k, n);
    }
    for (std::int64_t n = 0; n < N; ++n) {
      Acc v = alpha * row[n];
      if (p.beta != 0) v += beta * static_cast<Acc>(p.c[m * ldc + n]);
      if (add_bias) v += static_cast<Acc>(p.bias[n]);
      switch (p.epilogue) {
        case Epilogue::bias_gelu:
          p.pre_gelu_out[m * ldg + n] = static_cast<T>(v);
          v = gelu_tanh_ref<Acc>(v);
          break;
        case Epilogue::dgelu:
          v *= gelu_tanh_grad_ref<Acc>(static_cast<Acc>(p.pre_gelu[m * ldg + n]));
          break;
        default:
          break;
      }
      p.d[m * ldd + n] = static_cast<T>(v);
    }
    if (p.epilogue == Epilogue::bias_grad) {
      Acc s = 0;
      for (std::int64_t k = 0; k < K; ++k)
        s += a_at(m, k);
      p.bias_grad[m] = static_cast<T>(static_cast<Acc>(p.bias_grad[m]) + s);
    }
  }
}

const char* epilogue_name(Epilogue e) {
  switch (e) {
    case Epilogue::none:
      return "none";
    case Epilogue::bias:
      return "bias";
    case Epilogue::bias_gelu:
      return "bias_gelu";
    case Epilogue::residual:
      return "residual";
    case Epilogue::dgelu:
      return "dgelu";
    case Epilogue::bias_grad:
      return "bias_grad";
  }
  return "unknown";
}

template float gelu_tanh_ref<float>(float);
template double gelu_tanh_ref<double>(double);
template float gelu_tanh_grad_ref<float>(float);
template double gelu_tanh_grad_ref<double>(double);
template void gemm_ref<float, double>(const GemmRefArgs<float>&);
template void gemm_ref<double, double>(const GemmRefArgs<double>&);
template void gemm_ref<float, float>(const GemmRefArgs<float>&);

}  // namespace kiln::ref
