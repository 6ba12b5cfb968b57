// The Hopper GEMM kernel (sm_90a): warp-specialized, persistent, TMA -> shared -> wgmma.
// Included by the gemm_sm90_*.cu files, each instantiating one (trans_a, trans_b) pair.
//
// Block: 3 warpgroups. Warpgroup 0 is the producer: it gives registers back (setmaxnreg.dec) and
// one thread issues the TMA loads of every k-block of every tile this CTA owns into a ring of
// kStages shared stages. Warpgroups 1 and 2 are the consumers (setmaxnreg.inc): each multiplies
// its 64 rows of the 128 x kBN tile with wgmma (m64 n kBN k16, A and B from shared memory),
// keeping the 64 x kBN fp32 accumulators in registers, then applies the epilogue in registers,
// writes the tile through a small swizzled shared buffer and stores it with TMA, asynchronously,
// while its next tile's mainloop starts.
//
// Grid: one CTA per SM (persistent); CTA c takes tiles c, c + grid, c + 2 grid, ... in an order
// that walks kGroupM tile rows column by column, so the CTAs running together share B columns
// and a band of A rows in L2.
//
// Shared layouts (all 128-byte swizzled, each 1024-byte aligned; see wgmma_desc_sw128):
//   A, K-major (A (M, K) row-major): [128 m][64 k] in one TMA box {64 k, 128 m}.
//   A, M-major (A (K, M), trans_a):  two boxes [64 k][64 m] (m 0-63, m 64-127), 8 KiB apart.
//   B, K-major (B (N, K), trans_b):  [kBN n][64 k] in one box {64 k, kBN n}.
//   B, N-major (B (K, N)):           kBN / 64 boxes [64 k][64 n], 8 KiB apart (the LBO).
// TMA fills rows and columns past the matrix with zeros, so partial tiles need no other care; the
// TMA store of the epilogue skips them.
//
// Pipeline (mbarriers, see sm90.cuh): full[s] completes when the stage's TMA bytes landed
// (1 arrival with expect_tx); empty[s] when all 8 consumer warps finished the wgmmas reading it.
// A consumer keeps one k-block's wgmma group in flight (wgmma_wait<1>) and releases the stage of
// the previous k-block.
//
// bias_grad (row sums of op(A)): the consumers of tiles in the first tile column also read their
// A slice of each stage from shared memory while its wgmmas run, and add it up in fp32 in a fixed
// order (row_sums_*): deterministic, no atomics, one thread writes each row. (A wgmma against a
// tile of ones would be neater, but a wgmma under a runtime branch makes ptxas serialize every
// wgmma of the kernel (C7520).)
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdint>

#include <algorithm>
#include <atomic>

#include "errors/check.hpp"
#include "kernels/common/sm90.cuh"
#include "kernels/common/tma.hpp"
#include "kernels/gemm/gemm_epilogue.cuh"
#include "kernels/gemm/gemm_sm90_layout.hpp"

