// Softmax backward, bf16 and fp32.
#include <cuda_bf16.h>

#include "kernels/common/row_launch.cuh"
#include "kernels/softmax/softmax.hpp"
#include "kernels/softmax/softmax_kernels.cuh"

namespace kiln::impl {
namespace {

namespace softmax = dev::softmax;

template <typename T>
void bwd(void* dx, const void* dy, const void* y, std::int64_t N, std::int64_t C, float scale,
         cudaStream_t stream) {
  softmax::BwdParams<T> p{};
  p.dx = static_cast<T*>(dx);
  p.dy = static_cast<const T*>(dy);
  p.y = static_cast<const T*>(y);
  p.N = N;
  p.C = static_cast<int>(C);
  p.scale = scale;
  launch_rows<T>(
      p,
      [](auto lanes, auto packs) {
        return softmax::softmax_bwd_kernel<T, decltype(lanes)::value, decltype(packs)::value>;
      },
      softmax::softmax_bwd_generic_kernel<T>, softmax::kGenericThreads, stream);
}

}  // namespace

void softmax_bwd(kiln_dtype_t dtype, void* dx, const void* dy, const void* y, std::int64_t N,
                 std::int64_t C, float scale, cudaStream_t stream) {
  if (dtype == KILN_DTYPE_BF16) {
    bwd<__nv_bfloat16>(dx, dy, y, N, C, scale, stream);
  } else {
    bwd<float>(dx, dy, y, N, C, scale, stream);
  }
}

}  // namespace kiln::impl
