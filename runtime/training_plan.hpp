// Internal: the regions of a training arena, by index into its MemoryPlan, and those of a
// generator. plan_training() and the Trainer build the same plan with build_training_plan().
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/model.hpp"
#include "kiln/plan.hpp"
#include "kiln/train_config.hpp"

namespace kiln::impl {

inline constexpr std::size_t kNoRegion = static_cast<std::size_t>(-1);

// W = qkv_width() ((NH + 2 NKV) HD, 3C for GPT-2), F = mlp_width() (4C or 2I), Hm = mlp_hidden()
// (4C or I). The *_mean regions exist for LayerNorm only (kNoRegion with RMSNorm).
struct LayerRegions {
  // With Recompute::layernorm, ln1 and ln2 of every layer are the one shared ln_scratch; with
  // Recompute::gelu, fch_gelu (the GELU or SwiGLU output) is the shared gelu_scratch.
  std::size_t ln1, ln1_mean, ln1_rstd;  // (B*T, C), (B*T), (B*T)
  std::size_t qkv;                      // (B*T, W), q and k rotated with rotary positions
  std::size_t atty;                     // (B*T, C)
  std::size_t lse;                      // (B, NH, T)
  std::size_t res2;                     // (B*T, C) residual after attention
  std::size_t ln2, ln2_mean, ln2_rstd;
  std::size_t fch;  // (B*T, F) pre-GELU, or SwiGLU's [gate | up] (its gradient in the backward)
  std::size_t fch_gelu;  // (B*T, Hm)
  std::size_t res3;      // (B*T, C) residual after the MLP (the layer's output)
};

struct TrainingRegions {
  std::size_t params, master, grads, adam_m, adam_v;  // master == params when !separate_master
  std::size_t inputs, targets, stats;                 // int32 (B*T) x2, kStatCount doubles
  std::size_t encoded;                                // (B*T, C)
  std::vector<LayerRegions> layers;
  std::size_t lnf, lnf_mean, lnf_rstd;               // (B*T, C), (B*T), (B*T)
  std::size_t logits;                                // (B*T, Vp), dlogits in place
  std::size_t losses;                                // (B*T)
  std::size_t proj_out;                              // (B*T, C) linear output before residual
  std::size_t dres, dc, d4c;                         // (B*T, C), (B*T, C), (B*T, max(W, Hm))
  std::size_t ln_scratch, gelu_scratch;              // recompute targets (or kNoRegion)
  std::size_t stat_scratch_mean, stat_scratch_rstd;  // (B*T) recompute LN statistics
  std::size_t workspace = kNoRegion;                 // kNoRegion when 0 bytes
  std::size_t optimizer_workspace = kNoRegion;       // kNoRegion when 0 bytes
};

// How ZeRO-1 splits the flat parameter buffer of `total` elements over `world_size` ranks: rank r
// owns [begin(r), end(r)), consecutive shards of `size` elements (a multiple of
// ParamLayout::kAlign), the last one shorter; buffers all-gathered by shard hold `padded` =
// world_size * size elements. Without sharding (world 1 or no zero1) one shard holds everything.
struct ShardGeometry {
  int64_t total = 0, size = 0, padded = 0;
  int world_size = 1;
  bool sharded = false;
  ShardGeometry(int64_t total, int world_size, bool zero1);
  int64_t begin(int rank) const { return sharded ? std::min(total, rank * size) : 0; }
  int64_t end(int rank) const { return sharded ? std::min(total, (rank + 1) * size) : total; }
};

// world_size: the data-parallel ranks (ZeRO-1 sizes the master weights and moments by shard).
TrainingRegions build_training_plan(MemoryPlan& plan, const ModelConfig& model,
                                    const TrainConfig& train, const BackendTypes& types,
                                    std::size_t workspace_bytes,
                                    std::size_t optimizer_workspace_bytes, int world_size = 1);

// A generator: batch 1, up to max_seq_len positions, a key/value cache per layer holding the
// NKV key/value heads only (GQA), the new rows' q/k/v in a scratch.
struct GenerationRegions {
  std::size_t params;                      // kNoRegion when the weights are borrowed from a Trainer
  std::size_t tokens;                      // int32 (maxT)
  std::vector<std::size_t> kv_cache;       // per layer (maxT, 2, NKV, HD): k heads, then v heads
  std::size_t qkv;                         // (maxT, W) the new rows' projection
  std::size_t x, ln, atty, proj_out, res;  // (maxT, C)
  std::size_t fch, fch_gelu;               // (maxT, F), (maxT, Hm)
  std::size_t mean, rstd;                  // (maxT)
  std::size_t lse;                         // (NH, maxT)
  std::size_t logits;                      // (maxT, Vp)
  std::size_t workspace;
};

GenerationRegions build_generation_plan(MemoryPlan& plan, const ModelConfig& model,
                                        const BackendTypes& types, bool own_params,
                                        std::size_t workspace_bytes);

}  // namespace kiln::impl
