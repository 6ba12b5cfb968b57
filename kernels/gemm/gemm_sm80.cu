// The portable hand-written GEMM (sm_80 and newer): mma.sync m16n8k16 bf16 -> fp32, operands
// staged through a 4-stage cp.async pipeline and read with ldmatrix, the epilogue applied in
// registers and stored straight to global memory.
//
// CTA tile 128 x 128 x 32, 8 warps as 2 (M) x 4 (N), each warp 64 x 32 = 4 x 4 mma tiles.
// Shared tiles come in two shapes, by which dimension is contiguous in global memory:
//   K-contiguous  [128 rows][32 k]   64-byte rows, 4 chunks of 16 bytes;  chunk c of row r sits at
//                                     c ^ ((r / 2) % 4) so the 8 rows one ldmatrix reads fall in 8
//                                     different bank groups;
//   MN-contiguous [32 k][128 cols]   256-byte rows, 16 chunks; chunk c of row r at c ^ (r % 8).
// A is K-contiguous unless trans_a; B is K-contiguous when trans_b (W (N, K)). ldmatrix reads
// K-contiguous tiles as they are and MN-contiguous ones with .trans, which yields the same
// fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16").
//
// Edges: rows and columns past M, N, K are zero-filled by cp.async (src-size < 16), so partial
// tiles need no special path; the epilogue checks row < M and col < N per element pair.
// bias_grad: the CTAs of the first column of tiles multiply their A fragments by a B fragment of
// ones (one extra mma per m16 tile and k step), which yields each row's sum of op(A) in fp32 in
// the same fragment layout, written by the one thread owning the row: no atomics.
#include <cuda_bf16.h>

#include <atomic>
#include <cstdint>

#include "errors/check.hpp"
#include "kernels/common/sm80.cuh"
#include "kernels/gemm/gemm.hpp"
#include "kernels/gemm/gemm_epilogue.cuh"
#include "kernels/gemm/gemm_sm80_layout.hpp"

namespace kiln::dev {
namespace {

using namespace kiln::dev::sm80;
constexpr int kSmemBytes = kStages * 2 * kTileBytes;
constexpr int kGroupM = 8;  // tile rows per L2 group (see tile_coords)

// Copies the (rows x 32-k) slice starting at (row0, k0) of a K-contiguous global matrix
// (rows_total x k_total, row stride ld) into a K-contiguous tile; 2 chunks per thread.
__device__ __forceinline__ void load_k_tile(char* tile, const bf16* g, std::int64_t ld,
                                            std::int64_t rows_total, std::int64_t k_total,
                                            std::int64_t row0, std::int64_t k0) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const RowChunk rc = k_tile_copy(threadIdx.x, i);
    const std::int64_t row = row0 + rc.row, k = k0 + rc.chunk * 8;
    const std::int64_t left = row < rows_total ? k_total - k : 0;
    const int bytes = left <= 0 ? 0 : (left >= 8 ? 16 : static_cast<int>(left) * 2);
    const bf16* src = bytes ? g + row * ld + k : g;
    cp_async_16_zfill(tile + k_tile_chunk(rc.row, rc.chunk), src, bytes);
  }
}

// Copies the (32-k x 128 cols) slice at (k0, col0) of an MN-contiguous global matrix
// (k_total x cols_total, row stride ld) into an MN-contiguous tile.
__device__ __forceinline__ void load_mn_tile(char* tile, const bf16* g, std::int64_t ld,
                                             std::int64_t k_total, std::int64_t cols_total,
                                             std::int64_t k0, std::int64_t col0) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const RowChunk rc = mn_tile_copy(threadIdx.x, i);
    const std::int64_t k = k0 + rc.row, col = col0 + rc.chunk * 8;
    const std::int64_t left = k < k_total ? cols_total - col : 0;
    const int bytes = left <= 0 ? 0 : (left >= 8 ? 16 : static_cast<int>(left) * 2);
    const bf16* src = bytes ? g + k * ld + col : g;
    cp_async_16_zfill(tile + mn_tile_chunk(rc.row, rc.chunk), src, bytes);
  }
}

