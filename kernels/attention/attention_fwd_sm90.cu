// Attention forward for Hopper (sm_90a; FlashAttention-3 class). Built for 90a only.
//
// A persistent CTA of three warpgroups serves 128-row query tiles of (batch, head) pairs in a
// static order that starts the longest causal tiles first:
//  - warpgroup 0 is the producer: it gives registers back (setmaxnreg) and one thread issues the
//    TMA loads (4-D tensor maps over the strided (B, T, NH, HD) tensors, 128-byte swizzle) of Q
//    and of the K and V blocks into a kStages-deep ring, each completing on an mbarrier;
//  - warpgroups 1 and 2 are consumers, 64 query rows each: S = Q K^T with wgmma from shared
//    memory, the online softmax (exp2, scale folded in) in registers, and O += P V with P straight
//    from registers (wgmma's A-from-registers form).
// Softmax overlaps the tensor cores in two ways, as FlashAttention-3 does: within a warpgroup, the
// S GEMM of block n-1 and the P V GEMM of block n are in flight while the softmax of block n-1
// waits only for the first; between the warpgroups, a pair of named barriers makes them take turns
// issuing GEMMs (ping-pong), so one's softmax runs under the other's GEMMs.
// Key blocks are visited from the last to the first (masked blocks first); causal blocks above
// the diagonal are never loaded. O is written straight from registers; LSE in fp32.
#include "errors/check.hpp"
#include "kernels/attention/attention.hpp"
#include "kernels/attention/attention_sm80.cuh"
#include "kernels/attention/attention_sm90.cuh"
#include "kernels/common/device.hpp"

namespace kiln::attn {
namespace {

constexpr int kM = 128;            // query rows per tile: 2 consumer warpgroups x 64
constexpr int kN = 128;            // keys per block
constexpr int kStages = 2;         // K/V ring depth
constexpr int kThreads = 3 * 128;  // producer + 2 consumer warpgroups
constexpr int kProducerRegs = 24, kConsumerRegs = 240;  // 128 x 24 + 256 x 240 <= 64 Ki

// Shared memory: every tile is HD / 64 column blocks of (rows x 64 bf16 = 128-byte rows), the
// layout TMA writes with the 128-byte swizzle and wgmma reads through its descriptors.
template <int HD>
struct Smem {
  static constexpr int kQBytes = kM * HD * 2;
  static constexpr int kKVBytes = kN * HD * 2;
  alignas(1024) unsigned char q[kQBytes];
  alignas(1024) unsigned char k[kStages][kKVBytes];
  alignas(1024) unsigned char v[kStages][kKVBytes];
  std::uint64_t q_full, q_empty;
  std::uint64_t k_full[kStages], k_empty[kStages], v_full[kStages], v_empty[kStages];
};

struct Sm90Params {
  int Tq, Tk, NHq, B, group;
  int m_blocks, tiles;
  float scale_log2;
  bool causal;
  bf16* o;
  float* lse;
  impl::AttnStrides so;
};

// Tile t -> (m_block, h, b). Causal: all the last query blocks first (they see the most keys),
// so the static round-robin of the persistent CTAs approximates longest-job-first. Otherwise the
// query blocks of one head are adjacent, and CTAs running together share K and V in L2.
struct Tile {
  int m_block, h, b;
};
__device__ __forceinline__ Tile tile_at(const Sm90Params& p, int t) {
  Tile r;
  if (p.causal) {
    const int hb = t % (p.NHq * p.B);
    r.m_block = p.m_blocks - 1 - t / (p.NHq * p.B);
    r.h = hb % p.NHq;
    r.b = hb / p.NHq;
  } else {
    r.m_block = t % p.m_blocks;
    const int hb = t / p.m_blocks;
    r.h = hb % p.NHq;
    r.b = hb / p.NHq;
  }
  return r;
}

// Key blocks a tile visits: all of them, or causal, up to the one holding its last row's last key.
__device__ __forceinline__ int key_blocks(const Sm90Params& p, int m0) {
  int n = (p.Tk + kN - 1) / kN;
  if (p.causal) {
    const int last_key = min(p.Tk - 1, m0 + kM - 1 + p.Tk - p.Tq);
    n = last_key < 0 ? 0 : last_key / kN + 1;
  }
  return n;
}

using Ring = attn::Ring<kStages>;

template <int HD>
__device__ __forceinline__ void consumer_arrive(std::uint64_t* bar, int lane) {
  if (lane == 0) dev::mbarrier_arrive(bar);
}

template <int HD>
__global__ void __launch_bounds__(kThreads, 1)
    attention_fwd_sm90_kernel(const __grid_constant__ CUtensorMap map_q,
                              const __grid_constant__ CUtensorMap map_k,
                              const __grid_constant__ CUtensorMap map_v, const Sm90Params p) {
  extern __shared__ unsigned char smem_raw[];
  // Dynamic shared memory is only 16-byte aligned by contract: align the block to 1024.
  Smem<HD>& sm = *reinterpret_cast<Smem<HD>*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) &
                                              ~std::uintptr_t{1023});
  constexpr int kBlocks = HD / 64;
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32;

