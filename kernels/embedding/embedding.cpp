// The embedding's C ABI: argument checks (before anything touches a device), then the launchers
// of embedding_fwd.cu, embedding_bwd.cu and embedding_sort.cu.
#include "kiln/embedding.h"

#include <cstdint>
#include <limits>

#include "errors/capi.hpp"
#include "errors/check.hpp"
#include "kernels/embedding/embedding.hpp"

namespace kiln::impl {
namespace {

constexpr int64_t kMaxTokens = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxC = int64_t{1} << 20;
// The sort maps bad ids to V, so V itself must be an int32.
constexpr int64_t kMaxV = std::numeric_limits<int32_t>::max() - 1;

// `positions`: the call has a position table (wpe / dwpe), whose maxT rows must cover T; without
// one maxT is not read.
void check_shape(const char* op, int64_t B, int64_t T, int64_t C, int64_t V, int64_t maxT,
                 bool positions) {
  KILN_CHECK_ARG(B >= 0 && T >= 0, op, ": B and T must be >= 0 (got B=", B, ", T=", T, ")");
  KILN_CHECK_ARG(T == 0 || B <= kMaxTokens / T, op, ": B * T must be < 2^31 (got B=", B, ", T=", T,
                 ")");
  KILN_CHECK_ARG(C > 0 && C % 8 == 0 && C <= kMaxC, op,
                 ": C must be a positive multiple of 8 (16-byte vectors), at most 2^20 (got ", C,
                 ")");
  KILN_CHECK_ARG(V >= 1 && V <= kMaxV, op, ": V must be in [1, 2^31 - 1) (got ", V, ")");
  if (!positions) return;
  KILN_CHECK_ARG(maxT >= 1, op, ": maxT must be >= 1 (got ", maxT, ")");
  KILN_CHECK_ARG(T <= maxT, op, ": T (", T, ") must be <= maxT (", maxT,
                 "), the rows of the position table");
}

void check_dtype(kiln_dtype_t dtype, const char* op) {
  KILN_CHECK(dtype != KILN_DTYPE_F32, Status::not_supported, op,
             ": dtype KILN_DTYPE_F32 is not served (activations are bf16)");
  KILN_CHECK_ARG(dtype == KILN_DTYPE_BF16, op, ": unknown dtype ", static_cast<int>(dtype));
}

bool overlaps(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes) {
  const auto pa = reinterpret_cast<std::uintptr_t>(a), pb = reinterpret_cast<std::uintptr_t>(b);
  return pa < pb + static_cast<std::uintptr_t>(b_bytes) &&
         pb < pa + static_cast<std::uintptr_t>(a_bytes);
}

void fwd_checked(void* out, const int32_t* tokens, const void* wte, const void* wpe, int64_t B,
                 int64_t T, int64_t C, int64_t V, int64_t maxT, kiln_dtype_t dtype,
                 cudaStream_t stream) {
  constexpr const char* op = "kiln_embedding_fwd";
  check_shape(op, B, T, C, V, maxT, wpe != nullptr);
  check_dtype(dtype, op);
  if (B * T == 0) return;
  KILN_CHECK_PTR(out, 16, op);
  KILN_CHECK_PTR(tokens, 4, op);
  KILN_CHECK_PTR(wte, 16, op);
  if (wpe) KILN_CHECK_PTR(wpe, 16, op);
  embedding_fwd(static_cast<__nv_bfloat16*>(out), tokens, static_cast<const __nv_bfloat16*>(wte),
                static_cast<const __nv_bfloat16*>(wpe), B, T, C, V, stream);
}

void workspace_checked(int64_t B, int64_t T, int64_t V, size_t* bytes) {
  constexpr const char* op = "kiln_embedding_bwd_workspace_size";
  KILN_CHECK_ARG(bytes != nullptr, op, ": bytes is null");
  *bytes = 0;
  KILN_CHECK_ARG(B >= 0 && T >= 0, op, ": B and T must be >= 0 (got B=", B, ", T=", T, ")");
  KILN_CHECK_ARG(T == 0 || B <= kMaxTokens / T, op, ": B * T must be < 2^31");
  KILN_CHECK_ARG(V >= 1 && V <= kMaxV, op, ": V must be in [1, 2^31 - 1) (got ", V, ")");
  if (B * T == 0) return;
  *bytes = embedding_bwd_workspace(B * T, V).total;
}

void bwd_checked(float* dwte, float* dwpe, const void* dout, const int32_t* tokens, int64_t B,
                 int64_t T, int64_t C, int64_t V, int64_t maxT, void* workspace,
                 size_t workspace_bytes, kiln_dtype_t dtype, cudaStream_t stream) {
  constexpr const char* op = "kiln_embedding_bwd";
  check_shape(op, B, T, C, V, maxT, dwpe != nullptr);
  check_dtype(dtype, op);
  if (B * T == 0) return;
  KILN_CHECK_PTR(dwte, 16, op);
  if (dwpe) KILN_CHECK_PTR(dwpe, 16, op);
  KILN_CHECK_PTR(dout, 16, op);
  KILN_CHECK_PTR(tokens, 4, op);
  KILN_CHECK_PTR(workspace, 256, op);
  KILN_CHECK_ARG(!dwpe || !overlaps(dwte, V * C * 4, dwpe, maxT * C * 4), op,
                 ": dwte and dwpe must not overlap");
  // The size check needs the device (the sort's tuning): it comes after every other check.
  const EmbeddingBwdWorkspace layout = embedding_bwd_workspace(B * T, V);
  KILN_CHECK_ARG(workspace_bytes >= layout.total, op, ": workspace_bytes (", workspace_bytes,
                 ") is less than the ", layout.total,
                 " bytes kiln_embedding_bwd_workspace_size asks for");
  embedding_bwd(dwte, dwpe, static_cast<const __nv_bfloat16*>(dout), tokens, B, T, C, V, workspace,
                layout, stream);
}

}  // namespace
}  // namespace kiln::impl

extern "C" {

kiln_status_t kiln_embedding_fwd(void* out, const int32_t* tokens, const void* wte, const void* wpe,
                                 int64_t B, int64_t T, int64_t C, int64_t V, int64_t maxT,
                                 kiln_dtype_t dtype, cudaStream_t stream) {
  return kiln::impl::capi_guard(
      [&] { kiln::impl::fwd_checked(out, tokens, wte, wpe, B, T, C, V, maxT, dtype, stream); });
}

kiln_status_t kiln_embedding_bwd_workspace_size(int64_t B, int64_t T, int64_t V, size_t* bytes) {
  return kiln::impl::capi_guard([&] { kiln::impl::workspace_checked(B, T, V, bytes); });
}

kiln_status_t kiln_embedding_bwd(float* dwte, float* dwpe, const void* dout, const int32_t* tokens,
                                 int64_t B, int64_t T, int64_t C, int64_t V, int64_t maxT,
                                 void* workspace, size_t workspace_bytes, kiln_dtype_t dtype,
                                 cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    kiln::impl::bwd_checked(dwte, dwpe, dout, tokens, B, T, C, V, maxT, workspace, workspace_bytes,
                            dtype, stream);
  });
}

}  // extern "C"