// The A fragment (16 x 16 at rows m0.., k kk..) for mma.m16n8k16 from either tile shape.
template <bool kMnMajor>
__device__ __forceinline__ void load_a_frag(std::uint32_t (&a)[4], const char* tile, int m0,
                                            int kk) {
  const char* p = tile + a_frag_addr(kMnMajor, threadIdx.x & 31, m0, kk);
  if constexpr (kMnMajor)
    ldmatrix_x4_trans(a, p);
  else
    ldmatrix_x4(a, p);
}

// B fragments of two adjacent n8 tiles (cols n0..n0+15, k kk..kk+15): b[0..1] for n0, b[2..3]
// for n0 + 8.
template <bool kMnMajor>
__device__ __forceinline__ void load_b_frag(std::uint32_t (&b)[4], const char* tile, int n0,
                                            int kk) {
  const char* p = tile + b_frag_addr(kMnMajor, threadIdx.x & 31, n0, kk);
  if constexpr (kMnMajor)
    ldmatrix_x4_trans(b, p);
  else
    ldmatrix_x4(b, p);
}

// Tiles in groups of kGroupM tile rows, column by column inside a group: consecutive CTAs share
// B columns and a few A rows, so both stay in L2.
__device__ __forceinline__ void tile_coords(int tiles_m, int tiles_n, int& tm, int& tn) {
  const int id = blockIdx.x;
  const int per_group = kGroupM * tiles_n;
  const int group = id / per_group;
  const int first_m = group * kGroupM;
  const int rows = min(tiles_m - first_m, kGroupM);
  tm = first_m + (id % per_group) % rows;
  tn = (id % per_group) / rows;
}

template <bool kTransA, bool kTransB, typename OutT>
__global__ void __launch_bounds__(kThreads, 2)
    gemm_sm80_kernel(const bf16* __restrict__ A, std::int64_t lda, const bf16* __restrict__ B,
                     std::int64_t ldb, std::int64_t K, GemmEpilogueArgs e) {
  extern __shared__ __align__(128) char smem[];
  const int tiles_m = static_cast<int>((e.m + kBM - 1) / kBM);
  const int tiles_n = static_cast<int>((e.n + kBN - 1) / kBN);
  int tm, tn;
  tile_coords(tiles_m, tiles_n, tm, tn);
  const std::int64_t m0 = std::int64_t{tm} * kBM, n0 = std::int64_t{tn} * kBN;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wr = warp_row0(warp), wc = warp_col0(warp);  // this warp's 64 x 32 block
  const bool row_sums = (e.bits & kEpiBiasGrad) && tn == 0 && wc == 0;

  auto a_tile = [&](int s) { return smem + s * 2 * kTileBytes; };
  auto b_tile = [&](int s) { return smem + s * 2 * kTileBytes + kTileBytes; };
  auto load_stage = [&](int s, std::int64_t k0) {
    if constexpr (kTransA)
      load_mn_tile(a_tile(s), A, lda, K, e.m, k0, m0);
    else
      load_k_tile(a_tile(s), A, lda, e.m, K, m0, k0);
    if constexpr (kTransB)
      load_k_tile(b_tile(s), B, ldb, e.n, K, n0, k0);
    else
      load_mn_tile(b_tile(s), B, ldb, K, e.n, k0, n0);
  };

  float acc[4][4][4];
  float sums[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      sums[i][j] = 0.0f;
#pragma unroll
      for (int v = 0; v < 4; ++v)
        acc[i][j][v] = 0.0f;
    }
  const std::uint32_t ones[2] = {0x3F803F80u, 0x3F803F80u};  // bf16x2 (1.0, 1.0)

  const int k_blocks = static_cast<int>((K + kBK - 1) / kBK);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_blocks) load_stage(s, std::int64_t{s} * kBK);
    cp_async_commit();
  }
  for (int kb = 0; kb < k_blocks; ++kb) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kb landed for everyone; stage kb - 1 is free for reuse
    const int next = kb + kStages - 1;
    if (next < k_blocks) load_stage(next % kStages, std::int64_t{next} * kBK);
    cp_async_commit();

    const char* at = a_tile(kb % kStages);
    const char* bt = b_tile(kb % kStages);
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      // B's fragments first, then A's one m16 tile at a time: 12 fragment registers live at
      // once instead of 24 keeps every layout within 128 registers (2 CTAs per SM).
      std::uint32_t bf[2][4];
