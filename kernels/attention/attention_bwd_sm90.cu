// Attention backward for Hopper (sm_90a; FlashAttention-3 class). Built for 90a only.
//
// One CTA per 128 keys of one (batch, K/V head), three warpgroups:
//  - warpgroup 0, the producer, gives registers back (setmaxnreg). Its first thread loads K and V
//    once, then Q and dO blocks of kM rows into a kStages-deep ring by TMA (4-D tensor maps over
//    the strided tensors: packed QKV and any strides need no copy, rows past Tq read as zeros);
//    its second warp copies the blocks' LSE (as log2, +inf where a row has no key or lies past
//    Tq, so its P is 0) and D = rowsum(dO * O) into the same stage;
//  - warpgroups 1 and 2, the consumers, own 64 keys each, with dK and dV in fp32 registers. Per
//    block, with wgmma:  S^T = K Q^T and dP^T = V dO^T (shared operands), P^T = exp2(S^T scale
//    log2 e - LSE log2 e), dV += P^T dO (P^T from registers), dS^T = P^T (dP^T - D),
//    dK += dS^T Q (dS^T from registers); the dV product runs under the dS^T arithmetic.
//    Atomic mode: dS^T also goes to shared memory, and dQ += dS K is split over the two
//    warpgroups (each a 64 x 64 part: HD 128 by columns, HD 64 by rows), written to shared
//    memory in accumulator order and added to the fp32 accumulator in global memory by one bulk
//    reduction (cp.reduce.async.bulk .add.f32) per warpgroup and block.
//    Deterministic mode: no dQ here; the sm_80 dQ pass (a fixed order, no atomics) follows.
// The loop runs over every (query head of the GQA group, query block), so dK and dV sum the group
// in a fixed order, with no atomics. Causal: query blocks that see none of the CTA's keys are
// skipped. Then: dK (scaled), dV straight from registers; dQ = scale * accumulator by a small
// kernel that undoes the accumulator order.
#include "errors/check.hpp"
#include "kernels/attention/attention.hpp"
#include "kernels/attention/attention_sm80.cuh"
#include "kernels/attention/attention_sm90.cuh"
#include "kernels/common/sm90.cuh"