  if (tid == 0) {
    dev::mbarrier_init(&sm.q_full, 1);
    dev::mbarrier_init(&sm.q_empty, 8);  // lane 0 of each consumer warp
    for (int s = 0; s < kStages; ++s) {
      dev::mbarrier_init(&sm.k_full[s], 1);
      dev::mbarrier_init(&sm.v_full[s], 1);
      dev::mbarrier_init(&sm.k_empty[s], 8);
      dev::mbarrier_init(&sm.v_empty[s], 8);
    }
    dev::fence_barrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    // ---- producer ------------------------------------------------------------------------------
    dev::setmaxnreg_dec<kProducerRegs>();
    if (tid != 0) return;
    dev::tma_prefetch_descriptor(&map_q);
    dev::tma_prefetch_descriptor(&map_k);
    dev::tma_prefetch_descriptor(&map_v);
    Ring ring;
    std::uint32_t q_phase = 0;
    for (int t = blockIdx.x; t < p.tiles; t += gridDim.x) {
      const Tile tile = tile_at(p, t);
      const int m0 = tile.m_block * kM, hk = tile.h / p.group;
      const int n_blocks = key_blocks(p, m0);
      dev::mbarrier_wait(&sm.q_empty, q_phase ^ 1,
                         "attention_fwd_sm90 q_empty");  // the previous tile's Q is no longer read
      dev::mbarrier_arrive_expect_tx(&sm.q_full, Smem<HD>::kQBytes);
      for (int cb = 0; cb < kBlocks; ++cb)
        dev::tma_load_4d(sm.q + cb * kM * 128, &map_q, &sm.q_full, cb * 64, m0, tile.h, tile.b);
      q_phase ^= 1;
      for (int n = n_blocks - 1; n >= 0; --n, ring.next()) {
        dev::mbarrier_wait(&sm.k_empty[ring.stage], ring.phase ^ 1, "attention_fwd_sm90 k_empty");
        dev::mbarrier_arrive_expect_tx(&sm.k_full[ring.stage], Smem<HD>::kKVBytes);
        for (int cb = 0; cb < kBlocks; ++cb)
          dev::tma_load_4d(sm.k[ring.stage] + cb * kN * 128, &map_k, &sm.k_full[ring.stage],
                           cb * 64, n * kN, hk, tile.b);
        dev::mbarrier_wait(&sm.v_empty[ring.stage], ring.phase ^ 1, "attention_fwd_sm90 v_empty");
        dev::mbarrier_arrive_expect_tx(&sm.v_full[ring.stage], Smem<HD>::kKVBytes);
        for (int cb = 0; cb < kBlocks; ++cb)
          dev::tma_load_4d(sm.v[ring.stage] + cb * kN * 128, &map_v, &sm.v_full[ring.stage],
                           cb * 64, n * kN, hk, tile.b);
      }
    }
    return;
  }

  // ---- consumers -------------------------------------------------------------------------------
  dev::setmaxnreg_inc<kConsumerRegs>();
  const int cw = wg - 1;  // consumer warpgroup 0 or 1
  const int warp_in_wg = (tid % 128) / 32;
  const int diag = p.Tk - p.Tq;
  // Ping-pong: named barrier 1 + w opens warpgroup w's turn to issue GEMMs; 256 threads = the
  // waiting warpgroup (sync) and the other one (arrive). Consumer 1 opens consumer 0's first turn.
  const int my_turn = 1 + cw, their_turn = 2 - cw;
  if (cw == 1) dev::named_barrier_arrive(1, 256);

