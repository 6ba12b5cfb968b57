#include "kiln/plan.hpp"

#include <algorithm>
#include <cstdio>

#include "errors/check.hpp"
#include "kiln/limits.hpp"
#include "runtime/training_plan.hpp"

namespace kiln {

const char* memory_group_name(MemoryGroup group) {
  switch (group) {
    case MemoryGroup::parameters:
      return "parameters";
    case MemoryGroup::master_weights:
      return "master weights";
    case MemoryGroup::gradients:
      return "gradients";
    case MemoryGroup::optimizer_state:
      return "optimizer state";
    case MemoryGroup::activations:
      return "activations";
    case MemoryGroup::activation_grads:
      return "activation gradients";
    case MemoryGroup::workspace:
      return "workspace";
    case MemoryGroup::io:
      return "io";
  }
  return "?";
}

std::size_t MemoryPlan::add(std::string name, MemoryGroup group, DType dtype, int64_t numel) {
  KILN_CHECK_ARG(numel >= 0, "memory plan: region '", name, "' has a negative size");
  const std::size_t bytes = static_cast<std::size_t>(numel) * dtype_size(dtype);
  const std::size_t offset = (total_ + kAlign - 1) / kAlign * kAlign;
  regions_.push_back({std::move(name), group, dtype, numel, offset, bytes});
  total_ = offset + bytes;
  return regions_.size() - 1;
}

std::size_t MemoryPlan::add_bytes(std::string name, MemoryGroup group, std::size_t bytes) {
  const std::size_t offset = (total_ + kAlign - 1) / kAlign * kAlign;
  regions_.push_back(
      {std::move(name), group, DType::f32, static_cast<int64_t>(bytes / 4), offset, bytes});
  total_ = offset + bytes;
  return regions_.size() - 1;
}

const Region& MemoryPlan::find(std::string_view name) const {
  for (const Region& r : regions_) {
    if (r.name == name) return r;
  }
  KILN_CHECK_ARG(false, "memory plan: no region named '", name, "'");
  return regions_.front();
}

std::vector<std::size_t> MemoryPlan::bytes_by_group() const {
  std::vector<std::size_t> bytes(static_cast<std::size_t>(MemoryGroup::io) + 1, 0);
  for (const Region& r : regions_)
    bytes[static_cast<std::size_t>(r.group)] += r.bytes;
  return bytes;
}

std::string format_bytes(std::size_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (bytes >= (std::size_t{1} << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1u << 30));
  } else if (bytes >= (std::size_t{1} << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1u << 20));
  } else if (bytes >= (std::size_t{1} << 10)) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / (1u << 10));
  } else {
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  }
  return buf;
}

MemoryPlan plan_training(const ModelConfig& model, const TrainConfig& train,
                         const BackendTypes& types, std::size_t workspace_bytes,
                         std::size_t optimizer_workspace_bytes, int world_size) {
  MemoryPlan plan;
  impl::build_training_plan(plan, model.resolved(), train, types, workspace_bytes,
                            optimizer_workspace_bytes, world_size);
  return plan;
}

MemoryPlan plan_training(const ModelConfig& model, const TrainConfig& train, const Backend& backend,
                         int world_size) {
  const ModelConfig m = model.resolved();
  train.validate(m);
  return plan_training(m, train, backend.types(),
                       backend.workspace_bytes(m, train.batch, train.seq_len),
                       backend.optimizer_workspace_bytes(m), world_size);
}