namespace kiln::attn {
namespace {

constexpr int kThreads = 3 * 128;  // producer + 2 consumer warpgroups
// 128 x 40 + 256 x 232 = 64512 = 384 x 168, the launch's allocation (ptxas: 168 a thread).
constexpr int kProducerRegs = 40, kConsumerRegs = 232;
constexpr int kN = sm90::kBwdN;  // keys per CTA: 2 warpgroups x 64
constexpr int kStages = 2;       // Q / dO ring depth
constexpr int kDqPart = sm90::kDqPart;

// Queries per block: 64 at HD 128 (S^T, dP^T of 64 x 64 per warpgroup beside 64 x 128 dK and
// dV), 128 at HD 64 (S^T, dP^T of 64 x 128 beside 64 x 64 dK and dV): both fit 232 registers.
template <int HD>
constexpr int block_m() {
  return sm90::bwd_block_m(HD);
}

template <int HD>
struct Smem {
  static constexpr int kM = block_m<HD>();
  static constexpr int kKVBytes = kN * HD * 2;
  static constexpr int kQBytes = kM * HD * 2;
  alignas(1024) unsigned char k[kKVBytes];
  alignas(1024) unsigned char v[kKVBytes];
  alignas(1024) unsigned char q[kStages][kQBytes];
  alignas(1024) unsigned char dout[kStages][kQBytes];
  // dS^T (keys x queries, 64-query column blocks), double-buffered so a block's dS^T can be
  // written while the other warpgroup may still read the previous one in its dQ product.
  alignas(1024) unsigned char ds[2][kN * kM * 2];
  alignas(16) float dq[2][kDqPart];  // per consumer warpgroup: its dQ part, accumulator order
  float lse2[kStages][kM];           // LSE * log2(e); +inf: the row's P is 0
  float dsum[kStages][kM];           // D
  std::uint64_t kv_full;
  std::uint64_t full[kStages], empty[kStages];
};
// H100's opt-in maximum of dynamic shared memory a block, with the 1024-byte alignment slack.
static_assert(sizeof(Smem<64>) + 1024 <= 227 * 1024, "shared memory, HD 64");
static_assert(sizeof(Smem<128>) + 1024 <= 227 * 1024, "shared memory, HD 128");

struct BwdParams {
  int Tq, Tk, NHq, group, m_blocks;
  float scale, scale_log2;
  bool causal;
  const float* lse;   // (B, NHq, Tq)
  const float* dsum;  // (B, NHq, Tq)
  float* dq_accum;    // (B, NHq, m_blocks, 2, kDqPart), accumulator order (atomic mode)
  bf16* dk;
  bf16* dv;
  impl::AttnStrides sk, sv;
};

// The query blocks a CTA visits for one query head: causal, only those holding a query that sees
// one of its keys (query i sees key j when j <= i + Tk - Tq).
struct Steps {
  int m_begin, per_head, total;
};
template <int HD>
__device__ __forceinline__ Steps steps_of(const BwdParams& p, int n0) {
  constexpr int kM = block_m<HD>();
  Steps s;
  const int diag = p.Tk - p.Tq;
  s.m_begin = 0;
  if (p.causal && n0 - diag > 0) s.m_begin = min(p.m_blocks, (n0 - diag) / kM);
  s.per_head = p.m_blocks - s.m_begin;
  s.total = s.per_head * p.group;
  return s;
}

// Pins packed operand registers like wgmma_fence_operand does accumulators.
template <int kRegs>
__device__ __forceinline__ void fence_regs(std::uint32_t (&r)[kRegs][4]) {
#pragma unroll
  for (int i = 0; i < kRegs; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      asm volatile("" : "+r"(r[i][e])::"memory");
}

template <int HD, bool kAtomicDq>
__global__ void __launch_bounds__(kThreads, 1)
    attention_bwd_sm90_kernel(const __grid_constant__ CUtensorMap map_q,
                              const __grid_constant__ CUtensorMap map_k,
                              const __grid_constant__ CUtensorMap map_v,
                              const __grid_constant__ CUtensorMap map_do, const BwdParams p) {
  constexpr int kM = block_m<HD>();
  constexpr int kBlocks = HD / 64;  // 64-column blocks of a tile
  extern __shared__ unsigned char smem_raw[];
  Smem<HD>& sm = *reinterpret_cast<Smem<HD>*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) &
                                              ~std::uintptr_t{1023});
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32;
  const int n0 = blockIdx.x * kN, hk = blockIdx.y, b = blockIdx.z;
  const Steps st = steps_of<HD>(p, n0);

  if (tid == 0) {
    dev::mbarrier_init(&sm.kv_full, 1);
    for (int s = 0; s < kStages; ++s) {
      dev::mbarrier_init(&sm.full[s], 1 + 32);  // the TMA thread's expect_tx + the LSE/D warp
      dev::mbarrier_init(&sm.empty[s], 8);      // lane 0 of each consumer warp
    }
    dev::fence_barrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    // ---- producer ------------------------------------------------------------------------------
    dev::setmaxnreg_dec<kProducerRegs>();
    const int warp = tid / 32;
    if (warp == 0 && lane == 0) {
      dev::tma_prefetch_descriptor(&map_q);
      dev::tma_prefetch_descriptor(&map_k);
      dev::tma_prefetch_descriptor(&map_v);
      dev::tma_prefetch_descriptor(&map_do);
      dev::mbarrier_arrive_expect_tx(&sm.kv_full, 2 * Smem<HD>::kKVBytes);
      for (int cb = 0; cb < kBlocks; ++cb) {
        dev::tma_load_4d(sm.k + cb * kN * 128, &map_k, &sm.kv_full, cb * 64, n0, hk, b);
        dev::tma_load_4d(sm.v + cb * kN * 128, &map_v, &sm.kv_full, cb * 64, n0, hk, b);
      }
      Ring<kStages> ring;
      for (int step = 0; step < st.total; ++step, ring.next()) {
        const int h = hk * p.group + step / st.per_head;
        const int q0 = (st.m_begin + step % st.per_head) * kM;
        dev::mbarrier_wait(&sm.empty[ring.stage], ring.phase ^ 1, "attention_bwd_sm90 empty");
        dev::mbarrier_arrive_expect_tx(&sm.full[ring.stage], 2 * Smem<HD>::kQBytes);
        for (int cb = 0; cb < kBlocks; ++cb) {
          dev::tma_load_4d(sm.q[ring.stage] + cb * kM * 128, &map_q, &sm.full[ring.stage], cb * 64,
                           q0, h, b);
          dev::tma_load_4d(sm.dout[ring.stage] + cb * kM * 128, &map_do, &sm.full[ring.stage],
                           cb * 64, q0, h, b);
        }
      }
    } else if (warp == 1) {
      Ring<kStages> ring;
      for (int step = 0; step < st.total; ++step, ring.next()) {
        const int h = hk * p.group + step / st.per_head;
        const int q0 = (st.m_begin + step % st.per_head) * kM;
        const int64_t row0 = (static_cast<int64_t>(b) * p.NHq + h) * p.Tq;
        dev::mbarrier_wait(&sm.empty[ring.stage], ring.phase ^ 1, "attention_bwd_sm90 empty");
        for (int i = lane; i < kM; i += 32) {
          const int q = q0 + i;
          float l2 = INFINITY, d = 0.f;
          if (q < p.Tq) {
            const float l = p.lse[row0 + q];
            l2 = l == -INFINITY ? INFINITY : l * kLog2e;
            d = p.dsum[row0 + q];
          }
          sm.lse2[ring.stage][i] = l2;
          sm.dsum[ring.stage][i] = d;
        }
        // Every lane releases its own stores (no reliance on __syncwarp's ordering).
        dev::mbarrier_arrive(&sm.full[ring.stage]);
      }
    }
    return;
  }

