// The backward's small passes, and its deterministic dQ pass:
//  - preprocess: D = rowsum(dO * O) in fp32 (and zeroing of the fp32 dQ accumulator);
//  - convert: dQ (bf16, caller's strides) = scale * the accumulator;
//  - dQ pass (deterministic mode): one CTA of 4 warps per 64 query rows of one (batch, head),
//    each warp 16 rows; K and V blocks stream through shared memory (double-buffered cp.async)
//    and each block recomputes S, P, dP and dS to add dS K into fp32 registers, in a fixed order.
//    No atomics: the price is recomputing S and dP (two of the backward's five products).
#include "errors/check.hpp"
#include "kernels/attention/attention_sm80.cuh"

namespace kiln::attn {
namespace {

// Rows of (B, Tq, NHq) in that order (the memory order of dO and O): row -> (b, t, h).
struct RowIndex {
  int b, t, h;
};
__device__ __forceinline__ RowIndex row_index(int64_t row, int Tq, int NHq) {
  RowIndex r;
  r.h = static_cast<int>(row % NHq);
  const int64_t bt = row / NHq;
  r.t = static_cast<int>(bt % Tq);
  r.b = static_cast<int>(bt / Tq);
  return r;
}

// HD / 8 consecutive threads per row, each owning one 16-byte chunk.
template <int HD>
__global__ void attention_bwd_preprocess_kernel(const KernelParams p, int64_t rows) {
  constexpr int kChunks = HD / 8;
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = gid / kChunks;
  const int c = static_cast<int>(gid % kChunks);
  float acc = 0.f;
  RowIndex r{0, 0, 0};
  if (row < rows) {
    r = row_index(row, p.Tq, p.NHq);
    const int64_t off = r.b * p.so.b + r.t * p.so.t + r.h * p.so.h + c * 8;
    const dev::Pack<bf16> d = dev::load_pack(p.dout + off), o = dev::load_pack(p.o + off);
#pragma unroll
    for (int i = 0; i < 8; ++i)
      acc = fmaf(dev::to_float(d.v[i]), dev::to_float(o.v[i]), acc);
    if (p.dq_accum) {
      float4* z = reinterpret_cast<float4*>(
          p.dq_accum + ((static_cast<int64_t>(r.b) * p.NHq + r.h) * p.Tq + r.t) * HD + c * 8);
      z[0] = make_float4(0.f, 0.f, 0.f, 0.f);
      z[1] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
#pragma unroll
  for (int off = kChunks / 2; off > 0; off >>= 1)
    acc += __shfl_xor_sync(dev::kFullMask, acc, off);
  if (row < rows && c == 0)
    p.dsum_out[(static_cast<int64_t>(r.b) * p.NHq + r.h) * p.Tq + r.t] = acc;
}

template <int HD>
__global__ void attention_bwd_convert_dq_kernel(const KernelParams p, int64_t rows) {
  constexpr int kChunks = HD / 8;
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = gid / kChunks;
  const int c = static_cast<int>(gid % kChunks);
  if (row >= rows) return;
  const RowIndex r = row_index(row, p.Tq, p.NHq);
  const float4* src = reinterpret_cast<const float4*>(
      p.dq_accum + ((static_cast<int64_t>(r.b) * p.NHq + r.h) * p.Tq + r.t) * HD + c * 8);
  const float4 x = src[0], y = src[1];
  dev::Pack<bf16> out;
  const float v[8] = {x.x, x.y, x.z, x.w, y.x, y.y, y.z, y.w};
#pragma unroll
  for (int i = 0; i < 8; ++i)
    out.v[i] = dev::from_float<bf16>(v[i] * p.scale);
  dev::store_pack(p.dq + r.b * p.sq.b + r.t * p.sq.t + r.h * p.sq.h + c * 8, out);
}

constexpr int kDqThreads = 128;
constexpr int kDqBr = 64;  // query rows per CTA: 4 warps x 16
constexpr int kDqBc = 64;  // keys per block

template <int HD>
constexpr int dq_smem_bytes() {
  return (2 * kDqBr * HD + 4 * kDqBc * HD) * 2;  // Q, dO; K, V x 2 stages
}

template <int HD>
__global__ void __launch_bounds__(kDqThreads, 2) attention_bwd_dq_kernel(const KernelParams p) {
  constexpr int kBr = kDqBr, kBc = kDqBc;
  constexpr int kNT = kBc / 8, kDT = HD / 8;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);  // (kBr, HD), later dQ's staging
  bf16* sdO = sQ + kBr * HD;                 // (kBr, HD)
  bf16* sK = sdO + kBr * HD;                 // 2 x (kBc, HD)
  bf16* sV = sK + 2 * kBc * HD;              // 2 x (kBc, HD)

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int m_block = p.causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / p.group;
  const int q0 = m_block * kBr;
  const int diag = p.Tk - p.Tq;
  int n_blocks = (p.Tk + kBc - 1) / kBc;
  if (p.causal) {
    const int last_key = min(p.Tk - 1, q0 + kBr - 1 + diag);
    n_blocks = last_key < 0 ? 0 : last_key / kBc + 1;
  }
  const std::uint32_t q_addr = dev::smem_addr(sQ), do_addr = dev::smem_addr(sdO),
                      k_addr = dev::smem_addr(sK), v_addr = dev::smem_addr(sV);
  constexpr std::uint32_t kStageBytes = kBc * HD * 2;
  const bf16* gk = p.k + b * p.sk.b + hk * p.sk.h;
  const bf16* gv = p.v + b * p.sv.b + hk * p.sv.h;

  load_tile<kBr, HD, kDqThreads>(q_addr, p.q + b * p.sq.b + q0 * p.sq.t + h * p.sq.h, p.sq.t,
                                 p.Tq - q0, tid);
  load_tile<kBr, HD, kDqThreads>(do_addr, p.dout + b * p.so.b + q0 * p.so.t + h * p.so.h, p.so.t,
                                 p.Tq - q0, tid);
  if (n_blocks > 0) {
    load_tile<kBc, HD, kDqThreads>(k_addr, gk, p.sk.t, p.Tk, tid);
    load_tile<kBc, HD, kDqThreads>(v_addr, gv, p.sv.t, p.Tk, tid);
  }
  dev::cp_async_commit();

  // This thread's two rows: LSE in the exp2 domain (+inf for rows past Tq or seeing no key, so
  // their P is 0) and D.
  const int warp_row = warp * 16;
  float lse2[2], dsum[2];
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int row = q0 + warp_row + (lane >> 2) + hr * 8;
    lse2[hr] = INFINITY;
    dsum[hr] = 0.f;
    if (row < p.Tq) {
      const int64_t i = (static_cast<int64_t>(b) * p.NHq + h) * p.Tq + row;
      const float l = p.lse[i];
      lse2[hr] = l == -INFINITY ? INFINITY : l * kLog2e;
      dsum[hr] = p.dsum[i];
    }
  }

  float dq[kDT][4];
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      dq[dt][e] = 0.f;
  const LaneOffsets<HD> lq = lanes_a<HD>(lane, warp_row);  // Q, dO rows as A
  const LaneOffsets<HD> lkn = lanes_bn<HD>(lane);          // K, V as n-major B (S, dP)
  const LaneOffsets<HD> lkk = lanes_bk<HD>(lane);          // K as k-major B (dQ)

  for (int n = 0; n < n_blocks; ++n) {
    const int stage = n & 1, n0 = n * kBc;
    if (n + 1 < n_blocks) {
      const int n1 = n0 + kBc;
      load_tile<kBc, HD, kDqThreads>(k_addr + (stage ^ 1) * kStageBytes, gk + n1 * p.sk.t, p.sk.t,
                                     p.Tk - n1, tid);
      load_tile<kBc, HD, kDqThreads>(v_addr + (stage ^ 1) * kStageBytes, gv + n1 * p.sv.t, p.sv.t,
                                     p.Tk - n1, tid);
    }
    dev::cp_async_commit();
    dev::cp_async_wait<1>();
    __syncthreads();  // K[n], V[n] (and Q, dO) visible
    const std::uint32_t ck = k_addr + stage * kStageBytes, cv = v_addr + stage * kStageBytes;

    float s[kNT][4], dp[kNT][4];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = 0.f;
        dp[nt][e] = 0.f;
      }
#pragma unroll 1
    for (int k64 = 0; k64 < HD / 64; ++k64) {
      const std::uint32_t span = k64 * 128;
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        std::uint32_t aq[4], ao[4];
        ldsm_x4(aq, q_addr + span + lq.at(0, kk * 2));
        ldsm_x4(ao, do_addr + span + lq.at(0, kk * 2));
#pragma unroll
        for (int np = 0; np < kNT / 2; ++np) {
          std::uint32_t bk[4], bv[4];
          ldsm_x4(bk, ck + span + lkn.at(np * 16, kk * 2));
          ldsm_x4(bv, cv + span + lkn.at(np * 16, kk * 2));
          const std::uint32_t k0f[2] = {bk[0], bk[1]}, k1f[2] = {bk[2], bk[3]};
          const std::uint32_t v0f[2] = {bv[0], bv[1]}, v1f[2] = {bv[2], bv[3]};
          dev::mma_m16n8k16_bf16(s[2 * np], aq, k0f);
          dev::mma_m16n8k16_bf16(s[2 * np + 1], aq, k1f);
          dev::mma_m16n8k16_bf16(dp[2 * np], ao, v0f);
          dev::mma_m16n8k16_bf16(dp[2 * np + 1], ao, v1f);
        }
      }
    }