namespace kiln::dev::sm90 {

constexpr int kThreads = 384;
constexpr int kGroupM = 8;
constexpr int kEpiBufBytes = 64 * 128;  // one 64-row x 128-byte chunk of D (or pre_gelu)

template <int kBN>
struct Config {
  static constexpr int kStages = kBN == 256 ? 4 : 6;
  static constexpr int kABytes = kBM * kBK * 2;
  static constexpr int kBBytes = kBN * kBK * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;
  // stages | 2 consumers x (D chunk, pre_gelu chunk) | full[], empty[] barriers
  static constexpr int kEpiOffset = kStages * kStageBytes;
  static constexpr int kBarrierOffset = kEpiOffset + 2 * 2 * kEpiBufBytes;
  static constexpr int kSmemBytes = kBarrierOffset + 2 * kStages * 8 + 1024;  // + alignment slack
  static_assert(kSmemBytes <= 232448, "over the 227 KiB a block may use");
  // The producer announces kStageBytes to full[s] (expect_tx) and TMA completes exactly the boxes'
  // bytes (out-of-bounds fill included): any mismatch would hang the consumers' wait.
  static constexpr int box_bytes(int count, int rows) { return count * rows * 128; }
  static_assert(box_bytes(a_box_count(false), a_box(false, 0, 0, 0).rows) == kABytes &&
                    box_bytes(a_box_count(true), a_box(true, 0, 0, 0).rows) == kABytes,
                "A's TMA boxes do not fill the bytes announced per stage");
  static_assert(box_bytes(b_box_count(false, kBN), b_box(false, 0, 0, 0, kBN).rows) == kBBytes &&
                    box_bytes(b_box_count(true, kBN), b_box(true, 0, 0, 0, kBN).rows) == kBBytes,
                "B's TMA boxes do not fill the bytes announced per stage");
};

struct TileOrder {
  int tiles_m, tiles_n;
  __device__ __forceinline__ void coords(int id, int& tm, int& tn) const {
    const int per_group = kGroupM * tiles_n;
    const int first_m = (id / per_group) * kGroupM;
    const int rows = min(tiles_m - first_m, kGroupM);
    tm = first_m + (id % per_group) % rows;
    tn = (id % per_group) / rows;
  }
};

// bias_grad's partial sums over one stage's 64 k of this warpgroup's 64 rows of op(A)
// (`a`: its A slice in shared memory, 128-byte swizzled rows).
//   K-major (A (M, K)): thread t sums half a row: row t / 2, 16-byte chunks 4 (t % 2) .. + 3.
//   M-major (A (K, M)): thread t sums 8 rows (m chunk t % 8) over k rows 4 (t / 8) .. + 3, one
//   partial per m; row_sums_finish adds the 16 partials of each m.
__device__ __forceinline__ void add_bf16x8(const uint4& v, float (&p)[8], bool spread) {
  const std::uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float lo = __uint_as_float(w[i] << 16), hi = __uint_as_float(w[i] & 0xFFFF0000u);
    if (spread) {
      p[2 * i] += lo;
      p[2 * i + 1] += hi;
    } else {
      p[0] += lo;
      p[0] += hi;
    }
  }
}

template <bool kTransA>
__device__ __forceinline__ void row_sums_add(const char* a, int t, float (&part)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
    add_bf16x8(*reinterpret_cast<const uint4*>(a + row_sums_read(kTransA, t, i)), part, kTransA);
}

// Combines the partial sums in a fixed order and adds each row's total to bias_grad. `scratch`
// is this warpgroup's epilogue buffer (4 KiB used), `bar` its named barrier.
template <bool kTransA, typename OutT>
__device__ __forceinline__ void row_sums_finish(const GemmEpilogueArgs& e, const float (&part)[8],
                                                int t, std::int64_t row0, char* scratch, int bar) {
  if constexpr (!kTransA) {
    const float s = part[0] + __shfl_xor_sync(0xffffffffu, part[0], 1);
    if ((t & 1) == 0 && row0 + (t >> 1) < e.m) bias_grad_add<OutT>(e, row0 + (t >> 1), s);
  } else {
    float* red = reinterpret_cast<float*>(scratch);  // [16 k groups][64 m]
    if (t == 0) tma_store_wait_read<0>();            // the buffer's last TMA store has read it
    named_barrier_sync(bar, 128);
#pragma unroll
    for (int i = 0; i < 8; ++i)
      red[(t >> 3) * 64 + (t & 7) * 8 + i] = part[i];
    named_barrier_sync(bar, 128);
    if (t < 64) {
      float s = 0.0f;
#pragma unroll
      for (int g = 0; g < 16; ++g)
        s += red[g * 64 + t];
      if (row0 + t < e.m) bias_grad_add<OutT>(e, row0 + t, s);
    }
    named_barrier_sync(bar, 128);  // the epilogue may overwrite the buffer now
  }
}

