// Internal: the state behind kiln::Trainer (the plan, the arena and the schedule's passes), shared
// by trainer.cpp and checkpoint.cpp.
#pragma once

#include <exception>
#include <memory>
#include <span>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/communicator.hpp"
#include "kiln/model.hpp"
#include "kiln/plan.hpp"
#include "kiln/train_config.hpp"
#include "runtime/training_plan.hpp"

namespace kiln::impl {

struct TrainerState {
  TrainerState(const ModelConfig& model, const TrainConfig& train_config,
               std::shared_ptr<Backend> backend_ptr, Communicator* communicator);
  ~TrainerState();
  TrainerState(const TrainerState&) = delete;
  TrainerState& operator=(const TrainerState&) = delete;

  void* at(std::size_t region) const;
  // A tensor's compute copy / gradient; null for a kind the model lacks (a bias it has not).
  const void* param(ParamKind kind, int64_t layer = -1) const;
  void* grad(ParamKind kind, int64_t layer = -1) const;
  // The LM head's weight: the token embedding when tied.
  ParamKind head_kind() const {
    return layout.config().tied_embeddings ? ParamKind::wte : ParamKind::lm_head;
  }

  // The model's norm (LayerNorm or RMSNorm; `mean` is unused by RMSNorm and may be kNoRegion)
  // over the (B*T, C) activations, with the weight w and bias b of `layer` (runtime/trainer_step).
  void norm_fwd(void* y, std::size_t mean, std::size_t rstd, const void* x, ParamKind w,
                ParamKind b, int64_t layer);
  void residual_norm_fwd(void* residual, void* y, std::size_t mean, std::size_t rstd, const void* a,
                         const void* b, ParamKind w, ParamKind bias, int64_t layer);
  void norm_bwd(void* dx, const void* dy, const void* x, std::size_t mean, std::size_t rstd,
                ParamKind w, ParamKind b, int64_t layer);

  void forward();
  void backward(bool reduce);
  void micro_step(double dloss, bool reduce);
  // cuda_graph: the micro-step (without reductions) recorded once per dloss and replayed.
  void run_graph(double dloss);

  // ---- data parallelism (runtime/trainer_dp.cpp) ----------------------------------------------
  // The backward hands over each bucket as it becomes final; consecutive buckets are merged up to
  // train.bucket_bytes and started on the communicator (all-reduce, or reduce-scatter to the
  // shards' owners under ZeRO-1) without the compute stream waiting.
  void reduce_bucket(const ParamLayout::Bucket& bucket);
  void launch_pending();
  // After the last micro-step: the loss averaged over the ranks; the compute stream ordered after
  // every reduction started.
  void finish_gradients();
  // The positions that count in the whole step over every rank. `error`: this rank's batch was
  // rejected; every rank then throws (this one its own error), none waits for the others.
  int64_t global_count(int64_t local, std::exception_ptr error);
  // Fills the buffers and shard of an update of this rank's elements and runs it: under ZeRO-1
  // the norm's sum of squares over the shards, the update, the all-gather of the weights.
  void update(OptimizerUpdate& u);
  // The master weights, whole: the master region itself or, when it holds only this rank's shard,
  // the gradient region after an all-gather of the shards into it (collective; the gradients are
  // lost). Waits.
  const void* whole_master();
  // Replaces the weights from the whole host array (layout total, float or double).
  template <typename H>
  void set_master(const H* values);
  int64_t stage(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                int64_t step_index, int64_t micro);
  void upload_staged();
  // The backend's workspace is one slot shared by its users (trainers, generators): each binds
  // its own before issuing ops.
  void bind_workspace();

  ParamLayout layout;
  TrainConfig train;
  std::shared_ptr<Backend> backend;
  BackendTypes types;
  SingleRankCommunicator single_rank;
  Communicator* comm;
  ShardGeometry shards;  // this rank's elements: [shards.begin(rank), shards.end(rank))
  int rank = 0;
  int64_t pending_begin = 0, pending_end = 0;  // the merged bucket not started yet (empty: equal)
  MemoryPlan plan;
  TrainingRegions r;
  void* arena = nullptr;
  int64_t step = 0;
  std::vector<int32_t> host_inputs, host_targets;  // one micro-batch, staged for upload
  int graph = -1;
  double graph_dloss = 0;
  bool graph_warmed = false;
};

}  // namespace kiln::impl