  // ---- consumers -------------------------------------------------------------------------------
  dev::setmaxnreg_inc<kConsumerRegs>();
  const int cw = wg - 1;  // consumer warpgroup: keys n0 + 64 cw ..
  const int t = tid % 128;
  const int diag = p.Tk - p.Tq;
  const int key0 = n0 + cw * 64;                       // + sm90::acc_row: this thread's keys
  const unsigned char* k_rows = sm.k + cw * 64 * 128;  // this warpgroup's 64 rows of K, V
  const unsigned char* v_rows = sm.v + cw * 64 * 128;
  // The dQ part of this warpgroup: 64 queries (block qb) x 64 columns of HD (block hb).
  const int dq_qb = sm90::dq_part_qb(HD, cw), dq_hb = sm90::dq_part_hb(HD, cw);
  const bool mask_keys = n0 + kN > p.Tk;

  constexpr int kS = kM / 2;  // S^T, dP^T registers: 64 x kM over 128 threads
  constexpr int kD = HD / 2;  // dK, dV registers
  float dk[kD], dv[kD];
#pragma unroll
  for (int i = 0; i < kD; ++i) {
    dk[i] = 0.f;
    dv[i] = 0.f;
  }

  dev::mbarrier_wait(&sm.kv_full, 0, "attention_bwd_sm90 kv_full");
  Ring<kStages> ring;
  for (int step = 0; step < st.total; ++step, ring.next()) {
    const int h = hk * p.group + step / st.per_head;
    const int m_block = st.m_begin + step % st.per_head;
    const int q0 = m_block * kM;
    const int stage = ring.stage;
    const unsigned char* sq = sm.q[stage];
    const unsigned char* sdo = sm.dout[stage];
    const float* lse2 = sm.lse2[stage];
    const float* dsum = sm.dsum[stage];
    dev::mbarrier_wait(&sm.full[stage], ring.phase, "attention_bwd_sm90 full");

    // Descriptors of k-step 0, recomputed every block (opaque) rather than kept in registers.
    const std::uint64_t d_k = opaque(desc_kmajor(k_rows, kN, 0));
    const std::uint64_t d_v = opaque(desc_kmajor(v_rows, kN, 0));
    const std::uint64_t d_q = opaque(desc_kmajor(sq, kM, 0));
    const std::uint64_t d_do = opaque(desc_kmajor(sdo, kM, 0));

    // S^T = K Q^T and dP^T = V dO^T, two groups in flight.
    float s[kS], dp[kS];
    dev::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk)
      dev::Wgmma<kM>::template ss<0, 0>(s, desc_add(d_k, sm90::kmajor_offset(kN, kk)),
                                        desc_add(d_q, sm90::kmajor_offset(kM, kk)), kk > 0);
    dev::wgmma_commit();
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk)
      dev::Wgmma<kM>::template ss<0, 0>(dp, desc_add(d_v, sm90::kmajor_offset(kN, kk)),
                                        desc_add(d_do, sm90::kmajor_offset(kM, kk)), kk > 0);
    dev::wgmma_commit();
    dev::wgmma_wait<1>();
    dev::wgmma_fence_operand(s);

