// Host-side TMA descriptors (CUtensorMap) for the sm_90a kernels. The encoder is the driver's
// cuTensorMapEncodeTiled, reached through cudaGetDriverEntryPointByVersion: kiln never links
// libcuda, so programs still load (and report "no device") where no driver is installed.
#pragma once

#include <cuda.h>  // CUtensorMap and its enums (types only; nothing from libcuda is linked)

#include <cstdint>

namespace kiln::impl {

struct TensorMap2d {
  const void* base = nullptr;  // 16-byte aligned
  CUtensorMapDataType dtype = CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  std::uint64_t inner = 0;       // elements along the contiguous dimension
  std::uint64_t outer = 0;       // rows
  std::uint64_t row_stride = 0;  // bytes between rows; a multiple of 16
  std::uint32_t box_inner = 0;   // box elements along the contiguous dimension
  std::uint32_t box_outer = 0;   // box rows (<= 256)
  CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B;  // box_inner * element <= 128 bytes
  CUtensorMapL2promotion l2_promotion = CU_TENSOR_MAP_L2_PROMOTION_L2_256B;
};

// Encodes a 2-D tiled tensor map whose out-of-bounds elements read as zeros. Throws kiln::Error
// (invalid_argument for a geometry the driver rejects, not_supported without the driver entry).
void encode_tensor_map_2d(CUtensorMap* map, const TensorMap2d& geometry);

// The same through a small per-thread cache of recent encodings (a training step launches the
// same GEMMs on the same buffers every iteration; encoding is pure host work, so a hit is exact).
void encode_tensor_map_2d_cached(CUtensorMap* map, const TensorMap2d& geometry);

// A tiled tensor map of rank 1..5 (e.g. attention's (HD, T, NH, B) views of strided tensors):
// dims[0] is the contiguous dimension; strides_bytes[i] is the stride of dims[i + 1] (rank - 1
// entries, multiples of 16); box[i] elements per dimension (box[0] * element <= 128 bytes with the
// 128-byte swizzle). Out-of-bounds elements read as zeros. Throws as encode_tensor_map_2d.
void encode_tensor_map(CUtensorMap* map, CUtensorMapDataType dtype, int rank, const void* base,
                       const std::uint64_t* dims, const std::uint64_t* strides_bytes,
                       const std::uint32_t* box, CUtensorMapSwizzle swizzle);

}  // namespace kiln::impl
