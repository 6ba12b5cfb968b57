// The memory plan: every buffer a training run or a generator needs, sized once from the model
// and the batch shape and laid out at aligned offsets in one arena. After the arena is allocated
// nothing else is: the step only reads and writes regions of it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/export.h"
#include "kiln/model.hpp"
#include "kiln/train_config.hpp"

namespace kiln {

enum class MemoryGroup {
  parameters,        // the compute copy of the weights (cuda: bf16)
  master_weights,    // fp32 master weights (cuda only; the cpu backend computes on these)
  gradients,         // parameter gradients
  optimizer_state,   // AdamW first and second moments
  activations,       // what the forward keeps for the backward
  activation_grads,  // the backward's scratch
  workspace,         // what the ops' workspace queries asked for
  io,                // tokens, targets, statistics, the KV cache
};
KILN_API const char* memory_group_name(MemoryGroup group);

struct Region {
  std::string name;
  MemoryGroup group;
  DType dtype;  // f32 for raw bytes (workspace)
  int64_t numel;
  std::size_t offset;  // bytes from the arena's start, a multiple of MemoryPlan::kAlign
  std::size_t bytes;
};

class KILN_API MemoryPlan {
 public:
  static constexpr std::size_t kAlign = 256;

  // Appends a region and returns its index.
  std::size_t add(std::string name, MemoryGroup group, DType dtype, int64_t numel);
  // A region of raw bytes (e.g. a workspace).
  std::size_t add_bytes(std::string name, MemoryGroup group, std::size_t bytes);

  const std::vector<Region>& regions() const { return regions_; }
  const Region& operator[](std::size_t index) const { return regions_[index]; }
  // The region named `name`; throws kiln::Error(invalid_argument) when there is none.
  const Region& find(std::string_view name) const;
  std::size_t total_bytes() const { return total_; }
  // Bytes per group, in MemoryGroup order (groups with no region give 0).
  std::vector<std::size_t> bytes_by_group() const;

 private:
  std::vector<Region> regions_;
  std::size_t total_ = 0;
};

// The plan a Trainer allocates for `model` trained with `train` on a backend with `types`,
// plus `workspace_bytes` for the ops and `optimizer_workspace_bytes` for the optimizer, on each
// of `world_size` data-parallel ranks (which matters with TrainConfig::zero1). Lets a program
// report (or refuse) a configuration before allocating anything. Validates both configs
// (kiln::Error(invalid_argument)).
KILN_API MemoryPlan plan_training(const ModelConfig& model, const TrainConfig& train,
                                  const BackendTypes& types, std::size_t workspace_bytes,
                                  std::size_t optimizer_workspace_bytes = 0, int world_size = 1);
// The same with the sizes `backend` reports: exactly what a Trainer on it allocates.
KILN_API MemoryPlan plan_training(const ModelConfig& model, const TrainConfig& train,
                                  const Backend& backend, int world_size = 1);

// Bytes for a human: "1.50 GiB", "12.0 MiB", "512 B".
KILN_API std::string format_bytes(std::size_t bytes);

}  // namespace kiln