template <bool kTransA, bool kTransB, typename OutT, int kBN>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_sm90_kernel(const __grid_constant__ CUtensorMap map_a,
                     const __grid_constant__ CUtensorMap map_b,
                     const __grid_constant__ CUtensorMap map_d,
                     const __grid_constant__ CUtensorMap map_g, int k_blocks, TileOrder order,
                     GemmEpilogueArgs e) {
  using Cfg = Config<kBN>;
  constexpr int kStages = Cfg::kStages;
  extern __shared__ char smem_raw[];
  char* smem = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) &
                                       ~std::uintptr_t{1023});
  std::uint64_t* full = reinterpret_cast<std::uint64_t*>(smem + Cfg::kBarrierOffset);
  std::uint64_t* empty = full + kStages;

  const int wg = threadIdx.x / 128, t = threadIdx.x % 128;
  const int num_tiles = order.tiles_m * order.tiles_n;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], 1);
      mbarrier_init(&empty[s], 8);  // the 8 consumer warps
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    // ---------------- producer ----------------
    setmaxnreg_dec<40>();
    if (t != 0) return;
    tma_prefetch_descriptor(&map_a);
    tma_prefetch_descriptor(&map_b);
    int stage = 0;
    std::uint32_t phase = 0;
    for (int tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
      int tm, tn;
      order.coords(tile, tm, tn);
      for (int kb = 0; kb < k_blocks; ++kb) {
        mbarrier_wait(&empty[stage], phase ^ 1, "gemm_sm90 empty");
        char* sa = smem + stage * Cfg::kStageBytes;
        char* sb = sa + Cfg::kABytes;
        mbarrier_arrive_expect_tx(&full[stage], Cfg::kStageBytes);
#pragma unroll
        for (int i = 0; i < a_box_count(kTransA); ++i) {
          const Box box = a_box(kTransA, i, tm, kb);
          tma_load_2d(sa + box.smem, &map_a, &full[stage], box.c0, box.c1);
        }
#pragma unroll
        for (int i = 0; i < b_box_count(kTransB, kBN); ++i) {
          const Box box = b_box(kTransB, i, tn, kb, kBN);
          tma_load_2d(sb + box.smem, &map_b, &full[stage], box.c0, box.c1);
        }
        if (++stage == kStages) {
          stage = 0;
          phase ^= 1;
        }
      }
    }
    // Tail: wait until the consumers released every stage, so no copy is in flight at exit.
    for (int i = 0; i < kStages; ++i) {
      mbarrier_wait(&empty[stage], phase ^ 1, "gemm_sm90 empty");
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
    return;
  }

  // ---------------- consumers ----------------
  setmaxnreg_inc<232>();
  const int cw = wg - 1;  // rows cw * 64 .. + 63 of the tile
  const int lane = t % 32;
  const bool lane0 = lane == 0;
  char* dbuf = smem + Cfg::kEpiOffset + cw * 2 * kEpiBufBytes;
  char* gbuf = dbuf + kEpiBufBytes;
  constexpr int kTA = a_mn_major(kTransA);
  constexpr int kTB = b_mn_major(kTransB);

  float acc[kBN / 2];
  float part[8];  // bias_grad partial sums (row_sums_*)
  int stage = 0;
  std::uint32_t phase = 0;
  for (int tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    int tm, tn;
    order.coords(tile, tm, tn);
    const bool row_sums = (e.bits & kEpiBiasGrad) && tn == 0;
#pragma unroll
    for (int i = 0; i < 8; ++i)
      part[i] = 0.0f;
    int prev_stage = 0;
    for (int kb = 0; kb < k_blocks; ++kb) {
      mbarrier_wait(&full[stage], phase, "gemm_sm90 full");
      const char* sa = smem + stage * Cfg::kStageBytes;
      const char* sb = sa + Cfg::kABytes;
      // Descriptors of the tiles' starts; each k step adds its start offset (>> 4, the
      // descriptor's unit) to the low bits (addresses stay below 2^18: no carry out).
      const std::uint64_t da = wgmma_desc_sw128(sa, a_lbo(kTransA), kSbo);
      const std::uint64_t db = wgmma_desc_sw128(sb, b_lbo(kTransB), kSbo);
      wgmma_fence_operand(acc);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kBK / 16; ++ks) {
        const std::uint64_t step_a = a_desc_start(kTransA, cw, ks) >> 4;
        const std::uint64_t step_b = b_desc_start(kTransB, ks) >> 4;
        const int accumulate = (kb > 0 || ks > 0) ? 1 : 0;
        Wgmma<kBN>::template ss<kTA, kTB>(acc, da + step_a, db + step_b, accumulate);
      }
      wgmma_commit();
      wgmma_fence_operand(acc);
      if (row_sums) {
        row_sums_add<kTransA>(sa + kBoxBytes * cw, t, part);
        fence_proxy_async();  // these reads before the TMA that will overwrite the stage
      }
      wgmma_wait<1>();  // the previous k-block's group is done reading its stage
      if (kb > 0 && lane0) mbarrier_arrive(&empty[prev_stage]);
      prev_stage = stage;
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
    wgmma_wait<0>();
    wgmma_fence_operand(acc);
    if (lane0) mbarrier_arrive(&empty[prev_stage]);

    // ---------------- epilogue ----------------
    // Thread t holds accumulator pairs (i, i + 1), i even, at (acc_row(t, i), acc_col(t, i) +
    // {0, 1}) of this warpgroup's 64 x kBN block; the pairs of columns 8 j .. 8 j + 7 are
    // i = 4 j and 4 j + 2 (rows r and r + 8).
    const std::int64_t row0 = std::int64_t{tm} * kBM + cw * 64;
    const std::int64_t col0 = std::int64_t{tn} * kBN;
    if (row0 >= e.m) continue;  // this warpgroup's rows all lie past M (uniform in the group)
    if (row_sums) row_sums_finish<kTransA, OutT>(e, part, t, row0, dbuf, 1 + cw);
    constexpr int kChunk = 128 / static_cast<int>(sizeof(OutT));  // columns per 128-byte row
    constexpr int kPairs = kChunk / 4;  // accumulator pairs per thread in a chunk
#pragma unroll
    for (int q = 0; q < kBN / kChunk; ++q) {
      if (col0 + q * kChunk >= e.n) continue;  // past N: nothing to store (uniform)
      // The math first, in registers (D's values replace the accumulators): it overlaps the
      // previous chunk's TMA store, which may still be reading the buffers.
      float g[2 * kPairs];
#pragma unroll
      for (int p = 0; p < kPairs; ++p) {
        const int i = q * 2 * kPairs + 2 * p;
        const std::int64_t row = row0 + acc_row(t, i), col = col0 + acc_col(t, i);
        g[2 * p] = g[2 * p + 1] = 0.0f;
        if (row < e.m && col < e.n)
          epilogue_pair<OutT>(e, row, col, acc[i], acc[i + 1], g[2 * p], g[2 * p + 1]);
      }
      if (t == 0) tma_store_wait_read<0>();  // the previous chunk's store has read the buffers
      named_barrier_sync(1 + cw, 128);
#pragma unroll
      for (int p = 0; p < kPairs; ++p) {
        const int i = q * 2 * kPairs + 2 * p;
        const std::uint32_t at = sw128(acc_row(t, i), (acc_col(t, i) - q * kChunk) * sizeof(OutT));
        if constexpr (sizeof(OutT) == 4) {
          *reinterpret_cast<float2*>(dbuf + at) = make_float2(acc[i], acc[i + 1]);
        } else {
          *reinterpret_cast<__nv_bfloat162*>(dbuf + at) = __floats2bfloat162_rn(acc[i], acc[i + 1]);
          if (e.bits & kEpiGelu)
            *reinterpret_cast<__nv_bfloat162*>(gbuf + at) =
                __floats2bfloat162_rn(g[2 * p], g[2 * p + 1]);
        }
      }
      fence_proxy_async();
      named_barrier_sync(1 + cw, 128);
      if (t == 0) {
        const int gc = static_cast<int>(col0) + q * kChunk, gr = static_cast<int>(row0);
        tma_store_2d(&map_d, dbuf, gc, gr);
        if (e.bits & kEpiGelu) tma_store_2d(&map_g, gbuf, gc, gr);
        tma_store_commit();
      }
    }
  }
  if (t == 0) tma_store_wait<0>();
}

