// The fused classifier's C ABI: argument checks (before anything touches a device), then the
// launchers of classifier_fwd_bwd.cu and classifier_mean.cu.
#include "kiln/classifier.h"

#include <cstdint>
#include <limits>

#include "errors/capi.hpp"
#include "errors/check.hpp"
#include "kernels/classifier/classifier.hpp"

namespace kiln::impl {
namespace {

constexpr int64_t kMaxRows = std::numeric_limits<int32_t>::max();
// Row offsets in 16-byte units stay in int32 inside the kernel.
constexpr int64_t kMaxRowLength = std::numeric_limits<int32_t>::max() - 64;

bool overlaps(const void* a, const void* b, int64_t bytes) {
  const auto pa = reinterpret_cast<std::uintptr_t>(a), pb = reinterpret_cast<std::uintptr_t>(b);
  return pa < pb + static_cast<std::uintptr_t>(bytes) &&
         pb < pa + static_cast<std::uintptr_t>(bytes);
}

void check_dtype(kiln_dtype_t dtype, const char* op) {
  KILN_CHECK(dtype != KILN_DTYPE_F32, Status::not_supported, op,
             ": dtype KILN_DTYPE_F32 is not served (logits are bf16)");
  KILN_CHECK_ARG(dtype == KILN_DTYPE_BF16, op, ": unknown dtype ", static_cast<int>(dtype));
}

void classifier_fwd_bwd_checked(float* losses, void* dlogits, const void* logits,
                                const int32_t* targets, int64_t N, int64_t V, int64_t Vp,
                                float dloss, int32_t ignore_index, kiln_dtype_t dtype,
                                cudaStream_t stream) {
  constexpr const char* op = "kiln_classifier_fwd_bwd";
  KILN_CHECK_ARG(N >= 0 && N <= kMaxRows, op, ": N must be in [0, 2^31) (got ", N, ")");
  KILN_CHECK_ARG(V >= 1, op, ": V must be >= 1 (got ", V, ")");
  KILN_CHECK_ARG(Vp >= V, op, ": the row stride Vp (", Vp, ") must be >= V (", V, ")");
  KILN_CHECK_ARG(Vp <= kMaxRowLength, op, ": Vp must be < 2^31 - 64 (got ", Vp, ")");
  check_dtype(dtype, op);
  if (N == 0) return;
  KILN_CHECK_PTR(losses, 4, op);
  KILN_CHECK_PTR(logits, 16, op);
  KILN_CHECK_PTR(dlogits, 16, op);
  KILN_CHECK_PTR(targets, 4, op);
  KILN_CHECK_ARG(dlogits == logits || !overlaps(dlogits, logits, N * Vp * 2), op,
                 ": dlogits must either equal logits (in place) or not overlap it");
  classifier_fwd_bwd(losses, static_cast<__nv_bfloat16*>(dlogits),
                     static_cast<const __nv_bfloat16*>(logits), targets, N, V, Vp, dloss,
                     ignore_index, stream);
}

void classifier_mean_loss_checked(float* mean, const float* losses, const int32_t* targets,
                                  int64_t N, int32_t ignore_index, cudaStream_t stream) {
  constexpr const char* op = "kiln_classifier_mean_loss";
  KILN_CHECK_ARG(N >= 0 && N <= kMaxRows, op, ": N must be in [0, 2^31) (got ", N, ")");
  KILN_CHECK_PTR(mean, 4, op);
  if (N > 0) {
    KILN_CHECK_PTR(losses, 4, op);
    KILN_CHECK_PTR(targets, 4, op);
  }
  classifier_mean_loss(mean, losses, targets, N, ignore_index, stream);
}

}  // namespace
}  // namespace kiln::impl

extern "C" {

kiln_status_t kiln_classifier_fwd_bwd(float* losses, void* dlogits, const void* logits,
                                      const int32_t* targets, int64_t N, int64_t V, int64_t Vp,
                                      float dloss, int32_t ignore_index, kiln_dtype_t dtype,
                                      cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    kiln::impl::classifier_fwd_bwd_checked(losses, dlogits, logits, targets, N, V, Vp, dloss,
                                           ignore_index, dtype, stream);
  });
}

kiln_status_t kiln_classifier_mean_loss(float* mean, const float* losses, const int32_t* targets,
                                        int64_t N, int32_t ignore_index, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    kiln::impl::classifier_mean_loss_checked(mean, losses, targets, N, ignore_index, stream);
  });
}

}  // extern "C"
