// The epilogue math both hand-written GEMM kernels apply in registers, two adjacent columns at a
// time (the pair every mma.sync / wgmma accumulator fragment holds): v = alpha * acc + beta * C
// + bias, then GELU (keeping the pre-activation) or GELU's derivative.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/common/gelu_math.cuh"
#include "kernels/common/vec.cuh"
#include "kernels/gemm/gemm.hpp"

namespace kiln::dev {

// GemmEpilogueArgs::bits
constexpr std::uint32_t kEpiC = 1;          // beta * C
constexpr std::uint32_t kEpiBias = 2;       // + bias[n]
constexpr std::uint32_t kEpiGelu = 4;       // pre_gelu_out = v, D = gelu(v)
constexpr std::uint32_t kEpiDgelu = 8;      // D = v * gelu'(pre_gelu)
constexpr std::uint32_t kEpiBiasGrad = 16;  // bias_grad[m] += rowsum(op(A))

// Everything the epilogue reads or writes besides the accumulators. Kernel parameter.
struct GemmEpilogueArgs {
  std::int64_t m, n;
  float alpha, beta;
  std::uint32_t bits;
  const void* c;  // (M, N) OutT, ld ldc
  std::int64_t ldc;
  void* d;  // (M, N) OutT, ld ldd (the sm90 kernel stores it through TMA instead)
  std::int64_t ldd;
  const bf16* bias;      // (N)
  bf16* pre_gelu_out;    // (M, N), ld ld_pre_gelu
  const bf16* pre_gelu;  // (M, N), ld ld_pre_gelu
  std::int64_t ld_pre_gelu;
  void* bias_grad;  // (M) OutT, accumulated
};

inline GemmEpilogueArgs make_epilogue_args(const impl::GemmProblem& p) {
  GemmEpilogueArgs e{};
  e.m = p.m;
  e.n = p.n;
  e.alpha = p.alpha;
  e.beta = p.beta;
  e.bits = (p.c ? kEpiC : 0u) | (p.flags.bias ? kEpiBias : 0u) | (p.flags.gelu ? kEpiGelu : 0u) |
           (p.flags.dgelu ? kEpiDgelu : 0u) | (p.flags.bias_grad ? kEpiBiasGrad : 0u);
  e.c = p.c;
  e.ldc = p.ldc;
  e.d = p.d;
  e.ldd = p.ldd;
  e.bias = static_cast<const bf16*>(p.bias);
  e.pre_gelu_out = static_cast<bf16*>(p.pre_gelu_out);
  e.pre_gelu = static_cast<const bf16*>(p.pre_gelu);
  e.ld_pre_gelu = p.ld_pre_gelu;
  e.bias_grad = p.bias_grad;
  return e;
}

// The library's one GELU (kernels/common/gelu_math.cuh): the sigmoid form, two fast
// special-function ops per element. tanh.approx alone would be one, but 1 + tanh(u) cancels for
// negative inputs and its error bound (2^-11) is near bf16's rounding of the outputs; the epilogue
// would then disagree with the standalone GELU kernel in the tail.
__device__ __forceinline__ float gelu_tanh(float x) {
  return gelu::gelu<bf16>(x);
}
__device__ __forceinline__ float gelu_tanh_grad(float x) {
  return gelu::gelu_grad<bf16>(x, 1.0f);
}

template <typename T>
__device__ __forceinline__ void load_pair(const T* p, bool both, float& a, float& b) {
  if constexpr (sizeof(T) == 4) {
    if (both) {
      const float2 v = *reinterpret_cast<const float2*>(p);
      a = v.x;
      b = v.y;
    } else {
      a = p[0];
      b = 0.0f;
    }
  } else {
    if (both) {
      const __nv_bfloat162 v = *reinterpret_cast<const __nv_bfloat162*>(p);
      a = __low2float(v);
      b = __high2float(v);
    } else {
      a = __bfloat162float(p[0]);
      b = 0.0f;
    }
  }
}

template <typename T>
__device__ __forceinline__ void store_pair(T* p, bool both, float a, float b) {
  if constexpr (sizeof(T) == 4) {
    if (both)
      *reinterpret_cast<float2*>(p) = make_float2(a, b);
    else
      p[0] = a;
  } else {
    if (both)
      *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
    else
      p[0] = __float2bfloat16_rn(a);
  }
}

// Applies the epilogue to the accumulators (v0, v1) of D[row][col], D[row][col + 1], which the
// caller has checked lie in the matrix (row < m, col < n); col is even. On return v0, v1 hold D's
// values and g0, g1 the pre-activations (kEpiGelu).
template <typename OutT>
__device__ __forceinline__ void epilogue_pair(const GemmEpilogueArgs& e, std::int64_t row,
                                              std::int64_t col, float& v0, float& v1, float& g0,
                                              float& g1) {
  const bool both = col + 1 < e.n;
  v0 *= e.alpha;
  v1 *= e.alpha;
  if (e.bits & kEpiC) {
    float c0, c1;
    load_pair(static_cast<const OutT*>(e.c) + row * e.ldc + col, both, c0, c1);
    v0 += e.beta * c0;
    v1 += e.beta * c1;
  }
  if (e.bits & kEpiBias) {
    float b0, b1;
    load_pair(e.bias + col, both, b0, b1);
    v0 += b0;
    v1 += b1;
  }
  if (e.bits & kEpiGelu) {
    g0 = v0;
    g1 = v1;
    v0 = gelu_tanh(v0);
    v1 = gelu_tanh(v1);
  } else if (e.bits & kEpiDgelu) {
    float p0, p1;
    load_pair(e.pre_gelu + row * e.ld_pre_gelu + col, both, p0, p1);
    v0 *= gelu_tanh_grad(p0);
    v1 *= gelu_tanh_grad(p1);
  }
}

// bias_grad[row] += s (only the one thread owning the row calls it: deterministic).
template <typename OutT>
__device__ __forceinline__ void bias_grad_add(const GemmEpilogueArgs& e, std::int64_t row,
                                              float s) {
  OutT* g = static_cast<OutT*>(e.bias_grad) + row;
  if constexpr (sizeof(OutT) == 4) {
    *g += s;
  } else {
    *g = __float2bfloat16_rn(__bfloat162float(*g) + s);
  }
}

}  // namespace kiln::dev
