#include "kiln/train_config.hpp"

#include <cmath>

#include "errors/check.hpp"
#include "kiln/limits.hpp"

namespace kiln {

const char* lr_schedule_name(LrSchedule s) {
  switch (s) {
    case LrSchedule::cosine:
      return "cosine";
    case LrSchedule::linear:
      return "linear";
    case LrSchedule::constant:
      return "constant";
  }
  return "?";
}

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "cosine") return LrSchedule::cosine;
  if (name == "linear") return LrSchedule::linear;
  if (name == "constant") return LrSchedule::constant;
  KILN_CHECK_ARG(false, "unknown learning-rate schedule '", name,
                 "' (known: cosine, linear, constant)");
  return LrSchedule::constant;
}

void OptimizerConfig::validate() const {
  auto finite = [](double x) { return std::isfinite(x); };
  KILN_CHECK_ARG(finite(lr) && lr >= 0, "optimizer: lr must be >= 0 (got ", lr, ")");
  KILN_CHECK_ARG(finite(min_lr) && min_lr >= 0 && min_lr <= lr,
                 "optimizer: min_lr must lie in [0, lr = ", lr, "] (got ", min_lr, ")");
  KILN_CHECK_ARG(warmup_steps >= 0, "optimizer: warmup_steps must be >= 0 (got ", warmup_steps,
                 ")");
  KILN_CHECK_ARG(decay_steps >= 0, "optimizer: decay_steps must be >= 0 (got ", decay_steps, ")");
  KILN_CHECK_ARG(finite(beta1) && beta1 >= 0 && beta1 < 1,
                 "optimizer: beta1 must lie in [0, 1) (got ", beta1, ")");
  KILN_CHECK_ARG(finite(beta2) && beta2 >= 0 && beta2 < 1,
                 "optimizer: beta2 must lie in [0, 1) (got ", beta2, ")");
  KILN_CHECK_ARG(finite(eps) && eps > 0, "optimizer: eps must be > 0 (got ", eps, ")");
  KILN_CHECK_ARG(finite(weight_decay) && weight_decay >= 0,
                 "optimizer: weight_decay must be >= 0 (got ", weight_decay, ")");
  KILN_CHECK_ARG(finite(grad_clip) && grad_clip >= 0, "optimizer: grad_clip must be >= 0 (got ",
                 grad_clip, ")");
}

double learning_rate(const OptimizerConfig& c, int64_t step) {
  if (step < 0) step = 0;
  if (step < c.warmup_steps) {
    return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  }
  if (c.schedule == LrSchedule::constant || c.decay_steps <= c.warmup_steps) return c.lr;
  if (step >= c.decay_steps) return c.min_lr;
  const double progress = static_cast<double>(step - c.warmup_steps) /
                          static_cast<double>(c.decay_steps - c.warmup_steps);
  const double shape = c.schedule == LrSchedule::cosine
                           ? 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress))
                           : 1.0 - progress;
  return c.min_lr + shape * (c.lr - c.min_lr);
}

void TrainConfig::validate(const ModelConfig& model) const {
  model.validate();
  KILN_CHECK_ARG(batch > 0, "train: batch must be > 0 (got ", batch, ")");
  KILN_CHECK_ARG(seq_len > 0, "train: seq_len must be > 0 (got ", seq_len, ")");
  KILN_CHECK_ARG(seq_len <= model.max_seq_len, "train: seq_len ", seq_len,
                 " exceeds the model's max_seq_len ", model.max_seq_len);
  KILN_CHECK_ARG(grad_accum > 0, "train: grad_accum must be > 0 (got ", grad_accum, ")");
  KILN_CHECK_ARG(batch <= (int64_t{1} << 31) / seq_len, "train: batch * seq_len (", batch, " * ",
                 seq_len, ") is too large");
  check_training_limits(model, batch, seq_len);
  if (model.kind == ModelKind::encoder) {
    KILN_CHECK_ARG(mask_fraction > 0 && mask_fraction <= 1,
                   "train: mask_fraction must lie in (0, 1] (got ", mask_fraction, ")");
  }
  KILN_CHECK_ARG(bucket_bytes >= 0, "train: bucket_bytes must be >= 0 (got ", bucket_bytes, ")");
  optimizer.validate();
}

}  // namespace kiln