  Ring ring;
  std::uint32_t q_phase = 0;
  constexpr int kS = kN / 2;  // S accumulator registers: 64 x kN over 128 threads
  constexpr int kO = HD / 2;  // O accumulator registers
  for (int t = blockIdx.x; t < p.tiles; t += gridDim.x) {
    const Tile tile = tile_at(p, t);
    const int m0 = tile.m_block * kM;
    const int n_blocks = key_blocks(p, m0);
    const int row_base = m0 + cw * 64 + warp_in_wg * 16 + (lane >> 2);  // + 8 for the second
    const unsigned char* q_tile = sm.q + cw * 64 * 128;                 // this warpgroup's rows

    float o[kO];
#pragma unroll
    for (int i = 0; i < kO; ++i)
      o[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
    std::uint32_t pa[kN / 16][4];

    // S = Q K^T into s for the block at `stage` (issued, not waited).
    float s[kS];
    const auto issue_s = [&](int stage) {
      dev::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk)
        dev::Wgmma<kN>::template ss<0, 0>(s, desc_kmajor(q_tile, kM, kk),
                                          desc_kmajor(sm.k[stage], kN, kk), kk > 0);
      dev::wgmma_commit();
    };
    const auto issue_pv = [&](int stage) {
      dev::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk)
        dev::Wgmma<HD>::template rs<1>(o, pa[kk], desc_mn(sm.v[stage], kN, kk), 1);
      dev::wgmma_commit();
    };
    // Masks block n's S, updates the running max and sum, leaves P (fp32) in s and returns the
    // factor the previous O must be scaled by.
    const auto softmax = [&](int n, float(&corr)[2]) {
      const int n0 = n * kN;
      if (n0 + kN > p.Tk || (p.causal && n0 + kN - 1 > m0 + cw * 64 + diag)) {
#pragma unroll
        for (int j = 0; j < kN / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = row_base + (e >> 1) * 8;
            const int col = n0 + j * 8 + (lane & 3) * 2 + (e & 1);
            if (col >= p.Tk || (p.causal && col > row + diag)) s[4 * j + e] = -INFINITY;
          }
      }
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        float mx = row_max[hr];
#pragma unroll
        for (int j = 0; j < kN / 8; ++j)
          mx = fmaxf(mx, fmaxf(s[4 * j + 2 * hr], s[4 * j + 2 * hr + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(dev::kFullMask, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(dev::kFullMask, mx, 2));
        const float offset = mx == -INFINITY ? 0.f : mx * p.scale_log2;
        corr[hr] = exp2_approx(row_max[hr] * p.scale_log2 - offset);
        row_max[hr] = mx;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kN / 8; ++j)
#pragma unroll
          for (int e = 2 * hr; e < 2 * hr + 2; ++e) {
            s[4 * j + e] = exp2_approx(fmaf(s[4 * j + e], p.scale_log2, -offset));
            sum += s[4 * j + e];
          }
        row_sum[hr] = row_sum[hr] * corr[hr] + sum;
      }
    };
    const auto pack_p = [&] {
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) {
        pa[kk][0] = dev::pack_bf16x2(s[8 * kk + 0], s[8 * kk + 1]);
        pa[kk][1] = dev::pack_bf16x2(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = dev::pack_bf16x2(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = dev::pack_bf16x2(s[8 * kk + 6], s[8 * kk + 7]);
      }
    };
    const auto rescale_o = [&](const float(&corr)[2]) {
#pragma unroll
      for (int j = 0; j < HD / 8; ++j) {
        o[4 * j + 0] *= corr[0];
        o[4 * j + 1] *= corr[0];
        o[4 * j + 2] *= corr[1];
        o[4 * j + 3] *= corr[1];
      }
    };

    dev::mbarrier_wait(&sm.q_full, q_phase, "attention_fwd_sm90 q_full");
    q_phase ^= 1;
    if (n_blocks > 0) {
      // First block: S alone.
      int n = n_blocks - 1;
      dev::mbarrier_wait(&sm.k_full[ring.stage], ring.phase, "attention_fwd_sm90 k_full");
      dev::named_barrier_sync(my_turn, 256);
      issue_s(ring.stage);
      dev::named_barrier_arrive(their_turn, 256);
      dev::wgmma_wait<0>();
      dev::wgmma_fence_operand(s);
      consumer_arrive<HD>(&sm.k_empty[ring.stage], lane);
      float corr[2];
      softmax(n, corr);
      pack_p();
      // Steady state: S of block n-1 and P V of block n in flight together.
      for (; n > 0; --n) {
        const int cur = ring.stage;
        const std::uint32_t cur_phase = ring.phase;
        ring.next();
        dev::mbarrier_wait(&sm.k_full[ring.stage], ring.phase, "attention_fwd_sm90 k_full");
        dev::mbarrier_wait(&sm.v_full[cur], cur_phase, "attention_fwd_sm90 v_full");
        dev::named_barrier_sync(my_turn, 256);
        issue_s(ring.stage);
        dev::wgmma_fence_operand(o);
        issue_pv(cur);
        dev::named_barrier_arrive(their_turn, 256);
        dev::wgmma_wait<1>();  // S done (P V may still run)
        dev::wgmma_fence_operand(s);
        consumer_arrive<HD>(&sm.k_empty[ring.stage], lane);
        softmax(n - 1, corr);
        dev::wgmma_wait<0>();  // P V done: pa and V[cur] are free
        dev::wgmma_fence_operand(o);
        consumer_arrive<HD>(&sm.v_empty[cur], lane);
        rescale_o(corr);
        pack_p();
      }
      // Last block's P V.
      dev::mbarrier_wait(&sm.v_full[ring.stage], ring.phase, "attention_fwd_sm90 v_full");
      dev::named_barrier_sync(my_turn, 256);
      dev::wgmma_fence_operand(o);
      issue_pv(ring.stage);
      dev::named_barrier_arrive(their_turn, 256);
      dev::wgmma_wait<0>();
      dev::wgmma_fence_operand(o);
      consumer_arrive<HD>(&sm.v_empty[ring.stage], lane);
      ring.next();
    }
    consumer_arrive<HD>(&sm.q_empty, lane);  // every S of this tile is done

    // Epilogue: normalise, write O (bf16) and LSE straight from registers.
    float* lse = p.lse + (static_cast<int64_t>(tile.b) * p.NHq + tile.h) * p.Tq;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float sum = row_sum[hr];
      sum += __shfl_xor_sync(dev::kFullMask, sum, 1);
      sum += __shfl_xor_sync(dev::kFullMask, sum, 2);
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int row = row_base + hr * 8;
      if (row < p.Tq) {
        bf16* go = p.o + tile.b * p.so.b + row * p.so.t + tile.h * p.so.h + (lane & 3) * 2;
#pragma unroll
        for (int j = 0; j < HD / 8; ++j)
          *reinterpret_cast<std::uint32_t*>(go + j * 8) =
              dev::pack_bf16x2(o[4 * j + 2 * hr] * inv, o[4 * j + 2 * hr + 1] * inv);
        if ((lane & 3) == 0)
          lse[row] = sum > 0.f ? (row_max[hr] * p.scale_log2 + __log2f(sum)) * kLn2 : -INFINITY;
      }
    }
  }
  // Balance the ping-pong: consumer 1 opened one turn more of consumer 0 than it took.
  if (cw == 0) dev::named_barrier_sync(1, 256);
}

