// kiln::Trainer: the training step of a GPT-2 family model on a backend.
//
// One optimizer step = grad_accum micro-steps of
//   embedding -> L x [LN -> QKV linear -> attention -> proj linear -> residual + LN -> FC linear
//   + GELU -> FC2 linear] -> residual + LN -> tied LM head -> fused classifier (loss, dlogits)
//   -> the backward in reverse, parameter gradients accumulating in fp32,
// then (gradients final) the communicator's reduction, the global norm, clipping and AdamW with
// the scheduled learning rate. Every buffer lives in one arena planned at construction
// (plan()); a step allocates nothing. On the cuda backend the step is issued on one stream and
// the host waits only when the statistics are read (step(..., read_stats = true)).
//
// Encoder models (ModelKind::encoder) run the same blocks with bidirectional attention; the
// trainer replaces a fraction of the input tokens by the mask id (a deterministic function of the
// seed, the step and the position) and the loss counts only those positions.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/communicator.hpp"
#include "kiln/export.h"
#include "kiln/model.hpp"
#include "kiln/plan.hpp"
#include "kiln/train_config.hpp"

namespace kiln {

namespace impl {
struct TrainerState;
}  // namespace impl

struct StepResult {
  int64_t step = 0;         // optimizer steps done after this one (1 after the first)
  double lr = 0;            // the learning rate this step used
  int64_t tokens = 0;       // tokens processed by this rank (B * T * grad_accum)
  bool stats_read = false;  // the fields below are valid (step(..., read_stats = true))
  double loss = 0;          // mean loss over the positions that count
  double grad_norm = 0;     // global gradient norm before clipping
  bool skipped = false;     // loss or norm not finite: parameters and moments untouched (the
                            // step still counts: AdamW's bias correction uses the step index)
};

// The classifier's ignore index: targets equal to it count for nothing.
inline constexpr int32_t kIgnoreIndex = -100;

// Encoder masking for a micro-batch of `n` tokens: draws, for every position, whether it is
// masked (probability `fraction`, at least one position per micro-batch), as a pure function of
// (seed, step, micro, position). Writes masked_inputs (the input or mask_id) and targets (the
// original token where masked, kIgnoreIndex elsewhere); returns the count of masked positions.
KILN_API int64_t mask_tokens(std::span<const int32_t> inputs, int32_t mask_id, double fraction,
                             uint64_t seed, int64_t step, int64_t micro,
                             std::span<int32_t> masked_inputs, std::span<int32_t> targets);

// What a checkpoint carries besides the tensors.
struct CheckpointInfo {
  ModelConfig model;
  TrainConfig train;
  int64_t step = 0;        // optimizer steps done
  std::string data_state;  // opaque: the data loader's position (e.g. its serialized state)
  std::string kiln_version;
};

class KILN_API Trainer {
 public:
  // Plans and allocates the arena, initialises the parameters with `init_seed` (GPT-2's
  // initialisation) and zeroes the optimizer state. `comm` (not owned, may be null: one rank)
  // must outlive the trainer. Throws kiln::Error: invalid_argument for a bad config,
  // out_of_memory when the arena does not fit.
  //
  // Data parallelism: with a communicator of N > 1 ranks, every rank constructs a trainer with
  // the same model, config and seed, and calls step(), save_checkpoint() and load_checkpoint()
  // together (they are collective), each step with its own micro-batches. The gradients are
  // averaged over the ranks in buckets (TrainConfig::bucket_bytes) started while the backward
  // runs; the loss is the mean over every rank's positions; every rank's parameters stay
  // bitwise identical. With TrainConfig::zero1 each rank keeps only its shard() of the optimizer
  // state (and, on the cuda backend, of the fp32 master weights).
  Trainer(const ModelConfig& model, const TrainConfig& train, std::shared_ptr<Backend> backend,
          uint64_t init_seed = 1337, Communicator* comm = nullptr);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  const ModelConfig& model() const;
  const TrainConfig& config() const;
  const ParamLayout& layout() const;
  const MemoryPlan& plan() const;
  Backend& backend() const;
  const std::shared_ptr<Backend>& backend_ptr() const;
  // Optimizer steps done so far.
  int64_t step_count() const;
  // The communicator the trainer was given (a single-rank one when none was).
  Communicator& communicator() const;
  // The elements [first, second) of the flat parameter buffer whose optimizer state this rank
  // keeps and updates: its ZeRO-1 shard, or the whole buffer.
  std::pair<int64_t, int64_t> shard() const;

