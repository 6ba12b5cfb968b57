// GEMM with fused epilogues, reference (the spec the CUDA backends and the CPU backend follow).
//
//   op(A): (M, K)   A is (M, K) row-major, or (K, M) row-major when trans_a (op(A) = A^T)
//   op(B): (K, N)   B is (K, N) row-major, or (N, K) row-major when trans_b (op(B) = B^T;
//                   torch.nn.Linear's weight W (out, in) is B with trans_b)
//   acc  = op(A) @ op(B)                                  (M, N), accumulated in Acc
//   v    = alpha * acc + beta * C [+ bias[n]]             C is read only when beta != 0
//
//   epilogue   D (M, N) =                  also
//   none       v
//   bias       v with bias (N) added
//   bias_gelu  gelu(v), bias added         pre_gelu_out (M, N) = v (the pre-activation)
//   residual   v, C the residual (required), bias (N) added when given
//   dgelu      v * gelu'(pre_gelu)         pre_gelu (M, N) read (the forward's pre-activation)
//   bias_grad  v                           bias_grad (M) += sum_k op(A)[m, k] (unscaled)
//
// gelu is the tanh approximation (GPT-2):
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), gelu' its exact derivative.
//
// The runtime's three GEMMs of a linear layer Y = X W^T + b (X (T, in), W (out, in)):
//   forward   Y  = X @ W^T + b          M = T,   N = out, K = in,  trans_b, epilogue bias
//                                        (bias_gelu for the MLP's first layer, residual for
//                                        the projections that feed the residual stream)
//   dX        dX = dY @ W               M = T,   N = in,  K = out  (dgelu when the layer's
//                                        output went through GELU: dY is then dH, pre_gelu
//                                        the forward's pre-activation)
//   dW, db    dW += dY^T @ X            M = out, N = in,  K = T, trans_a, beta = 1, C = dW,
//             db += colsum(dY)          epilogue bias_grad (bias_grad = db)
//
// Leading dimensions (row strides, in elements) default to the packed ones when 0: lda = K (or M
// when trans_a), ldb = N (or K when trans_b), ldc = ldd = ld_pre_gelu = N.
// Everything is computed in Acc (double by default; float gives the GPU tests' same-precision
// baseline); T is the storage type. Arguments are not validated beyond what is cheap: the
// references are called by tests and the CPU backend with correct shapes.
#pragma once

#include <cstdint>

namespace kiln::ref {

enum class Epilogue { none, bias, bias_gelu, residual, dgelu, bias_grad };

template <typename T>
struct GemmRefArgs {
  std::int64_t M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  double alpha = 1, beta = 0;
  Epilogue epilogue = Epilogue::none;
  const T* a = nullptr;         // (M, K), or (K, M) when trans_a
  const T* b = nullptr;         // (K, N), or (N, K) when trans_b
  const T* c = nullptr;         // (M, N); may be d (in-place accumulation); read when beta != 0
  T* d = nullptr;               // (M, N) out
  const T* bias = nullptr;      // (N): bias, bias_gelu; optional for residual
  T* pre_gelu_out = nullptr;    // (M, N) out: bias_gelu
  const T* pre_gelu = nullptr;  // (M, N): dgelu
  T* bias_grad = nullptr;       // (M) accumulated (+=): bias_grad
  std::int64_t lda = 0, ldb = 0, ldc = 0, ldd = 0, ld_pre_gelu = 0;  // 0: packed
};

template <typename T, typename Acc = double>
void gemm_ref(const GemmRefArgs<T>& args);

// The tanh-approximation GELU and its derivative, in Acc (the same formulas as gemm_ref).
template <typename Acc>
Acc gelu_tanh_ref(Acc x);
template <typename Acc>
Acc gelu_tanh_grad_ref(Acc x);

const char* epilogue_name(Epilogue e);

}  // namespace kiln::ref
