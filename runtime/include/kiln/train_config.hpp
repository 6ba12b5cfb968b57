// How a model is trained: batch shape, gradient accumulation, the AdamW optimizer and its
// learning-rate schedule, activation recompute, and what to do with a non-finite step.
#pragma once

#include <cstdint>
#include <string>

#include "kiln/export.h"
#include "kiln/model.hpp"

namespace kiln {

enum class LrSchedule {
  cosine,    // linear warm-up, then cosine from lr to min_lr over the decay steps
  linear,    // linear warm-up, then linear from lr to min_lr
  constant,  // linear warm-up, then lr
};
KILN_API const char* lr_schedule_name(LrSchedule s);
// "cosine", "linear" or "constant"; throws kiln::Error(invalid_argument) otherwise.
KILN_API LrSchedule parse_lr_schedule(const std::string& name);

struct KILN_API OptimizerConfig {
  double lr = 6e-4;
  double min_lr = 0.0;       // the floor the decay ends at
  int64_t warmup_steps = 0;  // lr * (step + 1) / warmup_steps for step < warmup_steps
  int64_t decay_steps = 0;   // the step the decay reaches min_lr (usually the run's total steps)
  LrSchedule schedule = LrSchedule::cosine;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // decoupled, on the matrices only (ParamTensor::decay)
  double grad_clip = 1.0;     // global-norm clipping threshold; 0 turns clipping off

  void validate() const;
};

// The learning rate of optimizer step `step` (0-based): warm-up for step < warmup_steps, then
// the schedule's decay, reaching min_lr at decay_steps and staying there (cosine, linear). With
// decay_steps <= warmup_steps the rate stays at lr after the warm-up.
KILN_API double learning_rate(const OptimizerConfig& config, int64_t step);

// Recompute in the backward pass instead of keeping per-layer activations (trading FLOPs for
// memory): the MLP activation's output (GELU: 4 C per token per layer; SwiGLU: I) and the norms'
// outputs (2 C per token per layer; only mean and rstd, or RMSNorm's rstd, are kept).
struct Recompute {
  bool gelu = false;       // the MLP activation: GELU or SwiGLU
  bool layernorm = false;  // the norms: LayerNorm or RMSNorm
  bool operator==(const Recompute&) const = default;
};

enum class NonFinitePolicy {
  skip,  // leave the parameters and moments untouched, report the step as skipped, continue
  stop,  // as skip, then Trainer::step throws kiln::Error(data_error)
};

struct KILN_API TrainConfig {
  int64_t batch = 0;       // B, sequences per micro-step
  int64_t seq_len = 0;     // T <= the model's max_seq_len
  int64_t grad_accum = 1;  // micro-steps per optimizer step; gradients accumulate in fp32
  OptimizerConfig optimizer;
  Recompute recompute;
  NonFinitePolicy on_nonfinite = NonFinitePolicy::skip;
  uint64_t seed = 1337;         // the encoder's masking draws (with the step: resume-exact)
  double mask_fraction = 0.15;  // encoder: the fraction of input tokens masked
  bool cuda_graph = false;      // cuda: capture the micro-step as a CUDA graph and replay it
  // cuda: every step repeats bit for bit (attention's dQ by its own pass over the keys). false
  // lets the attention backward accumulate dQ with fp32 atomics: faster, same accuracy, but the
  // last bits of a run vary from run to run. The cpu backend is always deterministic.
  bool deterministic = true;
  // Data parallelism (a Trainer whose Communicator has more than one rank):
  // ZeRO stage 1: each rank keeps and updates only its shard of the fp32 master weights and AdamW
  // moments (about 1 / world size of them); the gradients are reduce-scattered to the shards'
  // owners and the updated compute weights all-gathered.
  bool zero1 = false;
  // Gradients are reduced in buckets of at least this many bytes (whole layers, in the order the
  // backward finishes them), each started as soon as the backward has made it final, so that the
  // communication overlaps the rest of the backward. 0: one bucket per layer.
  int64_t bucket_bytes = int64_t{25} << 20;

  // Throws kiln::Error(invalid_argument) naming the problem: zero or negative sizes, T over the
  // model's max_seq_len, a bad optimizer setting, mask_fraction outside (0, 1], a negative
  // bucket size.
  void validate(const ModelConfig& model) const;
  int64_t tokens_per_step() const { return batch * seq_len * grad_accum; }
};

}  // namespace kiln
