// The sm_90a attention backward's dQ accumulator (atomic mode): its size, and the pass that turns
// it into dQ. The dK/dV kernel (attention_bwd_sm90.cu) adds each block's two 64 x 64 dQ parts to it
// in wgmma accumulator order by bulk fp32 reductions; this pass undoes that order
// (attention_sm90_layout.hpp, dq_part_*), scales and writes bf16 in the caller's strides.
#include "errors/check.hpp"
#include "kernels/attention/attention.hpp"
#include "kernels/attention/attention_dispatch.hpp"
#include "kernels/attention/attention_sm90_layout.hpp"
#include "kernels/common/vec.cuh"

namespace kiln::attn {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kDqPart = sm90::kDqPart;

// dQ (bf16, caller's strides) = scale * the accumulator, whose (b, h, m_block) tile holds two
// 64 x 64 parts in wgmma accumulator order (sm90::dq_part_find). One thread per 8 columns of a
// row.
template <int HD>
__global__ void attention_bwd_convert_dq_sm90_kernel(const float* accum, bf16* dq,
                                                     impl::AttnStrides sq, int Tq, int NHq,
                                                     int m_blocks, float scale, int64_t rows) {
  constexpr int kM = sm90::bwd_block_m(HD);
  constexpr int kChunks = HD / 8;
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = gid / kChunks;
  if (row >= rows) return;
  const int c = static_cast<int>(gid % kChunks);
  // row runs over (B, Tq, NHq), the memory order of dQ.
  const int h = static_cast<int>(row % NHq);
  const int64_t bt = row / NHq;
  const int q = static_cast<int>(bt % Tq);
  const int64_t b = bt / Tq;
  const int m_block = q / kM, r = q % kM;
  const int col = c * 8;
  const float* part =
      accum + (((b * NHq + h) * m_blocks + m_block) * 2 + sm90::dq_part_of(HD, r, col)) * kDqPart;
  dev::Pack<bf16> out;
#pragma unroll
  for (int k = 0; k < 4; ++k) {  // columns col + 2k, + 1: one register pair (8-byte aligned)
    const float2 x =
        *reinterpret_cast<const float2*>(part + sm90::dq_part_find(r % 64, (col + 2 * k) % 64));
    out.v[2 * k] = dev::from_float<bf16>(x.x * scale);
    out.v[2 * k + 1] = dev::from_float<bf16>(x.y * scale);
  }
  dev::store_pack(dq + b * sq.b + static_cast<int64_t>(q) * sq.t + h * sq.h + col, out);
}

template <int HD>
void convert_dq(const impl::AttnBwdArgs& a, const float* dq_accum, cudaStream_t stream) {
  constexpr int kM = sm90::bwd_block_m(HD);
  constexpr int kThreadsPerBlock = 256;
  const impl::AttnShape& s = a.s;
  const int64_t rows = static_cast<int64_t>(s.B) * s.Tq * s.NHq;
  const int64_t threads = rows * (HD / 8);
  const unsigned blocks =
      static_cast<unsigned>((threads + kThreadsPerBlock - 1) / kThreadsPerBlock);
  attention_bwd_convert_dq_sm90_kernel<HD><<<blocks, kThreadsPerBlock, 0, stream>>>(
      dq_accum, a.dq, s.q, s.Tq, s.NHq, (s.Tq + kM - 1) / kM, s.scale, rows);
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace
}  // namespace kiln::attn

namespace kiln::impl {

std::size_t attention_bwd_sm90_dq_accum_bytes(const AttnShape& s) {
  const int kM =
      attn::dispatch_head_dim(s.HD, [&]<int HD>() { return attn::sm90::bwd_block_m(HD); });
  const std::size_t m_blocks = static_cast<std::size_t>((s.Tq + kM - 1) / kM);
  return static_cast<std::size_t>(s.B) * s.NHq * m_blocks * kM * s.HD * sizeof(float);
}

void attention_bwd_sm90_convert_dq(const AttnBwdArgs& a, const float* dq_accum,
                                   cudaStream_t stream) {
  attn::dispatch_head_dim(a.s.HD, [&]<int HD>() { attn::convert_dq<HD>(a, dq_accum, stream); });
}

}  // namespace kiln::impl
