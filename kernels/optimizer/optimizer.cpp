// The optimizer ops' C ABI: table preparation (host only), argument checks (before anything
// touches a device), then the launchers of adamw.cu and global_norm.cu.
#include <cmath>
#include <cstdint>
#include <limits>

#include "errors/capi.hpp"
#include "errors/check.hpp"
#include "kernels/optimizer/optimizer.hpp"
#include "kiln/optimizer.h"

namespace kiln::impl {
namespace {

constexpr int64_t kChunk = KILN_MULTI_TENSOR_CHUNK;
constexpr int64_t kMaxChunks = std::numeric_limits<int32_t>::max();

// Rounds up without n + kChunk - 1, which overflows for n near INT64_MAX.
int64_t chunks_of(int64_t n) {
  return n / kChunk + (n % kChunk != 0 ? 1 : 0);
}

void check_table_args(const void* tensors, int count, const int64_t* total_chunks, const char* op) {
  KILN_CHECK_ARG(tensors != nullptr, op, ": tensors is null");
  KILN_CHECK_ARG(count >= 1, op, ": count must be >= 1 (got ", count, ")");
  KILN_CHECK_ARG(total_chunks != nullptr, op, ": total_chunks is null");
}

void adamw_prepare_checked(kiln_adamw_tensor_t* tensors, int count, int64_t* total_chunks) {
  constexpr const char* op = "kiln_adamw_prepare";
  check_table_args(tensors, count, total_chunks, op);
  int64_t total = 0;
  for (int i = 0; i < count; ++i) {
    const kiln_adamw_tensor_t& t = tensors[i];
    KILN_CHECK_ARG(t.n >= 0, op, ": tensors[", i, "].n must be >= 0 (got ", t.n, ")");
    KILN_CHECK_ARG(t.reserved == 0, op, ": tensors[", i, "].reserved must be 0");
    if (t.n > 0) {
      const auto check_ptr = [&](const void* p, std::size_t align, const char* name) {
        KILN_CHECK_ARG(p != nullptr, op, ": tensors[", i, "].", name, " is null");
        KILN_CHECK_ARG(is_aligned(p, align), op, ": tensors[", i, "].", name, " (", p, ") is not ",
                       align, "-byte aligned");
      };
      check_ptr(t.master, 16, "master");
      check_ptr(t.m, 16, "m");
      check_ptr(t.v, 16, "v");
      check_ptr(t.grad, 16, "grad");
      if (t.param) check_ptr(t.param, 8, "param");
    }
    KILN_CHECK_ARG(chunks_of(t.n) <= kMaxChunks - total, op, ": more than 2^31 - 1 chunks of ",
                   kChunk, " elements in all");
    total += chunks_of(t.n);
  }
  // Fill chunk_begin only once every entry has passed, so a failed call changes nothing.
  int64_t begin = 0;
  for (int i = 0; i < count; ++i) {
    tensors[i].chunk_begin = begin;
    begin += chunks_of(tensors[i].n);
  }
  *total_chunks = total;
}

void global_norm_prepare_checked(kiln_norm_tensor_t* tensors, int count, int64_t* total_chunks) {
  constexpr const char* op = "kiln_global_norm_prepare";
  check_table_args(tensors, count, total_chunks, op);
  int64_t total = 0;
  for (int i = 0; i < count; ++i) {
    const kiln_norm_tensor_t& t = tensors[i];
    KILN_CHECK_ARG(t.n >= 0, op, ": tensors[", i, "].n must be >= 0 (got ", t.n, ")");
    if (t.n > 0) {
      KILN_CHECK_ARG(t.data != nullptr, op, ": tensors[", i, "].data is null");
      KILN_CHECK_ARG(is_aligned(t.data, 16), op, ": tensors[", i, "].data (",
                     static_cast<const void*>(t.data), ") is not 16-byte aligned");
    }
    KILN_CHECK_ARG(chunks_of(t.n) <= kMaxChunks - total, op, ": more than 2^31 - 1 chunks of ",
                   kChunk, " elements in all");
    total += chunks_of(t.n);
  }
  int64_t begin = 0;
  for (int i = 0; i < count; ++i) {
    tensors[i].chunk_begin = begin;
    begin += chunks_of(tensors[i].n);
  }
  *total_chunks = total;
}

void adamw_step_checked(const kiln_adamw_tensor_t* tensors, int count, int64_t total_chunks,
                        const kiln_adamw_config_t* config, const float* grad_scale,
                        cudaStream_t stream) {
  constexpr const char* op = "kiln_adamw_step";
  KILN_CHECK_PTR(tensors, 8, op);
  KILN_CHECK_ARG(count >= 1, op, ": count must be >= 1 (got ", count, ")");
  KILN_CHECK_ARG(total_chunks >= 0 && total_chunks <= kMaxChunks, op,
                 ": total_chunks must be in [0, 2^31) (got ", total_chunks, ")");
  KILN_CHECK_ARG(config != nullptr, op, ": config is null");
  const kiln_adamw_config_t& c = *config;
  KILN_CHECK_ARG(std::isfinite(c.lr) && c.lr >= 0, op, ": lr must be finite and >= 0 (got ", c.lr,
                 ")");
  KILN_CHECK_ARG(c.beta1 >= 0 && c.beta1 < 1, op, ": beta1 must be in [0, 1) (got ", c.beta1, ")");
  KILN_CHECK_ARG(c.beta2 >= 0 && c.beta2 < 1, op, ": beta2 must be in [0, 1) (got ", c.beta2, ")");
  KILN_CHECK_ARG(std::isfinite(c.eps) && c.eps > 0, op, ": eps must be finite and > 0 (got ", c.eps,
                 ")");
  KILN_CHECK_ARG(std::isfinite(c.weight_decay) && c.weight_decay >= 0, op,
                 ": weight_decay must be finite and >= 0 (got ", c.weight_decay, ")");
  KILN_CHECK_ARG(c.step >= 1, op, ": step is 1-based (got ", c.step, ")");
  if (grad_scale) KILN_CHECK_PTR(grad_scale, 4, op);
  if (c.skip) KILN_CHECK_PTR(c.skip, 4, op);
  if (total_chunks == 0) return;
  adamw_step(tensors, count, total_chunks, adamw_scalars(c), grad_scale, stream);
}

std::size_t norm_workspace_bytes(int64_t total_chunks) {
  const std::size_t bytes = static_cast<std::size_t>(total_chunks > 0 ? total_chunks : 1) * 4;
  return (bytes + 255) / 256 * 256;
}

void global_norm_workspace_checked(int64_t total_chunks, std::size_t* bytes) {
  constexpr const char* op = "kiln_global_norm_workspace_size";
  KILN_CHECK_ARG(bytes != nullptr, op, ": bytes is null");
  KILN_CHECK_ARG(total_chunks >= 0 && total_chunks <= kMaxChunks, op,
                 ": total_chunks must be in [0, 2^31) (got ", total_chunks, ")");
  *bytes = norm_workspace_bytes(total_chunks);
}

void global_norm_checked(float* out, const kiln_norm_tensor_t* tensors, int count,
                         int64_t total_chunks, float max_norm, void* workspace,
                         std::size_t workspace_bytes, cudaStream_t stream) {
  constexpr const char* op = "kiln_global_norm";
  KILN_CHECK_PTR(out, 8, op);
  KILN_CHECK_PTR(tensors, 8, op);
  KILN_CHECK_ARG(count >= 1, op, ": count must be >= 1 (got ", count, ")");
  KILN_CHECK_ARG(total_chunks >= 0 && total_chunks <= kMaxChunks, op,
                 ": total_chunks must be in [0, 2^31) (got ", total_chunks, ")");
  KILN_CHECK_PTR(workspace, 16, op);
  KILN_CHECK_ARG(workspace_bytes >= norm_workspace_bytes(total_chunks), op, ": workspace_bytes (",
                 workspace_bytes, ") is less than the ", norm_workspace_bytes(total_chunks),
                 " bytes kiln_global_norm_workspace_size asks for");
  global_norm(out, tensors, count, total_chunks, max_norm, static_cast<float*>(workspace), stream);
}

}  // namespace

AdamWScalars adamw_scalars(const kiln_adamw_config_t& c) {
  AdamWScalars s;
  s.lr = c.lr;
  s.beta1 = c.beta1;
  s.beta2 = c.beta2;
  s.one_minus_beta1 = static_cast<float>(1.0 - double(c.beta1));
  s.one_minus_beta2 = static_cast<float>(1.0 - double(c.beta2));
  s.eps = c.eps;
  s.weight_decay = c.weight_decay;
  // In double: 1 - 0.999^step loses most of its digits in float for small steps.
  s.inv_bias_correction1 =
      static_cast<float>(1.0 / (1.0 - std::pow(double(c.beta1), double(c.step))));
  s.inv_bias_correction2 =
      static_cast<float>(1.0 / (1.0 - std::pow(double(c.beta2), double(c.step))));
  s.stochastic_rounding = c.stochastic_rounding != 0;
  s.seed = c.seed;
  s.step = static_cast<std::uint64_t>(c.step);
  s.skip = c.skip;
  return s;
}

}  // namespace kiln::impl

