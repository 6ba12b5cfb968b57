// Softmax forward (scale, optional causal mask), bf16 and fp32.
#include <cuda_bf16.h>

#include "kernels/common/row_launch.cuh"
#include "kernels/softmax/softmax.hpp"
#include "kernels/softmax/softmax_kernels.cuh"

namespace kiln::impl {
namespace {

namespace softmax = dev::softmax;

template <typename T>
void fwd(void* y, const void* x, std::int64_t N, std::int64_t C, float scale, bool causal,
         cudaStream_t stream) {
  softmax::FwdParams<T> p{};
  p.y = static_cast<T*>(y);
  p.x = static_cast<const T*>(x);
  p.N = N;
  p.C = static_cast<int>(C);
  p.scale_log2 = scale * softmax::kLog2e;
  p.causal = causal;
  launch_rows<T>(
      p,
      [](auto lanes, auto packs) {
        return softmax::softmax_fwd_kernel<T, decltype(lanes)::value, decltype(packs)::value>;
      },
      softmax::softmax_fwd_generic_kernel<T>, softmax::kGenericThreads, stream);
}

}  // namespace

void softmax_fwd(kiln_dtype_t dtype, void* y, const void* x, std::int64_t N, std::int64_t C,
                 float scale, bool causal, cudaStream_t stream) {
  if (dtype == KILN_DTYPE_BF16) {
    fwd<__nv_bfloat16>(y, x, N, C, scale, causal, stream);
  } else {
    fwd<float>(y, x, N, C, scale, causal, stream);
  }
}

}  // namespace kiln::impl
