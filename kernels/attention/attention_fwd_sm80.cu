// Attention forward for sm_80+ (FlashAttention-2 class): one CTA of 4 warps per 128 query rows of
// one (batch, head); each warp owns 32 rows (two m16 tiles) and streams the key/value blocks
// through shared memory with cp.async, computing S = Q K^T and O += P V with mma.sync m16n8k16
// (bf16 in, fp32 accumulate) and an online softmax in the exp2 domain with the scale folded in.
//
// Pipeline (one K and one V buffer, as FlashAttention-2): V[n] loads while S = Q K[n]^T and the
// softmax run; K[n-1] loads while O += P V[n] runs. Key blocks are visited from the last to the
// first, so the blocks that need masking (the ragged end of the keys, the causal diagonal) come
// first and the rest run unmasked; causal blocks entirely above the diagonal are never visited.
#include "errors/check.hpp"
#include "kernels/attention/attention_sm80.cuh"

namespace kiln::attn {
namespace {

constexpr int kFwdThreads = 128;
constexpr int kFwdBr = 128;  // query rows per CTA: 4 warps x 32

// Key block: 64 for HD 128 (S 64 + O 128 fp32 registers per thread), 128 for HD 64 (S 128 + O 64).
template <int HD>
constexpr int fwd_bc() {
  return HD == 128 ? 64 : 128;
}

template <int HD>
constexpr int fwd_smem_bytes() {
  return (kFwdBr + 2 * fwd_bc<HD>()) * HD * static_cast<int>(sizeof(bf16));
}

template <int HD>
__global__ void __launch_bounds__(kFwdThreads, 2) attention_fwd_kernel(const KernelParams p) {
  constexpr int kBr = kFwdBr, kBc = fwd_bc<HD>();
  constexpr int kMT = 2;        // m16 tiles per warp
  constexpr int kNT = kBc / 8;  // n8 tiles of S
  constexpr int kDT = HD / 8;   // n8 tiles of O
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);  // (kBr, HD), later O's staging
  bf16* sK = sQ + kBr * HD;                  // (kBc, HD)
  bf16* sV = sK + kBc * HD;                  // (kBc, HD)

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const std::uint32_t q_addr = dev::smem_addr(sQ), k_addr = dev::smem_addr(sK),
                      v_addr = dev::smem_addr(sV);
  // Causal: the last query blocks see the most keys; start them first.
  const int m_block = p.causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / p.group;
  const int m0 = m_block * kBr;
  const int diag = p.Tk - p.Tq;  // causal: query i sees keys j <= i + diag

  int n_blocks = (p.Tk + kBc - 1) / kBc;
  if (p.causal) {
    const int last_key = min(p.Tk - 1, m0 + kBr - 1 + diag);
    n_blocks = last_key < 0 ? 0 : last_key / kBc + 1;
  }

  const bf16* gq = p.q + b * p.sq.b + m0 * p.sq.t + h * p.sq.h;
  const bf16* gk = p.k + b * p.sk.b + hk * p.sk.h;
  const bf16* gv = p.v + b * p.sv.b + hk * p.sv.h;

  load_tile<kBr, HD, kFwdThreads>(q_addr, gq, p.sq.t, p.Tq - m0, tid);
  if (n_blocks > 0) {
    const int n0 = (n_blocks - 1) * kBc;
    load_tile<kBc, HD, kFwdThreads>(k_addr, gk + n0 * p.sk.t, p.sk.t, p.Tk - n0, tid);
  }
  dev::cp_async_commit();

  float o[kMT][kDT][4];
  float row_max[kMT][2], row_sum[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        o[mt][dt][e] = 0.f;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      row_max[mt][hr] = -INFINITY;
      row_sum[mt][hr] = 0.f;
    }
  }
  const int warp_row = warp * kMT * 16;  // first row of this warp in the tile
  const LaneOffsets<HD> lq = lanes_a<HD>(lane, warp_row), lk = lanes_bn<HD>(lane),
                        lv = lanes_bk<HD>(lane);

  for (int n = n_blocks - 1; n >= 0; --n) {
    const int n0 = n * kBc;
    dev::cp_async_wait<0>();
    __syncthreads();  // K[n] (and Q) visible; every warp is done with V[n+1]
    load_tile<kBc, HD, kFwdThreads>(v_addr, gv + n0 * p.sv.t, p.sv.t, p.Tk - n0, tid);
    dev::cp_async_commit();

    float s[kMT][kNT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          s[mt][nt][e] = 0.f;
          // The k loop is unrolled by 4 (one 64-column span of the swizzle pattern) only, so the
          // compiler does not hoist every fragment load of the whole product into registers.
#pragma unroll 1
    for (int k64 = 0; k64 < HD / 64; ++k64) {
      const std::uint32_t span = k64 * 128;  // bytes: 64 columns
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        std::uint32_t a[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
          ldsm_x4(a[mt], q_addr + span + lq.at(mt * 16, kk * 2));
#pragma unroll
        for (int np = 0; np < kNT / 2; ++np) {
          std::uint32_t bk[4];
          ldsm_x4(bk, k_addr + span + lk.at(np * 16, kk * 2));
          const std::uint32_t b0[2] = {bk[0], bk[1]}, b1[2] = {bk[2], bk[3]};
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            dev::mma_m16n8k16_bf16(s[mt][2 * np], a[mt], b0);
            dev::mma_m16n8k16_bf16(s[mt][2 * np + 1], a[mt], b1);
          }
        }
      }
    }

    // Mask the keys past Tk and, causal, the keys after each row's last visible one.
    if (n0 + kBc > p.Tk || (p.causal && n0 + kBc - 1 > m0 + diag)) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = m0 + warp_row + mt * 16 + (lane >> 2) + (e >> 1) * 8;
            const int col = n0 + nt * 8 + (lane & 3) * 2 + (e & 1);
            if (col >= p.Tk || (p.causal && col > row + diag)) s[mt][nt][e] = -INFINITY;
          }
    }

    // Online softmax. A row whose keys are all masked so far has max -inf: it is offset by 0
    // instead, so exp2 gives 0 rather than NaN.
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        float mx = row_max[mt][hr];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
          mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hr], s[mt][nt][2 * hr + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(dev::kFullMask, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(dev::kFullMask, mx, 2));
        const float offset = mx == -INFINITY ? 0.f : mx * p.scale_log2;
        const float correction = exp2_approx(row_max[mt][hr] * p.scale_log2 - offset);
        row_max[mt][hr] = mx;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 2 * hr; e < 2 * hr + 2; ++e) {
            s[mt][nt][e] = exp2_approx(fmaf(s[mt][nt][e], p.scale_log2, -offset));
            sum += s[mt][nt][e];
          }
        row_sum[mt][hr] = row_sum[mt][hr] * correction + sum;  // per-thread partial
