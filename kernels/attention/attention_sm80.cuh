// Device pieces shared by the sm_80 attention kernels (forward, backward): tile loads with
// cp.async, ldmatrix on shared addresses, exp2. The index math of the swizzled tiles and of the
// ldmatrix lane patterns is in attention_layout.hpp (host and device, tested on the CPU).
//
// Fragment conventions (PTX ISA, mma.m16n8k16): lane = 4 g + t. A 16x8 fp32 accumulator tile holds
// rows g and g + 8, columns 2t and 2t + 1: c[0], c[1] in row g, c[2], c[3] in row g + 8. Two such
// tiles side by side (columns 0-7 and 8-15) are exactly the A operand of the next mma over k = 16
// once packed to bf16 pairs (pack_a below): this is how P (or dS) feeds the second GEMM straight
// from registers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/attention/attention.hpp"
#include "kernels/attention/attention_layout.hpp"
#include "kernels/common/online_softmax.cuh"
#include "kernels/common/reduce.cuh"
#include "kernels/common/sm80.cuh"
#include "kernels/common/vec.cuh"

namespace kiln::attn {

using bf16 = __nv_bfloat16;

using dev::exp2_approx;  // the exp2 domain of the softmax (kernels/common/online_softmax.cuh)
using dev::kLn2;
using dev::kLog2e;

// 16-byte cp.async to a shared-window address; zero-fills (reads nothing) when !valid.
__device__ __forceinline__ void cp_async_16(std::uint32_t smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem),
               "r"(valid ? 16 : 0)
               : "memory");
}

// Asynchronously copies a kRows x kCols bf16 tile from global memory (row stride `stride`
// elements, 16-byte aligned rows) into a swizzled shared tile at shared address `smem`. Rows >=
// rows_valid are zero-filled (never read), so partial tiles need no other care: zero keys score 0
// and are masked, zero values contribute nothing. Each thread copies one column chunk of every
// kRowsPerPass-th row; kRowsPerPass is a multiple of 8, so the swizzle of its chunk is the same in
// every pass and the addresses advance by constants (nothing to hoist into registers).
template <int kRows, int kCols, int kThreads>
__device__ __forceinline__ void load_tile(std::uint32_t smem, const bf16* gmem, int64_t stride,
                                          int rows_valid, int tid) {
  using Map = TileLoadMap<kCols, kThreads>;
  static_assert(kRows % Map::kRowsPerPass == 0, "whole passes");
  const int row = Map::row(tid);
  const bf16* g = gmem + row * stride + Map::col(tid);
  const int64_t step = Map::kRowsPerPass * stride;
#pragma unroll
  for (int i = 0; i < kRows / Map::kRowsPerPass; ++i) {
    const bool valid = row + i * Map::kRowsPerPass < rows_valid;
    cp_async_16(smem + Map::offset(tid, i), valid ? g : gmem, valid);
    g += step;
  }
}

// 4-byte cp.async (through L1: .ca is the only form for sizes below 16), zero-filled when invalid.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dev::smem_addr(smem)),
               "l"(gmem), "r"(valid ? 4 : 0)
               : "memory");
}

// Two adjacent 16x8 accumulator tiles (columns 0-7 in c0, 8-15 in c1) as the bf16 A operand of
// an m16n8k16 mma over those 16 columns.
__device__ __forceinline__ void pack_a(std::uint32_t (&a)[4], const float (&c0)[4],
                                       const float (&c1)[4]) {
  a[0] = dev::pack_bf16x2(c0[0], c0[1]);
  a[1] = dev::pack_bf16x2(c0[2], c0[3]);
  a[2] = dev::pack_bf16x2(c1[0], c1[1]);
  a[3] = dev::pack_bf16x2(c1[2], c1[3]);
}

// Element `hi` (0 = low half) of a packed bf16 pair, as float.
__device__ __forceinline__ float unpack_bf16(std::uint32_t pair, int hi) {
  return __uint_as_float(hi ? (pair & 0xffff0000u) : (pair << 16));
}

__device__ __forceinline__ void ldsm_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// The raw pointers and strides every sm_80 kernel reads, passed by value.
struct KernelParams {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  const bf16* o;
  const bf16* dout;
  const float* lse;
  const float* dsum;
  bf16* o_out;
  float* lse_out;
  float* dsum_out;
  float* dq_accum;
  bf16* dq;
  bf16* dk;
  bf16* dv;
  impl::AttnStrides sq, sk, sv, so;
  int Tq, Tk, NHq, group;
  float scale, scale_log2;
  bool causal;
};

// The deterministic dQ pass of the backward (attention_bwd_dq_sm80.cu): grid over query blocks,
// dQ = scale * sum over key blocks of dS K, written to p.dq.
void launch_bwd_dq(const KernelParams& p, int HD, int B, cudaStream_t stream);

inline KernelParams make_params(const impl::AttnShape& s) {
  KernelParams p{};
  p.sq = s.q;
  p.sk = s.k;
  p.sv = s.v;
  p.so = s.o;
  p.Tq = s.Tq;
  p.Tk = s.Tk;
  p.NHq = s.NHq;
  p.group = s.group();
  p.scale = s.scale;
  p.scale_log2 = s.scale_log2;
  p.causal = s.causal;
  return p;
}

// The backward's parameters: its tensors, D (`dsum`) and, in atomic mode, the dQ accumulator.
inline KernelParams make_bwd_params(const impl::AttnBwdArgs& a, const float* dsum,
                                    float* dq_accum) {
  KernelParams p = make_params(a.s);
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.dout = a.dout;
  p.lse = a.lse;
  p.dsum = dsum;
  p.dq_accum = dq_accum;
  p.dq = a.dq;
  p.dk = a.dk;
  p.dv = a.dv;
  return p;
}

}  // namespace kiln::attn
