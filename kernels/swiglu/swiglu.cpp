// SwiGLU's C ABI: argument checks, then the launchers (swiglu.cu).
#include "kiln/swiglu.h"

#include <limits>

#include "errors/capi.hpp"
#include "kernels/common/row_args.hpp"
#include "kernels/swiglu/swiglu.hpp"

namespace kiln::impl {
namespace {

void check_shape(const char* op, std::int64_t N, std::int64_t I) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int32_t>::max();
  KILN_CHECK_ARG(N >= 0 && N <= kMax, op, ": N must be in [0, 2^31 - 1] (got ", N, ")");
  KILN_CHECK_ARG(I >= 1 && I <= kMax, op, ": I must be in [1, 2^31 - 1] (got ", I, ")");
  KILN_CHECK_ARG(N <= std::numeric_limits<std::int64_t>::max() / 16 / I, op, ": N * 2I = ", N,
                 " * 2 * ", I, " elements is too many");
}

}  // namespace
}  // namespace kiln::impl

extern "C" {

kiln_status_t kiln_swiglu_fwd(void* out, const void* gu, int64_t N, int64_t I, kiln_dtype_t dtype,
                              cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_swiglu_fwd";
    args::check_dtype(op, dtype);
    check_shape(op, N, I);
    args::check_tensor(op, "out", out);
    args::check_tensor(op, "gu", gu);
    const std::size_t out_bytes = static_cast<std::size_t>(N * I) * args::dtype_size(dtype);
    args::check_disjoint(op, "out", out, out_bytes, "gu", gu, 2 * out_bytes);
    swiglu_fwd(dtype, out, gu, N, I, stream);
  });
}

kiln_status_t kiln_swiglu_bwd(void* dgu, const void* dout, const void* gu, int64_t N, int64_t I,
                              kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    using namespace kiln::impl;
    constexpr const char* op = "kiln_swiglu_bwd";
    args::check_dtype(op, dtype);
    check_shape(op, N, I);
    args::check_tensor(op, "dgu", dgu);
    args::check_tensor(op, "dout", dout);
    args::check_tensor(op, "gu", gu);
    const std::size_t half_bytes = static_cast<std::size_t>(N * I) * args::dtype_size(dtype);
    // dgu may be gu exactly (each thread reads its gate and up before writing them), not a
    // shifted view, which would let one thread's write land on another's unread input.
    if (dgu != gu) args::check_disjoint(op, "dgu", dgu, 2 * half_bytes, "gu", gu, 2 * half_bytes);
    args::check_disjoint(op, "dgu", dgu, 2 * half_bytes, "dout", dout, half_bytes);
    swiglu_bwd(dtype, dgu, dout, gu, N, I, stream);
  });
}

}  // extern "C"