    // P^T, masked: keys past Tk, and causal keys after the query's last visible key.
    const bool need_mask = mask_keys || (p.causal && n0 + kN - 1 > q0 + diag);
#pragma unroll
    for (int i = 0; i < kS; ++i) {
      const int qi = sm90::acc_col(t, i);
      float pv = exp2_approx(fmaf(s[i], p.scale_log2, -lse2[qi]));
      if (need_mask) {
        const int key = key0 + sm90::acc_row(t, i);
        if (key >= p.Tk || (p.causal && key > q0 + qi + diag)) pv = 0.f;
      }
      s[i] = pv;
    }
    std::uint32_t pa[kM / 16][4];
#pragma unroll
    for (int kk = 0; kk < kM / 16; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r)
        pa[kk][r] = dev::pack_bf16x2(s[sm90::a_frag_acc(kk, r, 0)], s[sm90::a_frag_acc(kk, r, 1)]);

    // dV += P^T dO (P^T from registers).
    const std::uint64_t d_do_t = opaque(desc_mn(sdo, kM, 0));
    dev::wgmma_fence();
    dev::wgmma_fence_operand(dv);
#pragma unroll
    for (int kk = 0; kk < kM / 16; ++kk)
      dev::Wgmma<HD>::template rs<1>(dv, pa[kk], desc_add(d_do_t, sm90::mn_offset(kk)), 1);
    dev::wgmma_commit();
    // dP^T and dV both done. The dS^T arithmetic below reads pa, the dV product's A operand, and
    // the PTX ISA leaves touching an in-flight wgmma's registers undefined until its wait_group,
    // reads included; waiting for everything costs the overlap of dV with that arithmetic (taking
    // P from the fp32 s instead keeps s live and serializes every wgmma for want of registers).
    dev::wgmma_wait<0>();
    dev::wgmma_fence_operand(dp);
    dev::wgmma_fence_operand(dv);

    // dS^T = P^T (dP^T - D), with the bf16 P^T the dV product uses, packed as pa is.
    std::uint32_t dsa[kM / 16][4];
#pragma unroll
    for (int kk = 0; kk < kM / 16; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        float ds[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int qi = 16 * kk + sm90::a_frag_k(t, r, h);
          ds[h] = unpack_bf16(pa[kk][r], h) * (dp[sm90::a_frag_acc(kk, r, h)] - dsum[qi]);
        }
        dsa[kk][r] = dev::pack_bf16x2(ds[0], ds[1]);
      }
    if constexpr (kAtomicDq) {
      unsigned char* ds_tile = sm.ds[step & 1];
      // dS^T (keys x queries) for the dQ product, which needs both warpgroups' keys. Each store
      // covers 8 rows x 16 bytes, one swizzled chunk per row: the 32 banks once.
#pragma unroll
      for (int kk = 0; kk < kM / 16; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r)
          *reinterpret_cast<std::uint32_t*>(
              ds_tile + sm90::ds_offset(cw * 64 + sm90::a_frag_row(t, r),
                                        16 * kk + sm90::a_frag_k(t, r, 0))) = dsa[kk][r];
      dev::fence_proxy_async();  // the generic stores, before wgmma reads them
    }

    // dK += dS^T Q (dS^T from registers).
    const std::uint64_t d_q_t = opaque(desc_mn(sq, kM, 0));
    dev::wgmma_fence();
    dev::wgmma_fence_operand(dk);
#pragma unroll
    for (int kk = 0; kk < kM / 16; ++kk)
      dev::Wgmma<HD>::template rs<1>(dk, dsa[kk], desc_add(d_q_t, sm90::mn_offset(kk)), 1);
    dev::wgmma_commit();

    if constexpr (kAtomicDq) dev::named_barrier_sync(1, 256);  // both warpgroups' dS^T, stored
    dev::wgmma_wait<0>();  // dV, dK done: P^T, dS^T registers free before the dQ product
    dev::wgmma_fence_operand(dv);
    dev::wgmma_fence_operand(dk);
    fence_regs(pa);
    fence_regs(dsa);
    if (lane == 0) dev::mbarrier_arrive(&sm.empty[stage]);  // Q, dO, LSE, D are read