    const bool need_mask = n0 + kBc > p.Tk || (p.causal && n0 + kBc - 1 > q0 + diag);
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int hr = e >> 1;
        float pv = exp2_approx(fmaf(s[nt][e], p.scale_log2, -lse2[hr]));
        if (need_mask) {
          const int row = q0 + warp_row + (lane >> 2) + hr * 8;
          const int col = n0 + nt * 8 + (lane & 3) * 2 + (e & 1);
          if (col >= p.Tk || (p.causal && col > row + diag)) pv = 0.f;
        }
        dp[nt][e] = pv * (dp[nt][e] - dsum[hr]);  // dS (unscaled)
      }
    std::uint32_t dsa[kBc / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk)
      pack_a(dsa[kk], dp[2 * kk], dp[2 * kk + 1]);

      // dQ += dS K.
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk)
#pragma unroll
      for (int d2 = 0; d2 < HD / 16; ++d2) {
        std::uint32_t bk[4];
        ldsm_x4_t(bk, ck + lkk.at(kk * 16, d2 * 2));
        const std::uint32_t b0[2] = {bk[0], bk[1]}, b1[2] = {bk[2], bk[3]};
        dev::mma_m16n8k16_bf16(dq[2 * d2], dsa[kk], b0);
        dev::mma_m16n8k16_bf16(dq[2 * d2 + 1], dsa[kk], b1);
      }
    __syncthreads();  // every warp is done with this stage before it is refilled
  }
  dev::cp_async_wait<0>();
  __syncthreads();

  // dQ (scaled) staged as bf16 in this warp's own rows of sQ, stored in 16-byte rows.
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int local = warp_row + (lane >> 2) + hr * 8;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
      *reinterpret_cast<std::uint32_t*>(sQ + swz<HD>(local, dt * 8 + (lane & 3) * 2)) =
          dev::pack_bf16x2(dq[dt][2 * hr] * p.scale, dq[dt][2 * hr + 1] * p.scale);
  }
  __syncwarp();
  constexpr int kChunksPerRow = HD / 8, kRowsPerPass = 32 / kChunksPerRow;
  const int lrow = lane / kChunksPerRow, lcol = (lane % kChunksPerRow) * 8;
  const int row0 = q0 + warp_row + lrow;
  bf16* gdq = p.dq + b * p.sq.b + row0 * p.sq.t + h * p.sq.h + lcol;
