// Attention backward for sm_80+ (FlashAttention-2 class), the dK/dV pass: one CTA of 4 warps per
// 64 keys of one (batch, K/V head); each warp owns 16 keys and keeps their dK and dV in fp32
// registers while the CTA streams every (query head of the group, query block) through shared
// memory (Q, dO, LSE and D double-buffered with cp.async). Per query block, with mma.sync:
//   S^T = K Q^T, dP^T = V dO^T, P^T = exp2(S^T * scale log2 e - LSE log2 e), dS^T = P^T (dP^T - D)
//   dV += P^T dO, dK += dS^T Q                            (P^T, dS^T straight from registers)
//   dQ += dS K (fp32 atomics, non-deterministic mode only; dS goes through shared memory)
// Looping over the query heads of a GQA group inside the CTA sums their dK/dV contributions in a
// fixed order, so dK and dV are deterministic and need no workspace.
#include "errors/check.hpp"
#include "kernels/attention/attention_sm80.cuh"

namespace kiln::attn {
namespace {

constexpr int kBwdThreads = 128;
constexpr int kBwdBc = 64;  // keys per CTA: 4 warps x 16
constexpr int kBwdBr = 64;  // queries per step

template <int HD>
constexpr int bwd_smem_bytes() {
  // K, V; Q, dO x 2 stages; dS^T; LSE, D x 2 stages.
  return (2 * kBwdBc * HD + 4 * kBwdBr * HD + kBwdBc * kBwdBr) * 2 + 4 * kBwdBr * 4;
}

// acc (16 rows x kNT n8 tiles) = A B^T over HD: A is this warp's 16 rows of a row-major (., HD)
// tile at `a_addr` (lanes `la`), B the rows of an n-major (., HD) tile at `b_addr` (lanes `lb`).
template <int HD, int kNT>
__device__ __forceinline__ void product_t(float (&acc)[kNT][4], std::uint32_t a_addr,
                                          std::uint32_t b_addr, const LaneOffsets<HD>& la,
                                          const LaneOffsets<HD>& lb) {
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      acc[nt][e] = 0.f;
#pragma unroll 1
  for (int k64 = 0; k64 < HD / 64; ++k64) {
    const std::uint32_t span = k64 * 128;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      std::uint32_t a[4];
      ldsm_x4(a, a_addr + span + la.at(0, kk * 2));
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        std::uint32_t bf[4];
        ldsm_x4(bf, b_addr + span + lb.at(np * 16, kk * 2));
        const std::uint32_t b0[2] = {bf[0], bf[1]}, b1[2] = {bf[2], bf[3]};
        dev::mma_m16n8k16_bf16(acc[2 * np], a, b0);
        dev::mma_m16n8k16_bf16(acc[2 * np + 1], a, b1);
      }
    }
  }
}