  // One optimizer step. inputs: grad_accum micro-batches of (B, T) token ids, one after the
  // other (grad_accum * B * T ids). Decoder: targets the same shape (the next tokens; may hold
  // kIgnoreIndex). Encoder: targets must be empty (the trainer masks the inputs itself).
  // Token ids must lie in [0, vocab_size): otherwise kiln::Error(data_error) names the id and
  // its position, before anything runs. With read_stats the host waits for the step and the
  // result carries the loss, the norm and whether it was skipped; with policy stop a skipped
  // step then throws kiln::Error(data_error) (parameters untouched).
  StepResult step(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                  bool read_stats = true);

  // Mean loss of one forward pass over (B, T) inputs and targets (decoder) or over the masked
  // inputs (encoder: targets empty; masked as at step `eval_step`), without touching gradients
  // or parameters. Waits for the result.
  double evaluate(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                  int64_t eval_step = 0);

  // Logits (B, T, V) as floats of one forward pass (tests, inspection). Waits.
  std::vector<float> logits(std::span<const int32_t> inputs);

  // ---- state ----------------------------------------------------------------------------------
  // The master weights as floats (layout().total()); waits. Collective when this rank holds only
  // its shard of them (ZeRO-1 on the cuda backend): every rank must call it; the shards are
  // gathered through the gradient buffer, whose contents are then lost.
  std::vector<float> parameters() const;
  // Replaces the weights (layout().total() floats; the padded embedding rows and gaps should be
  // zero); the optimizer state is kept.
  void set_parameters(std::span<const float> params);
  // The accumulated parameter gradients of the last step (layout().total(); tests). Waits. With
  // several ranks they are averaged over the ranks; under ZeRO-1 only in this rank's shard().
  std::vector<float> gradients() const;
  // The same three in double: exact on the fp64 cpu backend (gradient checks).
  std::vector<double> parameters_f64() const;
  void set_parameters(std::span<const double> params);
  std::vector<double> gradients_f64() const;
  // Zeroes the AdamW moments and the step count.
  void reset_optimizer();
  // Backend pointer to the compute copy of the parameters (what the ops read).
  const void* compute_parameters() const;

  // Writes the model, the optimizer state, the step and `data_state` to `path` atomically (a
  // crash or error mid-way leaves any previous file at `path` intact). Waits for the backend.
  // Collective with several ranks: rank 0 writes the whole state; under ZeRO-1 every rank writes
  // its shard beside `path` ("<path>.step<S>.rank<R>-of-<W>", on a file system every rank can
  // reach to resume at another world size) and rank 0 an index at `path`. Every rank throws if
  // any rank failed.
  void save_checkpoint(const std::filesystem::path& path, const std::string& data_state = {}) const;
  // Restores everything save_checkpoint wrote. The checkpoint's model must equal this trainer's
  // (kiln::Error(invalid_argument) otherwise); its train config is returned for the caller to
  // compare. Throws io_error / data_error naming the file for a missing, truncated or corrupt
  // file; the trainer is unchanged then. Collective with several ranks; any world size and either
  // kind of state (whole or sharded) reads any checkpoint: each rank reads the elements it keeps.
  CheckpointInfo load_checkpoint(const std::filesystem::path& path);

 private:
  std::unique_ptr<impl::TrainerState> s_;
};

// Reads a checkpoint's metadata and master weights (layout total floats) without a trainer
// (generation from a checkpoint). Throws like Trainer::load_checkpoint.
KILN_API CheckpointInfo read_checkpoint(const std::filesystem::path& path,
                                        std::vector<float>* master_weights);

}  // namespace kiln