    if constexpr (kAtomicDq) {
      // dQ part = dS K over the CTA's 128 keys: dS as the M-major A operand (the dS^T tile),
      // K as the N-major B operand.
      const std::uint64_t d_ds = opaque(desc_mn(sm.ds[step & 1] + dq_qb * kN * 128, kN, 0));
      const std::uint64_t d_k_t = opaque(desc_mn(sm.k + dq_hb * kN * 128, kN, 0));
      float dq[kDqPart / 128];
      dev::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk)
        dev::Wgmma<64>::template ss<1, 1>(dq, desc_add(d_ds, sm90::mn_offset(kk)),
                                          desc_add(d_k_t, sm90::mn_offset(kk)), kk > 0);
      dev::wgmma_commit();
      dev::wgmma_wait<0>();
      dev::wgmma_fence_operand(dq);

      // The part to shared memory in accumulator order (thread t's float4 j at (j * 128 + t)):
      // conflict-free; then one bulk reduction into this block's part of the accumulator.
      const int bar = 2 + cw;
      if (t == 0) dev::tma_store_wait_read<0>();  // the previous reduction has read the buffer
      dev::named_barrier_sync(bar, 128);
#pragma unroll
      for (int j = 0; j < kDqPart / 512; ++j)
        *reinterpret_cast<float4*>(sm.dq[cw] + sm90::dq_part_index(t, 4 * j)) =
            make_float4(dq[4 * j], dq[4 * j + 1], dq[4 * j + 2], dq[4 * j + 3]);
      dev::fence_proxy_async();
      dev::named_barrier_sync(bar, 128);
      if (t == 0) {
        float* dst =
            p.dq_accum +
            ((((static_cast<int64_t>(b) * p.NHq + h) * p.m_blocks + m_block) * 2 + cw) * kDqPart);
        dev::bulk_reduce_add_f32(dst, sm.dq[cw], kDqPart * 4);
        dev::tma_store_commit();
      }
    }
  }
  if constexpr (kAtomicDq) {
    // The reductions must finish reading shared memory before the CTA exits.
    if (t == 0) dev::tma_store_wait<0>();
  }

  // Epilogue: dK (scaled) and dV, bf16, straight from registers: registers i, i + 1 (i even)
  // are two adjacent columns of one key.
#pragma unroll
  for (int i = 0; i < kD; i += 2) {
    const int key = key0 + sm90::acc_row(t, i), col = sm90::acc_col(t, i);
    if (key < p.Tk) {
      *reinterpret_cast<std::uint32_t*>(p.dk + b * p.sk.b + key * p.sk.t + hk * p.sk.h + col) =
          dev::pack_bf16x2(dk[i] * p.scale, dk[i + 1] * p.scale);
      *reinterpret_cast<std::uint32_t*>(p.dv + b * p.sv.b + key * p.sv.t + hk * p.sv.h + col) =
          dev::pack_bf16x2(dv[i], dv[i + 1]);
    }
  }
}

