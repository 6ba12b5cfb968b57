#include "kiln/training_loop.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kiln {

std::filesystem::path latest_checkpoint(const std::filesystem::path& dir) {
  return dir / "latest.ckpt";
}

std::filesystem::path resume_path(const std::string& resume,
                                  const std::filesystem::path& checkpoint_dir) {
  if (resume != "auto") return resume;
  if (checkpoint_dir.empty()) return {};
  std::filesystem::path latest = latest_checkpoint(checkpoint_dir);
  return std::filesystem::exists(latest) ? latest : std::filesystem::path{};
}

EvalResult evaluate_loss(Trainer& trainer, DataLoader& val, int64_t batches, Communicator& comm) {
  val.reset();
  const bool encoder = trainer.model().kind == ModelKind::encoder;
  std::vector<int32_t> in, tg;
  double sum = 0;
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(batches, val.steps_per_epoch()));
  for (int64_t i = 0; i < n; ++i) {
    next_batches(val, 1, in, tg);
    sum += trainer.evaluate(in, encoder ? std::vector<int32_t>{} : tg, i);
  }
  // Each rank evaluated its own stride of the validation windows.
  return {comm.all_reduce_value(sum / static_cast<double>(n), ReduceOp::mean), n};
}

bool any_rank(Communicator& comm, bool flag) {
  if (comm.world_size() == 1) return flag;
  return comm.all_reduce_value(flag ? 1.0 : 0.0, ReduceOp::max) > 0;
}

ThroughputMeter::ThroughputMeter(double flops_per_step, int world, int ranks_per_device,
                                 double peak_flops)
    : flops_per_step_(flops_per_step),
      peak_flops_(peak_flops),
      world_(world),
      ranks_per_device_(ranks_per_device) {}

Throughput ThroughputMeter::add(double seconds, int64_t tokens) {
  ema_s_ = steps_ == 0 ? seconds : 0.9 * ema_s_ + 0.1 * seconds;
  ++steps_;
  Throughput t;
  t.step_s = ema_s_;
  t.tokens_per_s = static_cast<double>(tokens) * world_ / ema_s_;
  t.mfu = peak_flops_ > 0 ? flops_per_step_ * ranks_per_device_ / ema_s_ / peak_flops_ : NAN;
  return t;
}

double ThroughputMeter::seconds_left(int64_t steps) const {
  return steps_ == 0 ? NAN : ema_s_ * static_cast<double>(steps);
}

}  // namespace kiln
