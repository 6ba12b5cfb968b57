// Row softmax kernels (forward with scale and optional causal mask, backward), included by the
// translation units that instantiate them.
//
// The row is held in registers as 16-byte vectors by a thread group (kernels/common/rows.cuh),
// reduced twice (max, then the sum of exponentials) and written once: one read and one write of
// memory per element. Exponentials are base 2 of x * scale * log2(e). A row whose every entry is
// masked or -inf has max -inf; it is shifted by 0 instead, so its exponentials are exact zeros and
// its zero sum selects zeros, never 0/0. NaN and +inf still reach the sum and poison the row.
// Under the causal mask, vectors wholly past the row's last visible column are not even read.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/reduce.cuh"
#include "kernels/common/row_launch.cuh"
#include "kernels/common/rows.cuh"

namespace kiln::dev::softmax {

constexpr int kWarpThreads = kRowWarpThreads;
constexpr int kGenericThreads = 256;
constexpr float kLog2e = 1.4426950408889634f;

template <typename T>
struct FwdParams {
  T* y;        // (N, C) out
  const T* x;  // (N, C)
  std::int64_t N;
  int C;
  float scale_log2;  // scale * log2(e)
  bool causal;       // row r sees columns 0 .. r % C
};

template <typename T>
struct BwdParams {
  T* dx;        // (N, C) out
  const T* dy;  // (N, C)
  const T* y;   // (N, C): the forward's output
  std::int64_t N;
  int C;
  float scale;
};

template <typename T, int kLanes, int kPacks>
__global__ void __launch_bounds__(row_block_size<kLanes>(), row_min_blocks<kLanes, kPacks>())
    softmax_fwd_kernel(const FwdParams<T> p) {
  using G = RowGroup<kLanes>;
  constexpr int kPack = Vec16<T>::kSize;
  __shared__ float scratch[32];
  const int vec = p.C / kPack;
  const auto [row, offset, active, rank, stride] = RowPlace<kLanes>::here(p.N, p.C);
  const int last = p.causal ? static_cast<int>(row % p.C) : p.C - 1;  // last visible column

  Vec16<T> xv[kPacks];
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int j = rank + k * stride;
    xv[k] = active && j < vec && j * kPack <= last ? load16(p.x + offset + j * kPack) : zero16<T>();
  }
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int j = rank + k * stride;
#pragma unroll
    for (int e = 0; e < kPack; ++e) {
      if (j < vec && j * kPack + e <= last) m = fmaxf(m, get(xv[k], e) * p.scale_log2);
    }
  }
  m = G::max(m, scratch);
  const float shift = m == -INFINITY ? 0.0f : m;
  float ev[kPacks][kPack];
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int j = rank + k * stride;
#pragma unroll
    for (int e = 0; e < kPack; ++e) {
      const bool visible = j < vec && j * kPack + e <= last;
      ev[k][e] = visible ? exp2f(get(xv[k], e) * p.scale_log2 - shift) : 0.0f;
      sum += ev[k][e];
    }
  }
  sum = G::sum(sum, scratch);
  const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;  // NaN stays NaN
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int j = rank + k * stride;
    if (active && j < vec) {
      float out[kPack];
#pragma unroll
      for (int e = 0; e < kPack; ++e)
        out[e] = j * kPack + e <= last ? ev[k][e] * inv : 0.0f;
      store16(p.y + offset + j * kPack, make16<T>(out));
    }
  }
}

// The compiler moves the conversions of y and dy above the reduction, holding both rows as floats,
// so this kernel gets a looser register budget than row_min_blocks() (never a spill).
template <typename T, int kLanes, int kPacks>
__global__ void __launch_bounds__(row_block_size<kLanes>(), (kLanes > 0 && kPacks <= 4) ? 2 : 1)
    softmax_bwd_kernel(const BwdParams<T> p) {
  using G = RowGroup<kLanes>;
  constexpr int kPack = Vec16<T>::kSize;
  __shared__ float scratch[32];
  const int vec = p.C / kPack;
  const auto [row, offset, active, rank, stride] = RowPlace<kLanes>::here(p.N, p.C);

  Vec16<T> dyv[kPacks], yv[kPacks];
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int j = rank + k * stride;
    const bool ok = active && j < vec;
    dyv[k] = ok ? load16(p.dy + offset + j * kPack) : zero16<T>();
    yv[k] = ok ? load16(p.y + offset + j * kPack) : zero16<T>();
  }
  float dot = 0.0f;
#pragma unroll
  for (int k = 0; k < kPacks; ++k)
#pragma unroll
    for (int e = 0; e < kPack; ++e)
      dot = fmaf(get(dyv[k], e), get(yv[k], e), dot);
  dot = G::sum(dot, scratch);
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int j = rank + k * stride;
    if (active && j < vec) {
      float out[kPack];
#pragma unroll
      for (int e = 0; e < kPack; ++e)
        out[e] = p.scale * get(yv[k], e) * (get(dyv[k], e) - dot);
      store16(p.dx + offset + j * kPack, make16<T>(out));
    }
  }
}

// Generic kernels: any C, a block per row (grid-stride), scalar accesses, the row re-read from
// L1/L2 on each pass.
template <typename T>
__global__ void __launch_bounds__(kGenericThreads)
    softmax_fwd_generic_kernel(const FwdParams<T> p) {
  __shared__ float scratch[32];
  const std::int64_t C = p.C;
  for (std::int64_t row = blockIdx.x; row < p.N; row += gridDim.x) {
    const T* x = p.x + row * C;
    T* y = p.y + row * C;
    const std::int64_t last = p.causal ? row % C : C - 1;
    float m = -INFINITY;
    for (std::int64_t c = threadIdx.x; c <= last; c += kGenericThreads)
      m = fmaxf(m, to_float(x[c]) * p.scale_log2);
    m = block_max<kGenericThreads>(m, scratch);
    const float shift = m == -INFINITY ? 0.0f : m;
    float sum = 0.0f;
    for (std::int64_t c = threadIdx.x; c <= last; c += kGenericThreads)
      sum += exp2f(to_float(x[c]) * p.scale_log2 - shift);
    sum = block_sum<kGenericThreads>(sum, scratch);
    const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
    for (std::int64_t c = threadIdx.x; c < C; c += kGenericThreads)
      y[c] = from_float<T>(c <= last ? exp2f(to_float(x[c]) * p.scale_log2 - shift) * inv : 0.0f);
  }
}

template <typename T>
__global__ void __launch_bounds__(kGenericThreads)
    softmax_bwd_generic_kernel(const BwdParams<T> p) {
  __shared__ float scratch[32];
  const std::int64_t C = p.C;
  for (std::int64_t row = blockIdx.x; row < p.N; row += gridDim.x) {
    const T* dy = p.dy + row * C;
    const T* y = p.y + row * C;
    float dot = 0.0f;
    for (std::int64_t c = threadIdx.x; c < C; c += kGenericThreads)
      dot = fmaf(to_float(dy[c]), to_float(y[c]), dot);
    dot = block_sum<kGenericThreads>(dot, scratch);
    for (std::int64_t c = threadIdx.x; c < C; c += kGenericThreads)
      p.dx[row * C + c] = from_float<T>(p.scale * to_float(y[c]) * (to_float(dy[c]) - dot));
  }
}

}  // namespace kiln::dev::softmax
