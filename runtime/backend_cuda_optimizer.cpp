// The cuda backend's optimizer step: the global gradient norm, the clip scale and the skip verdict
// stay on the device, AdamW reads them there (no host round trip); the device tables of the tensors
// are built once per set of buffers.
#include <cuda_bf16.h>

#include <algorithm>
#include <vector>

#include "errors/check.hpp"
#include "kiln/optimizer.h"
#include "runtime/backend_cuda.hpp"
#include "runtime/cuda/runtime_kernels.hpp"

namespace kiln::impl {

CudaBackend::OptLayout CudaBackend::checked_layout(const OptimizerUpdate& u, const char* op) {
  KILN_CHECK_ARG(u.layout && u.master && u.compute && u.grads && u.m && u.v && u.stats,
                 "cuda backend: ", op, " is missing a buffer");
  const OptLayout l = optimizer_layout(*u.layout);
  KILN_CHECK_ARG(u.workspace != nullptr && u.workspace_bytes >= l.total, "cuda backend: ", op,
                 " needs ", l.total,
                 " bytes of optimizer workspace (optimizer_workspace_bytes), got ",
                 u.workspace_bytes);
  return l;
}

void CudaBackend::optimizer_update(const OptimizerUpdate& u) {
  const OptLayout l = checked_layout(u, "optimizer_update");
  char* ws = static_cast<char*>(u.workspace);
  prepare_tables(u, l);
  float* norm_out = reinterpret_cast<float*>(ws + l.norm_out);
  if (u.norm_from_sum_squares) {
    launch_norm_from_sum_squares(norm_out, u.stats, static_cast<float>(u.grad_clip), s());
  } else {
    shard_norm(u, l, static_cast<float>(u.grad_clip));
  }
  int32_t* skip = reinterpret_cast<int32_t*>(ws + l.flag);
  launch_finalize_stats(u.stats, norm_out, skip, s());
  if (adamw_count_ == 0) return;
  kiln_adamw_config_t cfg{};
  cfg.lr = static_cast<float>(u.lr);
  cfg.beta1 = static_cast<float>(u.beta1);
  cfg.beta2 = static_cast<float>(u.beta2);
  cfg.eps = static_cast<float>(u.eps);
  cfg.weight_decay = static_cast<float>(u.weight_decay);
  cfg.step = u.step;
  cfg.skip = skip;  // the verdict stays on the device: no host round trip
  kiln::adamw_step(reinterpret_cast<const kiln_adamw_tensor_t*>(ws + l.adamw_table), adamw_count_,
                   adamw_chunks_, cfg, norm_out + 1, s());
}

void CudaBackend::grad_sum_squares(const OptimizerUpdate& u) {
  const OptLayout l = checked_layout(u, "grad_sum_squares");
  prepare_tables(u, l);
  shard_norm(u, l, 0.0f);
  launch_sum_squares_from_norm(
      u.stats, reinterpret_cast<const float*>(static_cast<char*>(u.workspace) + l.norm_out), s());
}

CudaBackend::OptLayout CudaBackend::optimizer_layout(const ParamLayout& layout) {
  OptLayout l;
  std::size_t at = 0;
  l.norm_out = at;
  at += kAlign;
  l.flag = at;
  at += kAlign;
  // The chunk count depends only on the element count; any aligned address serves the probe.
  kiln_norm_tensor_t probe{reinterpret_cast<const float*>(kAlign), layout.total(), 0};
  const int64_t chunks = kiln::global_norm_prepare(&probe, 1);
  l.norm_partials = at;
  l.norm_partials_bytes = align_up(kiln::global_norm_workspace_size(chunks));
  at += l.norm_partials_bytes;
  l.norm_table = at;
  at += align_up(sizeof(kiln_norm_tensor_t));
  l.adamw_table = at;
  at += align_up(layout.tensors().size() * sizeof(kiln_adamw_tensor_t));
  l.total = at;
  return l;
}

// norm_out (workspace) = the norm of the update's gradient elements and its clip scale; an
// empty shard has norm 0.
void CudaBackend::shard_norm(const OptimizerUpdate& u, const OptLayout& l, float max_norm) {
  char* ws = static_cast<char*>(u.workspace);
  float* norm_out = reinterpret_cast<float*>(ws + l.norm_out);
  if (norm_chunks_ == 0) {
    const float zero_and_one[2] = {0.0f, 1.0f};
    upload(norm_out, zero_and_one, sizeof zero_and_one);
    device_.synchronize();  // the host array dies here
    return;
  }
  kiln::global_norm(norm_out, reinterpret_cast<const kiln_norm_tensor_t*>(ws + l.norm_table), 1,
                    norm_chunks_, max_norm, ws + l.norm_partials, l.norm_partials_bytes, s());
}

// Builds the optimizer's device tables once per set of buffers and shard and keeps them in the
// optimizer workspace, which persists between steps. A ZeRO-1 shard [b, e) takes the part of
// each tensor inside it; its master weights and moments start at element b.
void CudaBackend::prepare_tables(const OptimizerUpdate& u, const OptLayout& l) {
  const int64_t b = u.shard_begin, e = u.shard_end < 0 ? u.layout->total() : u.shard_end;
  KILN_CHECK_ARG(b >= 0 && b <= e && e <= u.layout->total() && b % ParamLayout::kAlign == 0,
                 "cuda backend: optimizer shard [", b, ", ", e, ") is not an aligned range of [0, ",
                 u.layout->total(), ")");
  const Key key{u.workspace, u.master, u.compute, u.grads, u.m, u.v, b, e};
  if (key == tables_for_) return;
  std::vector<kiln_adamw_tensor_t> adamw;
  for (const ParamTensor& t : u.layout->tensors()) {
    const int64_t lo = std::max(t.offset, b), hi = std::min(t.offset + t.numel(), e);
    if (lo >= hi) continue;
    kiln_adamw_tensor_t entry{};
    entry.master = static_cast<float*>(u.master) + (lo - b);
    entry.m = static_cast<float*>(u.m) + (lo - b);
    entry.v = static_cast<float*>(u.v) + (lo - b);
    entry.grad = static_cast<const float*>(u.grads) + lo;
    entry.param = static_cast<__nv_bfloat16*>(u.compute) + lo;
    entry.n = hi - lo;
    entry.decay = t.decay ? 1 : 0;
    adamw.push_back(entry);
  }
  adamw_count_ = static_cast<int>(adamw.size());
  adamw_chunks_ = adamw.empty() ? 0 : kiln::adamw_prepare(adamw.data(), adamw_count_);
  kiln_norm_tensor_t norm{static_cast<const float*>(u.grads) + b, e - b, 0};
  norm_chunks_ = e > b ? kiln::global_norm_prepare(&norm, 1) : 0;
  char* ws = static_cast<char*>(u.workspace);
  if (!adamw.empty()) {
    upload(ws + l.adamw_table, adamw.data(), adamw.size() * sizeof(kiln_adamw_tensor_t));
  }
  upload(ws + l.norm_table, &norm, sizeof norm);
  device_.synchronize();  // the host tables die here
  tables_for_ = key;
}

}  // namespace kiln::impl