template <int HD, bool kAtomicDq>
__global__ void __launch_bounds__(kBwdThreads, 2) attention_bwd_dkdv_kernel(const KernelParams p) {
  constexpr int kBc = kBwdBc, kBr = kBwdBr;
  constexpr int kNT = kBr / 8;  // n8 tiles of S^T (queries)
  constexpr int kDT = HD / 8;   // n8 tiles of dK, dV, dQ
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);               // (kBc, HD)
  bf16* sV = sK + kBc * HD;                               // (kBc, HD)
  bf16* sQ = sV + kBc * HD;                               // 2 x (kBr, HD)
  bf16* sdO = sQ + 2 * kBr * HD;                          // 2 x (kBr, HD)
  bf16* sdS = sdO + 2 * kBr * HD;                         // (kBc, kBr): dS^T, keys x queries
  float* sL = reinterpret_cast<float*>(sdS + kBc * kBr);  // 2 x kBr: LSE (natural log)
  float* sD = sL + 2 * kBr;                               // 2 x kBr: D

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int n_block = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int n0 = n_block * kBc;
  const int diag = p.Tk - p.Tq;  // causal: query i sees keys j <= i + diag
  const int m_blocks = (p.Tq + kBr - 1) / kBr;
  // Causal: the first query that sees key n0 is n0 - diag; earlier query blocks are skipped.
  int m_begin = 0;
  if (p.causal) m_begin = n0 - diag <= 0 ? 0 : min(m_blocks, (n0 - diag) / kBr);
  const int steps_per_head = m_blocks - m_begin;
  const int steps = steps_per_head * p.group;

  const std::uint32_t k_addr = dev::smem_addr(sK), v_addr = dev::smem_addr(sV),
                      q_addr = dev::smem_addr(sQ), do_addr = dev::smem_addr(sdO),
                      ds_addr = dev::smem_addr(sdS);
  constexpr std::uint32_t kStageBytes = kBr * HD * 2;

  load_tile<kBc, HD, kBwdThreads>(k_addr, p.k + b * p.sk.b + n0 * p.sk.t + hk * p.sk.h, p.sk.t,
                                  p.Tk - n0, tid);
  load_tile<kBc, HD, kBwdThreads>(v_addr, p.v + b * p.sv.b + n0 * p.sv.t + hk * p.sv.h, p.sv.t,
                                  p.Tk - n0, tid);
  // Step `step` is query block m_begin + step % steps_per_head of query head
  // hk * group + step / steps_per_head.
  const auto issue = [&](int step, int stage) {
    const int h = hk * p.group + step / steps_per_head;
    const int q0 = (m_begin + step % steps_per_head) * kBr;
    load_tile<kBr, HD, kBwdThreads>(q_addr + stage * kStageBytes,
                                    p.q + b * p.sq.b + q0 * p.sq.t + h * p.sq.h, p.sq.t, p.Tq - q0,
                                    tid);
    load_tile<kBr, HD, kBwdThreads>(do_addr + stage * kStageBytes,
                                    p.dout + b * p.so.b + q0 * p.so.t + h * p.so.h, p.so.t,
                                    p.Tq - q0, tid);
    // Threads 0-63 copy LSE, 64-127 D (rows past Tq are zero-filled and masked).
    const int r = tid % kBr;
    const int64_t row = (static_cast<int64_t>(b) * p.NHq + h) * p.Tq + q0 + r;
    const bool valid = q0 + r < p.Tq;
    const float* base = tid < kBr ? p.lse : p.dsum;
    float* dst = (tid < kBr ? sL : sD) + stage * kBr + r;
    cp_async_4(dst, valid ? base + row : base, valid);
  };
  if (steps > 0) issue(0, 0);
  dev::cp_async_commit();

  float dk[kDT][4], dv[kDT][4];
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      dk[dt][e] = 0.f;
      dv[dt][e] = 0.f;
    }
  const int warp_key = warp * 16;
  const LaneOffsets<HD> lkv = lanes_a<HD>(lane, warp_key);  // K, V rows as the A operand
  const LaneOffsets<HD> lqn = lanes_bn<HD>(lane);           // Q, dO as n-major B (S^T, dP^T)
  const LaneOffsets<HD> lqk = lanes_bk<HD>(lane);           // Q, dO as k-major B (dK, dV)
  // dS^T as the k-major A operand of dQ: this warp's 16 queries are a fixed chunk pair, so only
  // the key row advances.
  const std::uint32_t ds_lane = ds_addr + lane_at_fixed_m<kBr>(lane, warp);
  const LaneOffsets<HD> lkk = lanes_bk<HD>(lane);  // K as k-major B (dQ)

  for (int step = 0; step < steps; ++step) {
    const int stage = step & 1;
    if (step + 1 < steps) issue(step + 1, stage ^ 1);
    dev::cp_async_commit();
    dev::cp_async_wait<1>();
    __syncthreads();  // this step's Q, dO, LSE, D (and K, V) are visible

    const int h = hk * p.group + step / steps_per_head;
    const int q0 = (m_begin + step % steps_per_head) * kBr;
    const std::uint32_t cq = q_addr + stage * kStageBytes, cdo = do_addr + stage * kStageBytes;

    // S^T = K Q^T, then P^T (to bf16 at once), then dP^T = V dO^T and dS^T: one product's
    // accumulators live at a time, beside dK and dV.
    const bool need_mask =
        q0 + kBr > p.Tq || n0 + kBc > p.Tk || (p.causal && n0 + kBc - 1 > q0 + diag);
    float pt[kNT][4];
    product_t<HD, kNT>(pt, k_addr, cq, lkv, lqn);
    // A row with no visible key has LSE -inf: +inf makes its P 0.
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ql = nt * 8 + (lane & 3) * 2 + (e & 1);
        const float lse = sL[stage * kBr + ql];
        const float lse2 = lse == -INFINITY ? INFINITY : lse * kLog2e;
        float pv = exp2_approx(fmaf(pt[nt][e], p.scale_log2, -lse2));
        if (need_mask) {
          const int key = n0 + warp_key + (lane >> 2) + (e >> 1) * 8, qrow = q0 + ql;
          if (qrow >= p.Tq || key >= p.Tk || (p.causal && key > qrow + diag)) pv = 0.f;
        }
        pt[nt][e] = pv;
      }
    std::uint32_t pa[kBr / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBr / 16; ++kk)
      pack_a(pa[kk], pt[2 * kk], pt[2 * kk + 1]);

    float dpt[kNT][4];
    product_t<HD, kNT>(dpt, v_addr, cdo, lkv, lqn);
    std::uint32_t dsa[kBr / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBr / 16; ++kk) {
      // P^T back from bf16: dS^T = P^T (dP^T - D) with the P the dV product uses.
      float ds[2][4];
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int nt = 2 * kk + half;
          const int ql = nt * 8 + (lane & 3) * 2 + (e & 1);
          const float pv = unpack_bf16(pa[kk][half * 2 + (e >> 1)], e & 1);
          ds[half][e] = pv * (dpt[nt][e] - sD[stage * kBr + ql]);
        }
      pack_a(dsa[kk], ds[0], ds[1]);
    }
    if constexpr (kAtomicDq) {
      // dS^T to shared memory (keys x queries) for the dQ product across the CTA's keys.
#pragma unroll
      for (int kk = 0; kk < kBr / 16; ++kk)
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
          for (int hr = 0; hr < 2; ++hr)
            *reinterpret_cast<std::uint32_t*>(sdS + swz<kBr>(warp_key + (lane >> 2) + hr * 8,
                                                             kk * 16 + half * 8 + (lane & 3) * 2)) =
                dsa[kk][half * 2 + hr];
    }

    // dV += P^T dO, dK += dS^T Q.
