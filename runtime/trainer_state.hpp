// Internal: the state behind kiln::Trainer (the plan, the arena and the schedule's passes), shared
// by trainer.cpp and checkpoint.cpp.
#pragma once

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
  const void* param(ParamKind kind, int64_t layer = -1) const;
  void* grad(ParamKind kind, int64_t layer = -1) const;

  void forward();
  void backward(bool reduce);
  void micro_step(double dloss, bool reduce);
  // cuda_graph: the micro-step (without reductions) recorded once per dloss and replayed.
  void run_graph(double dloss);
  void reduce_bucket(const ParamLayout::Bucket& bucket);
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
