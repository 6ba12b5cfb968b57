#include "kernels/common/tma.hpp"

#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_runtime_api.h>

#include <array>
#include <mutex>

#include "errors/check.hpp"

namespace kiln::impl {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  static cudaError_t error = cudaSuccess;
  static cudaDriverEntryPointQueryResult query = cudaDriverEntryPointSuccess;
  std::call_once(once, [] {
    void* p = nullptr;
    error = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                             &query);
    if (error == cudaSuccess && query == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
    cudaGetLastError();  // leave no sticky error for a later launch check
  });
  if (error != cudaSuccess)
    throw_cuda_error(error, "cudaGetDriverEntryPointByVersion", __FILE__, __LINE__);
  KILN_CHECK(fn != nullptr, Status::not_supported,
             "the CUDA driver does not provide cuTensorMapEncodeTiled (query result ",
             static_cast<int>(query), "): TMA needs a CUDA 12 driver");
  return fn;
}

}  // namespace

void encode_tensor_map_2d(CUtensorMap* map, const TensorMap2d& g) {
  const cuuint64_t dims[2] = {g.inner, g.outer};
  const cuuint64_t strides[1] = {g.row_stride};  // the innermost stride is the element size
  const cuuint32_t box[2] = {g.box_inner, g.box_outer};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = encoder()(map, g.dtype, 2, const_cast<void*>(g.base), dims, strides, box,
                               element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, g.swizzle,
                               g.l2_promotion, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  KILN_CHECK_ARG(r == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed (CUresult ", static_cast<int>(r),
                 ") for base ", g.base, ", ", g.inner, " x ", g.outer, " elements, row stride ",
                 g.row_stride, " bytes, box ", g.box_inner, " x ", g.box_outer);
}

namespace {

bool same_geometry(const TensorMap2d& a, const TensorMap2d& b) {
  return a.base == b.base && a.dtype == b.dtype && a.inner == b.inner && a.outer == b.outer &&
         a.row_stride == b.row_stride && a.box_inner == b.box_inner && a.box_outer == b.box_outer &&
         a.swizzle == b.swizzle && a.l2_promotion == b.l2_promotion;
}

}  // namespace

void encode_tensor_map_2d_cached(CUtensorMap* map, const TensorMap2d& g) {
  struct Entry {
    TensorMap2d geometry;
    CUtensorMap map;
    bool used = false;
  };
  constexpr int kEntries = 64;  // a model's GEMMs times their 3-4 operands, roughly
  thread_local std::array<Entry, kEntries> cache;
  thread_local int next = 0;
  for (const Entry& e : cache)
    if (e.used && same_geometry(e.geometry, g)) {
      *map = e.map;
      return;
    }
  encode_tensor_map_2d(map, g);
  Entry& slot = cache[next];
  next = (next + 1) % kEntries;
  slot.geometry = g;
  slot.map = *map;
  slot.used = true;
}

void encode_tensor_map(CUtensorMap* map, CUtensorMapDataType dtype, int rank, const void* base,
                       const std::uint64_t* dims, const std::uint64_t* strides_bytes,
                       const std::uint32_t* box, CUtensorMapSwizzle swizzle) {
  KILN_CHECK_ARG(rank >= 1 && rank <= 5, "tensor map rank ", rank, " is outside 1..5");
  cuuint64_t d[5], st[4];
  cuuint32_t b[5], es[5];
  for (int i = 0; i < rank; ++i) {
    d[i] = dims[i];
    b[i] = box[i];
    es[i] = 1;
    if (i + 1 < rank) st[i] = strides_bytes[i];
  }
  const CUresult r =
      encoder()(map, dtype, static_cast<cuuint32_t>(rank), const_cast<void*>(base), d, st, b, es,
                CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  KILN_CHECK_ARG(r == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed (CUresult ", static_cast<int>(r),
                 ") for a rank-", rank, " map at ", base, ", dims[0] ", dims[0], ", box[0] ",
                 box[0]);
}

}  // namespace kiln::impl