extern "C" {

kiln_status_t kiln_adamw_prepare(kiln_adamw_tensor_t* tensors, int count, int64_t* total_chunks) {
  return kiln::impl::capi_guard(
      [&] { kiln::impl::adamw_prepare_checked(tensors, count, total_chunks); });
}

kiln_status_t kiln_adamw_step(const kiln_adamw_tensor_t* tensors, int count, int64_t total_chunks,
                              const kiln_adamw_config_t* config, const float* grad_scale,
                              cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    kiln::impl::adamw_step_checked(tensors, count, total_chunks, config, grad_scale, stream);
  });
}

kiln_status_t kiln_global_norm_prepare(kiln_norm_tensor_t* tensors, int count,
                                       int64_t* total_chunks) {
  return kiln::impl::capi_guard(
      [&] { kiln::impl::global_norm_prepare_checked(tensors, count, total_chunks); });
}

kiln_status_t kiln_global_norm_workspace_size(int64_t total_chunks, size_t* bytes) {
  return kiln::impl::capi_guard(
      [&] { kiln::impl::global_norm_workspace_checked(total_chunks, bytes); });
}

kiln_status_t kiln_global_norm(float* out, const kiln_norm_tensor_t* tensors, int count,
                               int64_t total_chunks, float max_norm, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream) {
  return kiln::impl::capi_guard([&] {
    kiln::impl::global_norm_checked(out, tensors, count, total_chunks, max_norm, workspace,
                                    workspace_bytes, stream);
  });
}

}  // extern "C"