#pragma unroll
    for (int kk = 0; kk < kBr / 16; ++kk)
#pragma unroll
      for (int dp = 0; dp < HD / 16; ++dp) {
        std::uint32_t bo[4], bq[4];
        ldsm_x4_t(bo, cdo + lqk.at(kk * 16, dp * 2));
        ldsm_x4_t(bq, cq + lqk.at(kk * 16, dp * 2));
        const std::uint32_t o0f[2] = {bo[0], bo[1]}, o1f[2] = {bo[2], bo[3]};
        const std::uint32_t q0f[2] = {bq[0], bq[1]}, q1f[2] = {bq[2], bq[3]};
        dev::mma_m16n8k16_bf16(dv[2 * dp], pa[kk], o0f);
        dev::mma_m16n8k16_bf16(dv[2 * dp + 1], pa[kk], o1f);
        dev::mma_m16n8k16_bf16(dk[2 * dp], dsa[kk], q0f);
        dev::mma_m16n8k16_bf16(dk[2 * dp + 1], dsa[kk], q1f);
      }

    if constexpr (kAtomicDq) {
      __syncthreads();  // dS^T complete
      // dQ rows warp*16.. of this query block: dS (queries x keys) K (keys x HD).
      float dq[kDT][4];
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          dq[dt][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk) {
        std::uint32_t a[4];
        ldsm_x4_t(a, ds_lane + kk * 16 * kBr * 2);
#pragma unroll
        for (int dp = 0; dp < HD / 16; ++dp) {
          std::uint32_t bk[4];
          ldsm_x4_t(bk, k_addr + lkk.at(kk * 16, dp * 2));
          const std::uint32_t b0[2] = {bk[0], bk[1]}, b1[2] = {bk[2], bk[3]};
          dev::mma_m16n8k16_bf16(dq[2 * dp], a, b0);
          dev::mma_m16n8k16_bf16(dq[2 * dp + 1], a, b1);
        }
      }
      float* gdq = p.dq_accum + ((static_cast<int64_t>(b) * p.NHq + h) * p.Tq) * HD;
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int row = q0 + warp * 16 + (lane >> 2) + hr * 8;
        if (row < p.Tq) {
#pragma unroll
          for (int dt = 0; dt < kDT; ++dt) {
            float* dst = gdq + static_cast<int64_t>(row) * HD + dt * 8 + (lane & 3) * 2;
            atomicAdd(dst, dq[dt][2 * hr]);
            atomicAdd(dst + 1, dq[dt][2 * hr + 1]);
          }
        }
      }
    }
    __syncthreads();  // every warp is done with this stage and dS^T before they are rewritten
  }
  dev::cp_async_wait<0>();  // with no step, K and V may still be in flight
  __syncthreads();

  // dK (scaled), dV: staged as bf16 in this warp's own rows of sK / sV, stored in 16-byte rows.
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int local = warp_key + (lane >> 2) + hr * 8;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      const int col = dt * 8 + (lane & 3) * 2;
      *reinterpret_cast<std::uint32_t*>(sK + swz<HD>(local, col)) =
          dev::pack_bf16x2(dk[dt][2 * hr] * p.scale, dk[dt][2 * hr + 1] * p.scale);
      *reinterpret_cast<std::uint32_t*>(sV + swz<HD>(local, col)) =
          dev::pack_bf16x2(dv[dt][2 * hr], dv[dt][2 * hr + 1]);
    }
  }
  __syncwarp();
  constexpr int kChunksPerRow = HD / 8, kRowsPerPass = 32 / kChunksPerRow;
  const int lrow = lane / kChunksPerRow, lcol = (lane % kChunksPerRow) * 8;
  const int key0 = n0 + warp_key + lrow;
  bf16* gdk = p.dk + b * p.sk.b + key0 * p.sk.t + hk * p.sk.h + lcol;
  bf16* gdv = p.dv + b * p.sv.b + key0 * p.sv.t + hk * p.sv.h + lcol;