#pragma unroll
      for (int j = 0; j < 2; ++j)
        load_b_frag<!kTransB>(bf[j], bt, wc + j * 16, kk);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        std::uint32_t af[4];
        load_a_frag<kTransA>(af, at, wr + i * 16, kk);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const std::uint32_t b2[2] = {bf[j >> 1][(j & 1) * 2], bf[j >> 1][(j & 1) * 2 + 1]};
          mma_m16n8k16_bf16(acc[i][j], af, b2);
        }
        if (row_sums) mma_m16n8k16_bf16(sums[i], af, ones);
      }
    }
  }
  cp_async_wait<0>();

  // Epilogue: accumulator v of mma tile (i, j) sits at (acc_row, acc_col) of the warp's block;
  // v = 0, 1 and v = 2, 3 are column pairs.
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const std::int64_t row = m0 + wr + acc_row(lane, i, 2 * h);
      if (row >= e.m) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const std::int64_t col = n0 + wc + acc_col(lane, j, 2 * h);
        if (col >= e.n) continue;
        float v0 = acc[i][j][2 * h], v1 = acc[i][j][2 * h + 1], g0 = 0, g1 = 0;
        epilogue_pair<OutT>(e, row, col, v0, v1, g0, g1);
        const bool both = col + 1 < e.n;
        store_pair(static_cast<OutT*>(e.d) + row * e.ldd + col, both, v0, v1);
        if (e.bits & kEpiGelu) store_pair(e.pre_gelu_out + row * e.ld_pre_gelu + col, both, g0, g1);
      }
      // Column 0 of the ones product holds the row sum: the lanes with acc_col == 0 write it.
      if (row_sums && acc_col(lane, 0, 2 * h) == 0) bias_grad_add<OutT>(e, row, sums[i][2 * h]);
    }
  }
}

template <bool kTransA, bool kTransB, typename OutT>
void launch(const impl::GemmProblem& p, cudaStream_t stream) {
  auto kernel = gemm_sm80_kernel<kTransA, kTransB, OutT>;
  static std::atomic<std::uint64_t> opted_in{0};  // devices this kernel may use > 48 KiB on
  impl::opt_in_shared_memory(kernel, kSmemBytes, opted_in);
  const std::int64_t tiles = ((p.m + kBM - 1) / kBM) * ((p.n + kBN - 1) / kBN);
  KILN_CHECK(tiles <= 0x7FFFFFFF, Status::not_supported,
             "kiln_gemm: the sm80 kernel cannot launch ", tiles, " tiles");
  kernel<<<static_cast<unsigned>(tiles), kThreads, kSmemBytes, stream>>>(
      static_cast<const bf16*>(p.a), p.lda, static_cast<const bf16*>(p.b), p.ldb, p.k,
      make_epilogue_args(p));
  KILN_LAUNCH_CHECK(stream);
}

template <bool kTransA, bool kTransB>
void launch_out(const impl::GemmProblem& p, cudaStream_t stream) {
  if (p.cd_f32)
    launch<kTransA, kTransB, float>(p, stream);
  else
    launch<kTransA, kTransB, bf16>(p, stream);
}

}  // namespace
}  // namespace kiln::dev

namespace kiln::impl {

void gemm_sm80(const GemmProblem& p, cudaStream_t stream) {
  if (p.trans_a)
    p.trans_b ? dev::launch_out<true, true>(p, stream) : dev::launch_out<true, false>(p, stream);
  else
    p.trans_b ? dev::launch_out<false, true>(p, stream) : dev::launch_out<false, false>(p, stream);
}

}  // namespace kiln::impl