#pragma unroll
  for (int i = 0; i < 16 / kRowsPerPass; ++i)
    if (row0 + i * kRowsPerPass < p.Tq)
      dev::store_pack(gdq + i * kRowsPerPass * p.sq.t,
                      dev::load_pack(sQ + swz<HD>(warp_row + lrow + i * kRowsPerPass, lcol)));
}

template <int HD>
void launch_dq(const KernelParams& p, int B, cudaStream_t stream) {
  constexpr int smem = dq_smem_bytes<HD>();
  KILN_CUDA_CHECK(cudaFuncSetAttribute(attention_bwd_dq_kernel<HD>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid((p.Tq + kDqBr - 1) / kDqBr, p.NHq, B);
  attention_bwd_dq_kernel<HD><<<grid, kDqThreads, smem, stream>>>(p);
  KILN_LAUNCH_CHECK(stream);
}

KernelParams row_params(const impl::AttnBwdArgs& a) {
  KernelParams p = make_params(a.s);
  p.o = a.o;
  p.dout = a.dout;
  p.dq = a.dq;
  return p;
}

constexpr int kRowThreads = 256;

}  // namespace

void launch_bwd_dq(const KernelParams& p, int HD, int B, cudaStream_t stream) {
  if (HD == 64)
    launch_dq<64>(p, B, stream);
  else
    launch_dq<128>(p, B, stream);
}

}  // namespace kiln::attn

namespace kiln::impl {

void attention_bwd_preprocess(const AttnBwdArgs& a, float* dsum, float* dq_accum,
                              cudaStream_t stream) {
  attn::KernelParams p = attn::row_params(a);
  p.dsum_out = dsum;
  p.dq_accum = dq_accum;
  const int64_t rows = static_cast<int64_t>(a.s.B) * a.s.Tq * a.s.NHq;
  const int64_t threads = rows * (a.s.HD / 8);
  const unsigned blocks =
      static_cast<unsigned>((threads + attn::kRowThreads - 1) / attn::kRowThreads);
  if (a.s.HD == 64)
    attn::attention_bwd_preprocess_kernel<64><<<blocks, attn::kRowThreads, 0, stream>>>(p, rows);
  else
    attn::attention_bwd_preprocess_kernel<128><<<blocks, attn::kRowThreads, 0, stream>>>(p, rows);
  KILN_LAUNCH_CHECK(stream);
}

void attention_bwd_convert_dq(const AttnBwdArgs& a, const float* dq_accum, cudaStream_t stream) {
  attn::KernelParams p = attn::row_params(a);
  p.dq_accum = const_cast<float*>(dq_accum);
  const int64_t rows = static_cast<int64_t>(a.s.B) * a.s.Tq * a.s.NHq;
  const int64_t threads = rows * (a.s.HD / 8);
  const unsigned blocks =
      static_cast<unsigned>((threads + attn::kRowThreads - 1) / attn::kRowThreads);
  if (a.s.HD == 64)
    attn::attention_bwd_convert_dq_kernel<64><<<blocks, attn::kRowThreads, 0, stream>>>(p, rows);
  else
    attn::attention_bwd_convert_dq_kernel<128><<<blocks, attn::kRowThreads, 0, stream>>>(p, rows);
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl
