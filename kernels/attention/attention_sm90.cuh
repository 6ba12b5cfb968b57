// Pieces shared by the sm_90a attention kernels (attention_fwd_sm90.cu, attention_bwd_sm90.cu):
// the TMA views of the strided (B, T, NH, HD) tensors and the wgmma descriptors of their tiles
// (their mbarrier rings are kernels/common/sm90_pipeline.cuh). Include only from files built for
// sm_90a.
//
// Tile layout: a tile of R rows x HD bf16 columns lives in shared memory as HD / 64 column blocks,
// each R rows of 128 bytes in TMA's 128-byte swizzle (8-row, 1024-byte atoms), block c at byte
// c * R * 128. Every tile starts 1024-byte aligned.
#pragma once

#include <cstdint>

#include "kernels/attention/attention.hpp"
#include "kernels/attention/attention_sm90_layout.hpp"
#include "kernels/common/sm90.cuh"
#include "kernels/common/sm90_pipeline.cuh"
#include "kernels/common/tma.hpp"

namespace kiln::attn {

// wgmma descriptor of a tile of `rows` rows used K-major (a row is one M / N index, the K index
// runs along it) at k-step kk; offsets and byte strides in attention_sm90_layout.hpp.
__device__ __forceinline__ std::uint64_t desc_kmajor(const unsigned char* tile, int rows, int kk) {
  return dev::wgmma_desc_sw128(tile + sm90::kmajor_offset(rows, kk), sm90::kKmajorLbo, sm90::kSbo);
}

// wgmma descriptor of a tile of `rows` rows used M/N-major (a row is one K index, the M / N index
// runs along it) at k-step kk.
__device__ __forceinline__ std::uint64_t desc_mn(const unsigned char* tile, int rows, int kk) {
  return dev::wgmma_desc_sw128(tile + sm90::mn_offset(kk), sm90::mn_lbo(rows), sm90::kSbo);
}

// A descriptor moved by `bytes` within shared memory: its low 14 bits are the start address / 16,
// so the offset of a later k-step from k-step 0 is added directly.
__device__ __forceinline__ std::uint64_t desc_add(std::uint64_t desc, std::uint32_t bytes) {
  return desc + (bytes >> 4);
}
// Hides a value's origin from the compiler, so what derives from it is computed where it is used
// rather than hoisted out of the loop and kept in registers for its whole length.
__device__ __forceinline__ std::uint64_t opaque(std::uint64_t x) {
  asm volatile("" : "+l"(x));
  return x;
}

// A 4-D tensor map (HD, T, NH, B) over a strided bf16 tensor, boxes of 64 x box_rows: rows past T
// read as zeros, so ragged tiles need no other care.
inline void make_attention_map(CUtensorMap* map, const impl::bf16* base, int HD, int T, int NH,
                               int B, const impl::AttnStrides& s, int box_rows) {
  const std::uint64_t dims[4] = {static_cast<std::uint64_t>(HD), static_cast<std::uint64_t>(T),
                                 static_cast<std::uint64_t>(NH), static_cast<std::uint64_t>(B)};
  const std::uint64_t strides[3] = {static_cast<std::uint64_t>(s.t) * 2,
                                    static_cast<std::uint64_t>(s.h) * 2,
                                    static_cast<std::uint64_t>(s.b) * 2};
  const std::uint32_t box[4] = {64, static_cast<std::uint32_t>(box_rows), 1, 1};
  impl::encode_tensor_map(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, base, dims, strides, box,
                          CU_TENSOR_MAP_SWIZZLE_128B);
}

}  // namespace kiln::attn
