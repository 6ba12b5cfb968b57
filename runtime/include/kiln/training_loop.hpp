// The bookkeeping of a training loop around kiln::Trainer (what train_gpt does between steps):
// where a run resumes from, the validation loss over the ranks, a stop that every rank takes at
// the same step, and the throughput figures of the progress line (tokens/s, MFU, time left).
//
//   kiln::ThroughputMeter meter(model.flops_per_token(T) * train.tokens_per_step(), world, 1,
//                               kiln::datasheet_bf16_flops(kiln::device_info(0)));
//   while (...) {
//     const auto t0 = clock::now();
//     const kiln::StepResult r = trainer.step(inputs, targets);
//     const kiln::Throughput f = meter.add(seconds since t0, r.tokens);
//     printf("%.0f tok/s, MFU %.1f%%, ETA %.0f s", f.tokens_per_s, 100 * f.mfu,
//            meter.seconds_left(total_steps - r.step));
//   }
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "kiln/communicator.hpp"
#include "kiln/data.hpp"
#include "kiln/export.h"
#include "kiln/trainer.hpp"

namespace kiln {

// The checkpoint a run writes and resumes from: `dir`/latest.ckpt.
KILN_API std::filesystem::path latest_checkpoint(const std::filesystem::path& dir);

// The checkpoint to resume from: `resume` itself, or for "auto" `checkpoint_dir`/latest.ckpt
// when that file exists; empty when there is none (a fresh start).
KILN_API std::filesystem::path resume_path(const std::string& resume,
                                           const std::filesystem::path& checkpoint_dir);

// The mean validation loss of `trainer` over the first min(batches, val.steps_per_epoch())
// batches of `val` (at least one; the loader is reset first), each rank over its own stride of
// the windows, averaged over the ranks of `comm` (collective). Encoders are scored on their
// masked inputs, decoders on the next tokens.
struct EvalResult {
  double loss = 0;
  int64_t batches = 0;  // per rank
};
KILN_API EvalResult evaluate_loss(Trainer& trainer, DataLoader& val, int64_t batches,
                                  Communicator& comm);

// Whether `flag` is true on any rank (collective when comm has several ranks): a Ctrl-C seen by
// one rank stops all of them after the same step.
KILN_API bool any_rank(Communicator& comm, bool flag);

// The progress line's figures after a step.
struct Throughput {
  double step_s = 0;        // the smoothed step time
  double tokens_per_s = 0;  // over all ranks
  double mfu = 0;           // model FLOP utilisation in [0, 1]; NaN when the peak is unknown
};

// Step times smoothed by an exponential moving average (weight 0.1 for a new step; the first step
// alone at first), since the first steps include warm-up work (caches, CUDA graph capture).
class KILN_API ThroughputMeter {
 public:
  // flops_per_step: one rank's model FLOPs per optimizer step (ModelConfig::flops_per_token x
  // TrainConfig::tokens_per_step); world: the ranks; ranks_per_device: the ranks sharing one
  // device (logical ranks on one GPU share its throughput); peak_flops: one device's peak
  // (datasheet_bf16_flops), 0 when unknown (MFU is then NaN).
  ThroughputMeter(double flops_per_step, int world, int ranks_per_device, double peak_flops);

  // Adds a step of `seconds` in which each rank trained `tokens` tokens.
  Throughput add(double seconds, int64_t tokens);
  // The smoothed step time x `steps` (NaN before the first step).
  double seconds_left(int64_t steps) const;
  bool mfu_known() const { return peak_flops_ > 0; }

 private:
  double flops_per_step_, peak_flops_;
  int world_, ranks_per_device_;
  double ema_s_ = 0;
  int64_t steps_ = 0;
};

}  // namespace kiln