// dQ (bf16, caller's strides) = scale * the accumulator, whose (b, h, m_block) tile holds two
// 64 x 64 parts in wgmma accumulator order (sm90::dq_part_find). One thread per 8 columns of a
// row.
template <int HD>
__global__ void attention_bwd_convert_dq_sm90_kernel(const float* accum, bf16* dq,
                                                     impl::AttnStrides sq, int Tq, int NHq,
                                                     int m_blocks, float scale, int64_t rows) {
  constexpr int kM = block_m<HD>();
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

template <int HD, bool kAtomicDq>
void launch(const impl::AttnBwdArgs& a, const float* dsum, float* dq_accum, cudaStream_t stream) {
  constexpr int kM = block_m<HD>();
  const impl::AttnShape& s = a.s;
  CUtensorMap mq, mk, mv, mdo;
  make_attention_map(&mq, a.q, HD, s.Tq, s.NHq, s.B, s.q, kM);
  make_attention_map(&mdo, a.dout, HD, s.Tq, s.NHq, s.B, s.o, kM);
  make_attention_map(&mk, a.k, HD, s.Tk, s.NHkv, s.B, s.k, kN);
  make_attention_map(&mv, a.v, HD, s.Tk, s.NHkv, s.B, s.v, kN);
  BwdParams p{};
  p.Tq = s.Tq;
  p.Tk = s.Tk;
  p.NHq = s.NHq;
  p.group = s.group();
  p.m_blocks = (s.Tq + kM - 1) / kM;
  p.scale = s.scale;
  p.scale_log2 = s.scale_log2;
  p.causal = s.causal;
  p.lse = a.lse;
  p.dsum = dsum;
  p.dq_accum = dq_accum;
  p.dk = a.dk;
  p.dv = a.dv;
  p.sk = s.k;
  p.sv = s.v;
  constexpr int smem = static_cast<int>(sizeof(Smem<HD>)) + 1024;  // + alignment slack
  KILN_CUDA_CHECK(cudaFuncSetAttribute(attention_bwd_sm90_kernel<HD, kAtomicDq>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid((s.Tk + kN - 1) / kN, s.NHkv, s.B);
  attention_bwd_sm90_kernel<HD, kAtomicDq><<<grid, kThreads, smem, stream>>>(mq, mk, mv, mdo, p);
  KILN_LAUNCH_CHECK(stream);
}

template <int HD>
void convert_dq(const impl::AttnBwdArgs& a, const float* dq_accum, cudaStream_t stream) {
  constexpr int kM = block_m<HD>();
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

template <int HD>
void backward(const impl::AttnBwdArgs& a, float* dsum, float* dq_accum, cudaStream_t stream) {
  const impl::AttnShape& s = a.s;
  if (s.deterministic) {
    launch<HD, false>(a, dsum, nullptr, stream);
    // dQ by the sm_80 pass over the keys: a fixed order, no atomics.
    KernelParams p = make_params(s);
    p.q = a.q;
    p.k = a.k;
    p.v = a.v;
    p.dout = a.dout;
    p.lse = a.lse;
    p.dsum = dsum;
    p.dq = a.dq;
    launch_bwd_dq(p, HD, s.B, stream);
    return;
  }
  KILN_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, impl::attention_bwd_sm90_dq_accum_bytes(s), stream));
  launch<HD, true>(a, dsum, dq_accum, stream);
  convert_dq<HD>(a, dq_accum, stream);
}

}  // namespace
}  // namespace kiln::attn

namespace kiln::impl {

std::size_t attention_bwd_sm90_dq_accum_bytes(const AttnShape& s) {
  const int kM = s.HD == 64 ? attn::block_m<64>() : attn::block_m<128>();
  const std::size_t m_blocks = static_cast<std::size_t>((s.Tq + kM - 1) / kM);
  return static_cast<std::size_t>(s.B) * s.NHq * m_blocks * kM * s.HD * sizeof(float);
}

std::size_t attention_bwd_sm90_workspace(const AttnShape& s) {
  const std::size_t rows = static_cast<std::size_t>(s.B) * s.NHq * s.Tq;
  std::size_t bytes = attn_align(rows * sizeof(float));                             // D
  if (!s.deterministic) bytes += attn_align(attention_bwd_sm90_dq_accum_bytes(s));  // dQ
  return bytes;
}

void attention_bwd_sm90(const AttnBwdArgs& a, void* workspace, cudaStream_t stream) {
  const AttnShape& s = a.s;
  if (s.Tq == 0) {  // no query: dK = dV = 0 (and a tensor map cannot have an empty dimension)
    attention_zero_rows(a.dk, s.k, s.B, s.Tk, s.NHkv, s.HD, stream);
    attention_zero_rows(a.dv, s.v, s.B, s.Tk, s.NHkv, s.HD, stream);
    return;
  }
  const std::size_t rows = static_cast<std::size_t>(s.B) * s.NHq * s.Tq;
  float* dsum = static_cast<float*>(workspace);
  float* dq_accum = s.deterministic ? nullptr
                                    : reinterpret_cast<float*>(static_cast<char*>(workspace) +
                                                               attn_align(rows * sizeof(float)));
  attention_bwd_preprocess(a, dsum, nullptr, stream);
  if (s.HD == 64)
    attn::backward<64>(a, dsum, dq_accum, stream);
  else
    attn::backward<128>(a, dsum, dq_accum, stream);
}

}  // namespace kiln::impl
