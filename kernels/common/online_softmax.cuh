// The online softmax of the attention forwards (attention_fwd_sm80.cu, attention_fwd_sm90.cu):
// scores arrive one key block at a time; each row keeps its running maximum and sum, and the
// output accumulated so far is rescaled whenever the maximum grows (FlashAttention's recurrence).
// Scores stay raw (the softmax scale is folded into the exp2 argument: exp(scale (s - max)) =
// exp2(s scale log2(e) - max scale log2(e)), one FMA and one MUFU op an element).
//
// Register layout. Both tensor-core forms leave a thread the same pattern: fragments of 4
// registers, fragment j covering 8 columns, register e at row (e >> 1) of the thread's two rows
// (g, g + 8 of a 16-row slice, g = lane / 4) and column 8 j + 2 (lane % 4) + (e & 1). That is
// mma.sync m16n8's accumulator tile (float[n][4]) and wgmma's 64 x N accumulator seen by one
// thread (float[N / 2], fragment j at registers 4 j .. 4 j + 3). The four lanes of a quad hold
// the columns of the same two rows, so row reductions are quad reductions.
#pragma once

#include <cuda_runtime.h>

#include "kernels/common/reduce.cuh"
#include "kernels/common/rows.cuh"

namespace kiln::dev {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// 2^x with the MUFU unit (relative error ~2^-22; exp2(-inf) = 0).
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Register e of fragment j, for either accumulator form.
template <int N>
__device__ __forceinline__ float& frag(float (&x)[N][4], int j, int e) {
  return x[j][e];
}
template <int N>
__device__ __forceinline__ float& frag(float (&x)[N], int j, int e) {
  return x[4 * j + e];
}
// Fragments in an accumulator array.
template <typename T>
struct FragCount;
template <int N>
struct FragCount<float[N][4]> {
  static constexpr int value = N;
};
template <int N>
struct FragCount<float[N]> {
  static_assert(N % 4 == 0, "whole fragments");
  static constexpr int value = N / 4;
};

// Every register of an accumulator array to 0.
template <typename A>
__device__ __forceinline__ void zero_frags(A& x) {
#pragma unroll
  for (int j = 0; j < FragCount<A>::value; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      frag(x, j, e) = 0.f;
}

// A row's log-sum-exp (natural log, as the forward writes it) in the exp2 domain the backward
// recomputes P in: P = exp2(s scale log2(e) - lse_log2(lse)). A row that saw no key has LSE -inf;
// +inf makes its P 0 rather than NaN.
__device__ __forceinline__ float lse_log2(float lse) {
  return lse == -INFINITY ? INFINITY : lse * kLog2e;
}

// Sets the masked scores of a block of keys from n0 to -inf: keys past tk, and causal keys after
// the row's last visible one (row i sees keys j <= i + diag). row0: the thread's first row (the
// second is row0 + 8). The kernels call it only for blocks that need it (the test of the whole
// block stays in each kernel: the sm_80 forward at HD 128 sits at 255 registers, and moving that
// test or computing the column base ahead of the loop makes it spill).
template <typename S>
__device__ __forceinline__ void mask_scores(S& s, int row0, int n0, int lane, int tk, bool causal,
                                            int diag) {
#pragma unroll
  for (int j = 0; j < FragCount<S>::value; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = row0 + (e >> 1) * 8;
      const int col = n0 + j * 8 + (lane & 3) * 2 + (e & 1);
      if (col >= tk || (causal && col > row + diag)) frag(s, j, e) = -INFINITY;
    }
}

// The running state of a thread's two rows.
struct OnlineSoftmax {
  float row_max[2] = {-INFINITY, -INFINITY};  // raw scores
  float row_sum[2] = {0.f, 0.f};              // this thread's columns only (finish adds the quad)

  // Takes one block's raw scores: s becomes P = exp2(s scale_log2 - max scale_log2) (fp32,
  // unnormalized), and corr[hr] the factor the output accumulated so far must be scaled by. A row
  // whose keys are all masked so far has max -inf: it is offset by 0 instead, so exp2 gives 0
  // rather than NaN.
  template <typename S>
  __device__ __forceinline__ void update(S& s, float scale_log2, float (&corr)[2]) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr)
      corr[hr] = update_row(s, hr, scale_log2);
  }

  // update for row hr alone (its registers e = 2 hr, 2 hr + 1 of every fragment); returns its
  // correction. Lets a kernel interleave its own work per row (the sm_80 forward rescales O row
  // by row, which keeps it within its registers).
  template <typename S>
  __device__ __forceinline__ float update_row(S& s, int hr, float scale_log2) {
    constexpr int kFrags = FragCount<S>::value;
    float mx = row_max[hr];
#pragma unroll
    for (int j = 0; j < kFrags; ++j)
      mx = fmaxf(mx, fmaxf(frag(s, j, 2 * hr), frag(s, j, 2 * hr + 1)));
    mx = lanes_max<4>(mx);  // the quad holds the row's other columns
    const float offset = mx == -INFINITY ? 0.f : mx * scale_log2;
    const float corr = exp2_approx(row_max[hr] * scale_log2 - offset);
    row_max[hr] = mx;
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < kFrags; ++j)
#pragma unroll
      for (int e = 2 * hr; e < 2 * hr + 2; ++e) {
        frag(s, j, e) = exp2_approx(fmaf(frag(s, j, e), scale_log2, -offset));
        sum += frag(s, j, e);
      }
    row_sum[hr] = row_sum[hr] * corr + sum;
    return corr;
  }

  // The output accumulated so far, by update's correction (rows hr alone: by update_row's).
  template <typename O>
  __device__ __forceinline__ static void rescale(O& o, const float (&corr)[2]) {
#pragma unroll
    for (int j = 0; j < FragCount<O>::value; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        frag(o, j, e) *= corr[e >> 1];
  }
  template <typename O>
  __device__ __forceinline__ static void rescale_row(O& o, int hr, float corr) {
#pragma unroll
    for (int j = 0; j < FragCount<O>::value; ++j) {
      frag(o, j, 2 * hr) *= corr;
      frag(o, j, 2 * hr + 1) *= corr;
    }
  }

  // Row hr's whole sum (every lane of the quad gets it). Lanes 1 then 2, not lanes_sum<4>'s
  // 2 then 1: the order of the additions is the one the kernels have always used (same bits).
  __device__ __forceinline__ float total(int hr) const {
    float sum = row_sum[hr];
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    sum += __shfl_xor_sync(kFullMask, sum, 2);
    return sum;
  }
  // The factor that normalizes the output (0 for a row that saw no key).
  __device__ __forceinline__ static float inverse(float total) {
    return total > 0.f ? 1.f / total : 0.f;
  }
  // The row's log-sum-exp of the scaled scores (natural log; -inf for a row that saw no key).
  __device__ __forceinline__ float lse(int hr, float total, float scale_log2) const {
    return total > 0.f ? (row_max[hr] * scale_log2 + __log2f(total)) * kLn2 : -INFINITY;
  }
};

}  // namespace kiln::dev