// ---- host side ----

// The tile width: 256 columns per tile does the most work per byte of shared memory read, but on
// a narrow problem its few tiles leave SMs idle; then 128 (about 10% less efficient per tile)
// wins if it fills the waves better.
inline int choose_bn(const impl::GemmProblem& p, int multiprocessors) {
  auto score = [&](int bn, double per_tile) {
    const std::int64_t tiles = ((p.m + kBM - 1) / kBM) * ((p.n + bn - 1) / bn);
    const std::int64_t waves = (tiles + multiprocessors - 1) / multiprocessors;
    return per_tile * static_cast<double>(tiles) / static_cast<double>(waves * multiprocessors);
  };
  return score(256, 1.0) >= score(128, 0.9) ? 256 : 128;
}

inline impl::TensorMap2d bf16_map(const void* base, std::int64_t inner, std::int64_t outer,
                                  std::int64_t ld, int box_inner, int box_outer) {
  impl::TensorMap2d g;
  g.base = base;
  g.dtype = CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  g.inner = static_cast<std::uint64_t>(inner);
  g.outer = static_cast<std::uint64_t>(outer);
  g.row_stride = static_cast<std::uint64_t>(ld) * 2;
  g.box_inner = static_cast<std::uint32_t>(box_inner);
  g.box_outer = static_cast<std::uint32_t>(box_outer);
  return g;
}