namespace impl {

ShardGeometry::ShardGeometry(int64_t total_elements, int ranks, bool zero1)
    : total(total_elements), world_size(ranks), sharded(zero1 && ranks > 1) {
  KILN_CHECK_ARG(ranks >= 1, "train: world size must be >= 1 (got ", ranks, ")");
  if (!sharded) {
    size = padded = total;
    return;
  }
  const int64_t a = ParamLayout::kAlign;
  size = ((total + ranks - 1) / ranks + a - 1) / a * a;
  padded = size * ranks;
}

TrainingRegions build_training_plan(MemoryPlan& plan, const ModelConfig& model,
                                    const TrainConfig& train, const BackendTypes& types,
                                    std::size_t workspace_bytes,
                                    std::size_t optimizer_workspace_bytes, int world_size) {
  train.validate(model);
  const ParamLayout layout(model);
  const int64_t B = train.batch, T = train.seq_len, C = model.n_embd, NH = model.n_head;
  const int64_t BT = B * T, L = model.n_layer, Vp = model.resolved().padded_vocab;
  const int64_t W = model.qkv_width(), F = model.mlp_width(), Hm = model.mlp_hidden();
  const bool layernorm = model.norm == NormKind::layernorm;  // RMSNorm keeps no mean
  const DType act = types.compute, st = types.stat;
  using G = MemoryGroup;
  // ZeRO-1: the master weights and moments hold one shard; the buffers all-gathered by shard (the
  // compute weights, and the gradients that gather the master weights for a read-out) are padded
  // to whole shards.
  const ShardGeometry shards(layout.total(), world_size, train.zero1);

  TrainingRegions r;
  r.params = plan.add("params", G::parameters, types.compute, shards.padded);
  r.master = types.separate_master
                 ? plan.add("master", G::master_weights, types.master, shards.size)
                 : r.params;
  r.grads = plan.add("grads", G::gradients, types.grad, shards.padded);
  r.adam_m = plan.add("adam_m", G::optimizer_state, types.master, shards.size);
  r.adam_v = plan.add("adam_v", G::optimizer_state, types.master, shards.size);

  r.inputs = plan.add_bytes("inputs", G::io, static_cast<std::size_t>(BT) * 4);
  r.targets = plan.add_bytes("targets", G::io, static_cast<std::size_t>(BT) * 4);
  r.stats = plan.add_bytes("stats", G::io, kStatCount * sizeof(double));

  r.encoded = plan.add("encoded", G::activations, act, BT * C);
  r.ln_scratch =
      train.recompute.layernorm ? plan.add("ln_scratch", G::activations, act, BT * C) : kNoRegion;
  r.gelu_scratch =
      train.recompute.gelu ? plan.add("gelu_scratch", G::activations, act, BT * Hm) : kNoRegion;
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "layer" + std::to_string(l) + ".";
    LayerRegions lr;
    lr.ln1 =
        train.recompute.layernorm ? r.ln_scratch : plan.add(p + "ln1", G::activations, act, BT * C);
    lr.ln1_mean = layernorm ? plan.add(p + "ln1_mean", G::activations, st, BT) : kNoRegion;
    lr.ln1_rstd = plan.add(p + "ln1_rstd", G::activations, st, BT);
    lr.qkv = plan.add(p + "qkv", G::activations, act, BT * W);
    lr.atty = plan.add(p + "atty", G::activations, act, BT * C);
    lr.lse = plan.add(p + "lse", G::activations, st, B * NH * T);
    lr.res2 = plan.add(p + "res2", G::activations, act, BT * C);
    lr.ln2 =
        train.recompute.layernorm ? r.ln_scratch : plan.add(p + "ln2", G::activations, act, BT * C);
    lr.ln2_mean = layernorm ? plan.add(p + "ln2_mean", G::activations, st, BT) : kNoRegion;
    lr.ln2_rstd = plan.add(p + "ln2_rstd", G::activations, st, BT);
    lr.fch = plan.add(p + "fch", G::activations, act, BT * F);
    lr.fch_gelu = train.recompute.gelu ? r.gelu_scratch
                                       : plan.add(p + "fch_gelu", G::activations, act, BT * Hm);
    lr.res3 = plan.add(p + "res3", G::activations, act, BT * C);
    r.layers.push_back(lr);
  }
  r.lnf = plan.add("lnf", G::activations, act, BT * C);
  r.lnf_mean = layernorm ? plan.add("lnf_mean", G::activations, st, BT) : kNoRegion;
  r.lnf_rstd = plan.add("lnf_rstd", G::activations, st, BT);
  r.logits = plan.add("logits", G::activations, act, BT * Vp);
  r.losses = plan.add("losses", G::activations, st, BT);
  r.proj_out = plan.add("proj_out", G::activations, act, BT * C);
  r.stat_scratch_mean = train.recompute.layernorm && layernorm
                            ? plan.add("recompute_mean", G::activations, st, BT)
                            : kNoRegion;
  r.stat_scratch_rstd =
      train.recompute.layernorm ? plan.add("recompute_rstd", G::activations, st, BT) : kNoRegion;

  r.dres = plan.add("dresidual", G::activation_grads, act, BT * C);
  r.dc = plan.add("dC", G::activation_grads, act, BT * C);
  // The attention's dqkv (W) and the MLP's hidden gradient (Hm) take turns in one buffer; SwiGLU's
  // (2I) gradient is written over its forward input instead (fch).
  r.d4c = plan.add("d4C", G::activation_grads, act, BT * std::max(W, Hm));
  r.workspace =
      workspace_bytes > 0 ? plan.add_bytes("workspace", G::workspace, workspace_bytes) : kNoRegion;
  r.optimizer_workspace =
      optimizer_workspace_bytes > 0
          ? plan.add_bytes("optimizer_workspace", G::workspace, optimizer_workspace_bytes)
          : kNoRegion;
  return r;
}

GenerationRegions build_generation_plan(MemoryPlan& plan, const ModelConfig& model,
                                        const BackendTypes& types, bool own_params,
                                        std::size_t workspace_bytes) {
  model.validate();
  check_generation_limits(model);
  const ParamLayout layout(model);
  const int64_t T = model.max_seq_len, C = model.n_embd, Vp = model.resolved().padded_vocab;
  const int64_t kv = 2 * model.kv_heads() * model.head_dim();
  const DType act = types.compute, st = types.stat;
  using G = MemoryGroup;
  GenerationRegions r;
  r.params =
      own_params ? plan.add("params", G::parameters, types.compute, layout.total()) : kNoRegion;
  r.tokens = plan.add_bytes("tokens", G::io, static_cast<std::size_t>(T) * 4);
  for (int64_t l = 0; l < model.n_layer; ++l) {
    r.kv_cache.push_back(plan.add("layer" + std::to_string(l) + ".kv_cache", G::io, act, T * kv));
  }
  r.qkv = plan.add("qkv", G::activations, act, T * model.qkv_width());
  r.x = plan.add("x", G::activations, act, T * C);
  r.ln = plan.add("ln", G::activations, act, T * C);
  r.atty = plan.add("atty", G::activations, act, T * C);
  r.proj_out = plan.add("proj_out", G::activations, act, T * C);
  r.res = plan.add("res", G::activations, act, T * C);
  r.fch = plan.add("fch", G::activations, act, T * model.mlp_width());
  r.fch_gelu = plan.add("fch_gelu", G::activations, act, T * model.mlp_hidden());
  r.mean = plan.add("mean", G::activations, st, T);
  r.rstd = plan.add("rstd", G::activations, st, T);
  r.lse = plan.add("lse", G::activations, st, model.n_head * T);
  r.logits = plan.add("logits", G::activations, act, T * Vp);
  r.workspace =
      workspace_bytes > 0 ? plan.add_bytes("workspace", G::workspace, workspace_bytes) : kNoRegion;
  return r;
}

}  // namespace impl
}  // namespace kiln