#pragma unroll
        for (int dt = 0; dt < kDT; ++dt) {
          o[mt][dt][2 * hr] *= correction;
          o[mt][dt][2 * hr + 1] *= correction;
        }
      }

    // P in bf16, already in A-operand order: half the registers of S while V arrives.
    std::uint32_t pa[kMT][kBc / 16][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk)
        pack_a(pa[mt][kk], s[mt][2 * kk], s[mt][2 * kk + 1]);

    dev::cp_async_wait<0>();
    __syncthreads();  // V[n] visible; every warp is done with K[n]
    if (n > 0) {
      const int n_prev = n0 - kBc;
      load_tile<kBc, HD, kFwdThreads>(k_addr, gk + n_prev * p.sk.t, p.sk.t, p.Tk - n_prev, tid);
    }
    dev::cp_async_commit();

    // O += P V.
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
#pragma unroll
      for (int dp = 0; dp < HD / 16; ++dp) {
        std::uint32_t bv[4];
        ldsm_x4_t(bv, v_addr + lv.at(kk * 16, dp * 2));
        const std::uint32_t b0[2] = {bv[0], bv[1]}, b1[2] = {bv[2], bv[3]};
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          dev::mma_m16n8k16_bf16(o[mt][2 * dp], pa[mt][kk], b0);
          dev::mma_m16n8k16_bf16(o[mt][2 * dp + 1], pa[mt][kk], b1);
        }
      }
    }
  }
  // With no key block (causal rows before the first key) Q's copies may still be in flight.
  dev::cp_async_wait<0>();
  __syncthreads();

  // Normalise, write LSE, stage O (bf16) in this warp's own rows of sQ, then store 16-byte rows.
  float* lse = p.lse_out + (static_cast<int64_t>(b) * p.NHq + h) * p.Tq;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float sum = row_sum[mt][hr];
      sum += __shfl_xor_sync(dev::kFullMask, sum, 1);
      sum += __shfl_xor_sync(dev::kFullMask, sum, 2);
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int local = warp_row + mt * 16 + (lane >> 2) + hr * 8;
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt)
        *reinterpret_cast<std::uint32_t*>(sQ + swz<HD>(local, dt * 8 + (lane & 3) * 2)) =
            dev::pack_bf16x2(o[mt][dt][2 * hr] * inv, o[mt][dt][2 * hr + 1] * inv);
      const int row = m0 + local;
      if ((lane & 3) == 0 && row < p.Tq)
        lse[row] = sum > 0.f ? (row_max[mt][hr] * p.scale_log2 + __log2f(sum)) * kLn2 : -INFINITY;
    }
  __syncwarp();
  // Each lane stores one 16-byte chunk of every (32 / chunks-per-row)-th row (2 or 4 rows apart:
  // less than the swizzle period, so each pass computes its own swizzled offset).
  constexpr int kChunksPerRow = HD / 8, kRowsPerPass = 32 / kChunksPerRow;
  const int lrow = lane / kChunksPerRow, lcol = (lane % kChunksPerRow) * 8;
  bf16* go = p.o_out + b * p.so.b + (m0 + warp_row + lrow) * p.so.t + h * p.so.h + lcol;
#pragma unroll
  for (int i = 0; i < kMT * 16 / kRowsPerPass; ++i) {
    if (m0 + warp_row + lrow + i * kRowsPerPass < p.Tq)
      dev::store_pack(go + i * kRowsPerPass * p.so.t,
                      dev::load_pack(sQ + swz<HD>(warp_row + lrow + i * kRowsPerPass, lcol)));
  }
}

template <int HD>
void launch_fwd(const impl::AttnFwdArgs& a, cudaStream_t stream) {
  KernelParams p = make_params(a.s);
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.o_out = a.o;
  p.lse_out = a.lse;
  constexpr int smem = fwd_smem_bytes<HD>();
  KILN_CUDA_CHECK(cudaFuncSetAttribute(attention_fwd_kernel<HD>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid((a.s.Tq + kFwdBr - 1) / kFwdBr, a.s.NHq, a.s.B);
  attention_fwd_kernel<HD><<<grid, kFwdThreads, smem, stream>>>(p);
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace
}  // namespace kiln::attn

namespace kiln::impl {

void attention_fwd_sm80(const AttnFwdArgs& a, cudaStream_t stream) {
  if (a.s.HD == 64)
    attn::launch_fwd<64>(a, stream);
  else
    attn::launch_fwd<128>(a, stream);
}

}  // namespace kiln::impl