template <bool kTransA, bool kTransB, typename OutT, int kBN>
void run(const impl::GemmProblem& p, int multiprocessors, cudaStream_t stream) {
  using Cfg = Config<kBN>;
  CUtensorMap map_a, map_b, map_d, map_g;
  // A (M, K) or (K, M), B (K, N) or (N, K): the global matrix as (inner, outer), boxes as the
  // layout places them.
  const int a_rows = a_box(kTransA, 0, 0, 0).rows, b_rows = b_box(kTransB, 0, 0, 0, kBN).rows;
  impl::encode_tensor_map_2d_cached(&map_a, kTransA ? bf16_map(p.a, p.m, p.k, p.lda, 64, a_rows)
                                                    : bf16_map(p.a, p.k, p.m, p.lda, 64, a_rows));
  impl::encode_tensor_map_2d_cached(&map_b, kTransB ? bf16_map(p.b, p.k, p.n, p.ldb, 64, b_rows)
                                                    : bf16_map(p.b, p.n, p.k, p.ldb, 64, b_rows));
  impl::TensorMap2d d = bf16_map(p.d, p.n, p.m, p.ldd, 128 / sizeof(OutT), 64);
  if constexpr (sizeof(OutT) == 4) {
    d.dtype = CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
    d.row_stride = static_cast<std::uint64_t>(p.ldd) * 4;
  }
  impl::encode_tensor_map_2d_cached(&map_d, d);
  if (p.flags.gelu)
    impl::encode_tensor_map_2d_cached(&map_g,
                                      bf16_map(p.pre_gelu_out, p.n, p.m, p.ld_pre_gelu, 64, 64));
  else
    map_g = map_d;  // not read

  TileOrder order;
  order.tiles_m = static_cast<int>((p.m + kBM - 1) / kBM);
  order.tiles_n = static_cast<int>((p.n + kBN - 1) / kBN);
  const std::int64_t tiles = std::int64_t{order.tiles_m} * order.tiles_n;
  KILN_CHECK(tiles <= 0x7FFFFFFF, Status::not_supported,
             "kiln_gemm: the sm90 kernel cannot schedule ", tiles, " tiles");
  const int grid = static_cast<int>(std::min<std::int64_t>(tiles, multiprocessors));
  const int k_blocks = static_cast<int>((p.k + kBK - 1) / kBK);
  auto kernel = gemm_sm90_kernel<kTransA, kTransB, OutT, kBN>;
  static std::atomic<std::uint64_t> opted_in{0};  // devices this kernel may use > 48 KiB on
  impl::opt_in_shared_memory(kernel, Cfg::kSmemBytes, opted_in);
  kernel<<<grid, kThreads, Cfg::kSmemBytes, stream>>>(map_a, map_b, map_d, map_g, k_blocks, order,
                                                      make_epilogue_args(p));
  KILN_LAUNCH_CHECK(stream);
}

// One (kTransA, kTransB) pair per translation unit (gemm_<a><b>_sm90.cu), so the four compile in
// parallel.
template <bool kTransA, bool kTransB>
void launch(const impl::GemmProblem& p, int multiprocessors, cudaStream_t stream) {
  const int bn = choose_bn(p, multiprocessors);
  if (p.cd_f32) {
    if (bn == 256)
      run<kTransA, kTransB, float, 256>(p, multiprocessors, stream);
    else
      run<kTransA, kTransB, float, 128>(p, multiprocessors, stream);
  } else {
    if (bn == 256)
      run<kTransA, kTransB, bf16, 256>(p, multiprocessors, stream);
    else
      run<kTransA, kTransB, bf16, 128>(p, multiprocessors, stream);
  }
}

extern template void launch<false, false>(const impl::GemmProblem&, int, cudaStream_t);
extern template void launch<false, true>(const impl::GemmProblem&, int, cudaStream_t);
extern template void launch<true, false>(const impl::GemmProblem&, int, cudaStream_t);
extern template void launch<true, true>(const impl::GemmProblem&, int, cudaStream_t);

}  // namespace kiln::dev::sm90