template <int HD>
void launch(const impl::AttnFwdArgs& a, cudaStream_t stream) {
  const impl::AttnShape& s = a.s;
  CUtensorMap mq, mk, mv;
  make_attention_map(&mq, a.q, HD, s.Tq, s.NHq, s.B, s.q, kM);
  make_attention_map(&mk, a.k, HD, s.Tk, s.NHkv, s.B, s.k, kN);
  make_attention_map(&mv, a.v, HD, s.Tk, s.NHkv, s.B, s.v, kN);
  Sm90Params p{};
  p.Tq = s.Tq;
  p.Tk = s.Tk;
  p.NHq = s.NHq;
  p.B = s.B;
  p.group = s.group();
  p.m_blocks = (s.Tq + kM - 1) / kM;
  p.tiles = p.m_blocks * s.NHq * s.B;
  p.scale_log2 = s.scale_log2;
  p.causal = s.causal;
  p.o = a.o;
  p.lse = a.lse;
  p.so = s.o;
  constexpr int smem = static_cast<int>(sizeof(Smem<HD>)) + 1024;  // + alignment slack
  KILN_CUDA_CHECK(cudaFuncSetAttribute(attention_fwd_sm90_kernel<HD>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int ctas = std::min(p.tiles, impl::current_device_facts().multiprocessors);
  attention_fwd_sm90_kernel<HD><<<ctas, kThreads, smem, stream>>>(mq, mk, mv, p);
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace
}  // namespace kiln::attn

namespace kiln::impl {

void attention_fwd_sm90(const AttnFwdArgs& a, cudaStream_t stream) {
  if (a.s.HD == 64)
    attn::launch<64>(a, stream);
  else
    attn::launch<128>(a, stream);
}

}  // namespace kiln::impl