#pragma unroll
  for (int i = 0; i < 16 / kRowsPerPass; ++i) {
    if (key0 + i * kRowsPerPass < p.Tk) {
      // Rows 2 or 4 apart: less than the swizzle period, so each pass has its own offset.
      const int s_off = swz<HD>(warp_key + lrow + i * kRowsPerPass, lcol);
      dev::store_pack(gdk + i * kRowsPerPass * p.sk.t, dev::load_pack(sK + s_off));
      dev::store_pack(gdv + i * kRowsPerPass * p.sv.t, dev::load_pack(sV + s_off));
    }
  }
}

template <int HD, bool kAtomicDq>
void launch_dkdv(const KernelParams& p, int NHkv, int B, cudaStream_t stream) {
  constexpr int smem = bwd_smem_bytes<HD>();
  KILN_CUDA_CHECK(cudaFuncSetAttribute(attention_bwd_dkdv_kernel<HD, kAtomicDq>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid((p.Tk + kBwdBc - 1) / kBwdBc, NHkv, B);
  attention_bwd_dkdv_kernel<HD, kAtomicDq><<<grid, kBwdThreads, smem, stream>>>(p);
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace
}  // namespace kiln::attn

namespace kiln::impl {

std::size_t attention_bwd_sm80_workspace(const AttnShape& s) {
  const std::size_t rows = static_cast<std::size_t>(s.B) * s.NHq * s.Tq;
  std::size_t bytes = attn_align(rows * sizeof(float));                    // D
  if (!s.deterministic) bytes += attn_align(rows * s.HD * sizeof(float));  // dQ accumulator
  return bytes;
}

void attention_bwd_sm80(const AttnBwdArgs& a, void* workspace, cudaStream_t stream) {
  const AttnShape& s = a.s;
  const std::size_t rows = static_cast<std::size_t>(s.B) * s.NHq * s.Tq;
  float* dsum = static_cast<float*>(workspace);
  float* dq_accum = s.deterministic ? nullptr
                                    : reinterpret_cast<float*>(static_cast<char*>(workspace) +
                                                               attn_align(rows * sizeof(float)));
  // Tq == 0: no query, so dK = dV = 0 (the dK/dV pass writes them) and dQ is empty.
  if (s.Tq > 0) attention_bwd_preprocess(a, dsum, dq_accum, stream);

  attn::KernelParams p = attn::make_params(s);
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
  if (s.deterministic) {
    if (s.HD == 64)
      attn::launch_dkdv<64, false>(p, s.NHkv, s.B, stream);
    else
      attn::launch_dkdv<128, false>(p, s.NHkv, s.B, stream);
    if (s.Tq > 0) attn::launch_bwd_dq(p, s.HD, s.B, stream);
  } else {
    if (s.HD == 64)
      attn::launch_dkdv<64, true>(p, s.NHkv, s.B, stream);
    else
      attn::launch_dkdv<128, true>(p, s.NHkv, s.B, stream);
    if (s.Tq > 0) attention_bwd_convert_dq(a, dq_accum, stream);
  }
}

}  // namespace kiln::impl
