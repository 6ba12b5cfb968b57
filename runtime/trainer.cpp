#include "kiln/trainer.hpp"

#include <cmath>
#include <cstring>

#include "errors/check.hpp"
#include "runtime/rng.hpp"
#include "runtime/trainer_state.hpp"

namespace kiln {

// ---- masking ----------------------------------------------------------------------------------

int64_t mask_tokens(std::span<const int32_t> inputs, int32_t mask_id, double fraction,
                    uint64_t seed, int64_t step, int64_t micro, std::span<int32_t> masked_inputs,
                    std::span<int32_t> targets) {
  const std::size_t n = inputs.size();
  KILN_CHECK_ARG(masked_inputs.size() == n && targets.size() == n,
                 "mask_tokens: inputs, masked_inputs and targets must have the same size");
  KILN_CHECK_ARG(fraction > 0 && fraction <= 1, "mask_tokens: fraction must lie in (0, 1] (got ",
                 fraction, ")");
  if (n == 0) return 0;
  // The stream identifies (step, micro); the index is the position.
  const uint64_t stream = impl::mix64(static_cast<uint64_t>(step)) ^ static_cast<uint64_t>(micro);
  int64_t count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const bool masked = impl::uniform01(impl::hash3(seed, stream, i)) < fraction;
    masked_inputs[i] = masked ? mask_id : inputs[i];
    targets[i] = masked ? inputs[i] : kIgnoreIndex;
    count += masked;
  }
  if (count == 0) {
    // An objective with no position would divide by zero: mask one position, chosen by the same
    // deterministic draw.
    const std::size_t i = impl::hash3(seed, stream, n) % n;
    masked_inputs[i] = mask_id;
    targets[i] = inputs[i];
    count = 1;
  }
  return count;
}

namespace impl {

void* TrainerState::at(std::size_t region) const {
  KILN_CHECK(region != kNoRegion, Status::internal_error, "trainer: region not planned");
  return static_cast<char*>(arena) + plan[region].offset;
}

void TrainerState::micro_step(double dloss, bool reduce) {
  Backend& be = *backend;
  const ModelConfig& m = layout.config();
  const int64_t BT = train.batch * train.seq_len;
  forward();
  be.classifier(at(r.losses), at(r.logits), static_cast<const int32_t*>(at(r.targets)), BT,
                m.vocab_size, m.padded_vocab, dloss, kIgnoreIndex);
  be.accumulate_loss(static_cast<double*>(at(r.stats)) + kStatLoss, at(r.losses), BT, dloss);
  backward(reduce);
}

// Checks and stages one micro-batch on the host; returns the positions that count.
int64_t TrainerState::stage(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                            int64_t step_index, int64_t micro) {
  const ModelConfig& m = layout.config();
  const std::size_t n = static_cast<std::size_t>(train.batch * train.seq_len);
  const int32_t V = static_cast<int32_t>(m.vocab_size);
  for (std::size_t i = 0; i < n; ++i) {
    KILN_CHECK(inputs[i] >= 0 && inputs[i] < V, Status::data_error, "trainer: input token id ",
               inputs[i], " at position ", i, " of micro-batch ", micro,
               " is outside the vocabulary [0, ", V, ")");
  }
  int64_t count = 0;
  if (m.kind == ModelKind::encoder) {
    count = mask_tokens(inputs.first(n), m.mask_token_id, train.mask_fraction, train.seed,
                        step_index, micro, host_inputs, host_targets);
  } else {
    std::memcpy(host_inputs.data(), inputs.data(), n * sizeof(int32_t));
    for (std::size_t i = 0; i < n; ++i) {
      KILN_CHECK(targets[i] == kIgnoreIndex || (targets[i] >= 0 && targets[i] < V),
                 Status::data_error, "trainer: target token id ", targets[i], " at position ", i,
                 " of micro-batch ", micro, " is outside the vocabulary [0, ", V, ")");
      host_targets[i] = targets[i];
      count += targets[i] != kIgnoreIndex;
    }
  }
  return count;
}

void TrainerState::upload_staged() {
  const std::size_t bytes = host_inputs.size() * sizeof(int32_t);
  backend->upload(at(r.inputs), host_inputs.data(), bytes);
  backend->upload(at(r.targets), host_targets.data(), bytes);
}

}  // namespace impl

// ---- Trainer ----------------------------------------------------------------------------------

Trainer::Trainer(const ModelConfig& model, const TrainConfig& train,
                 std::shared_ptr<Backend> backend, uint64_t init_seed, Communicator* comm)
    : s_(std::make_unique<impl::TrainerState>(model, train, std::move(backend), comm)) {
  std::vector<float> params(static_cast<std::size_t>(s_->layout.total()));
  init_parameters(s_->layout, init_seed, params.data());
  set_parameters(params);
  reset_optimizer();
}

Trainer::~Trainer() = default;

const ModelConfig& Trainer::model() const {
  return s_->layout.config();
}
const TrainConfig& Trainer::config() const {
  return s_->train;
}
const ParamLayout& Trainer::layout() const {
  return s_->layout;
}
const MemoryPlan& Trainer::plan() const {
  return s_->plan;
}
Backend& Trainer::backend() const {
  return *s_->backend;
}
const std::shared_ptr<Backend>& Trainer::backend_ptr() const {
  return s_->backend;
}
int64_t Trainer::step_count() const {
  return s_->step;
}
Communicator& Trainer::communicator() const {
  return *s_->comm;
}
std::pair<int64_t, int64_t> Trainer::shard() const {
  return {s_->shards.begin(s_->rank), s_->shards.end(s_->rank)};
}
const void* Trainer::compute_parameters() const {
  return s_->at(s_->r.params);
}

StepResult Trainer::step(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                         bool read_stats) {
  impl::TrainerState& s = *s_;
  const ModelConfig& m = s.layout.config();
  const int64_t A = s.train.grad_accum;
  const std::size_t n = static_cast<std::size_t>(s.train.batch * s.train.seq_len);
  KILN_CHECK_ARG(inputs.size() == n * static_cast<std::size_t>(A), "trainer: step needs ",
                 n * static_cast<std::size_t>(A), " input ids (grad_accum ", A, " x batch ",
                 s.train.batch, " x seq_len ", s.train.seq_len, "), got ", inputs.size());
  if (m.kind == ModelKind::encoder) {
    KILN_CHECK_ARG(targets.empty(), "trainer: an encoder masks its inputs itself; pass no targets");
  } else {
    KILN_CHECK_ARG(targets.size() == inputs.size(), "trainer: step needs as many targets (got ",
                   targets.size(), ") as inputs (", inputs.size(), ")");
  }

  // The loss is the mean over every position that counts in the whole step (on every rank), so
  // each micro-step's dloss is 1 / (the step's count), times the world size that the mean over
  // the ranks divides by: check and count every micro-batch before running any.
  int64_t count = 0;
  std::exception_ptr rejected;
  try {
    for (int64_t micro = 0; micro < A; ++micro) {
      const std::size_t off = static_cast<std::size_t>(micro) * n;
      count +=
          s.stage(inputs.subspan(off, n),
                  m.kind == ModelKind::encoder ? targets : targets.subspan(off, n), s.step, micro);
    }
  } catch (...) {
    rejected = std::current_exception();
  }
  count = s.global_count(count, rejected);
  KILN_CHECK(count > 0, Status::data_error,
             "trainer: every target of the step is the ignore index: no loss to train on");
  const double dloss = static_cast<double>(s.comm->world_size()) / static_cast<double>(count);

  Backend& be = *s.backend;
  s.bind_workspace();
  be.fill_zero(s.at(s.r.grads), s.plan[s.r.grads].bytes);
  be.fill_zero(s.at(s.r.stats), s.plan[s.r.stats].bytes);
  const bool multi_rank = s.comm->world_size() > 1;
  for (int64_t micro = 0; micro < A; ++micro) {
    const std::size_t off = static_cast<std::size_t>(micro) * n;
    if (A > 1) {
      s.stage(inputs.subspan(off, n),
              m.kind == ModelKind::encoder ? targets : targets.subspan(off, n), s.step, micro);
    }
    s.upload_staged();
    const bool last = micro == A - 1;
    if (s.train.cuda_graph) {
      s.run_graph(dloss);
      if (last && multi_rank) {
        for (const ParamLayout::Bucket& b : s.layout.buckets())
          s.reduce_bucket(b);
      }
    } else {
      s.micro_step(dloss, last && multi_rank);
    }
  }
  s.finish_gradients();

  StepResult result;
  result.lr = learning_rate(s.train.optimizer, s.step);
  result.tokens = s.train.tokens_per_step();
  OptimizerUpdate u;
  u.lr = result.lr;
  u.beta1 = s.train.optimizer.beta1;
  u.beta2 = s.train.optimizer.beta2;
  u.eps = s.train.optimizer.eps;
  u.weight_decay = s.train.optimizer.weight_decay;
  u.grad_clip = s.train.optimizer.grad_clip;
  u.step = s.step + 1;
  if (s.r.optimizer_workspace != impl::kNoRegion) {
    u.workspace = s.at(s.r.optimizer_workspace);
    u.workspace_bytes = s.plan[s.r.optimizer_workspace].bytes;
  }
  s.update(u);
  ++s.step;
  result.step = s.step;

  if (read_stats) {
    double stats[kStatCount];
    be.download(stats, s.at(s.r.stats), sizeof stats);
    result.stats_read = true;
    result.loss = stats[kStatLoss];
    result.grad_norm = stats[kStatGradNorm];
    result.skipped = stats[kStatSkipped] != 0;
    KILN_CHECK(!(result.skipped && s.train.on_nonfinite == NonFinitePolicy::stop),
               Status::data_error, "trainer: step ", s.step, " has a non-finite ",
               std::isfinite(result.loss) ? "gradient norm" : "loss", " (loss ", result.loss,
               ", gradient norm ", result.grad_norm,
               "); the parameters were left untouched and training stops (policy: stop)");
  }
  return result;
}

double Trainer::evaluate(std::span<const int32_t> inputs, std::span<const int32_t> targets,
                         int64_t eval_step) {
  impl::TrainerState& s = *s_;
  const ModelConfig& m = s.layout.config();
  const std::size_t n = static_cast<std::size_t>(s.train.batch * s.train.seq_len);
  KILN_CHECK_ARG(inputs.size() == n, "trainer: evaluate needs batch x seq_len = ", n,
                 " input ids, got ", inputs.size());
  if (m.kind == ModelKind::encoder) {
    KILN_CHECK_ARG(targets.empty(), "trainer: an encoder masks its inputs itself; pass no targets");
  } else {
    KILN_CHECK_ARG(targets.size() == n, "trainer: evaluate needs ", n, " targets, got ",
                   targets.size());
  }
  const int64_t count = s.stage(inputs, targets, eval_step, 0);
  KILN_CHECK(count > 0, Status::data_error, "trainer: every target is the ignore index");
  Backend& be = *s.backend;
  s.bind_workspace();
  s.upload_staged();
  double* eval = static_cast<double*>(s.at(s.r.stats)) + kStatEval;
  be.fill_zero(eval, sizeof(double));
  s.forward();
  be.classifier(s.at(s.r.losses), s.at(s.r.logits), static_cast<const int32_t*>(s.at(s.r.targets)),
                static_cast<int64_t>(n), m.vocab_size, m.padded_vocab, 0.0, kIgnoreIndex);
  be.accumulate_loss(eval, s.at(s.r.losses), static_cast<int64_t>(n),
                     1.0 / static_cast<double>(count));
  double loss = 0;
  be.download(&loss, eval, sizeof loss);
  return loss;
}

std::vector<float> Trainer::logits(std::span<const int32_t> inputs) {
  impl::TrainerState& s = *s_;
  const ModelConfig& m = s.layout.config();
  const std::size_t n = static_cast<std::size_t>(s.train.batch * s.train.seq_len);
  KILN_CHECK_ARG(inputs.size() == n, "trainer: logits needs batch x seq_len = ", n,
                 " input ids, got ", inputs.size());
  for (std::size_t i = 0; i < n; ++i) {
    KILN_CHECK(inputs[i] >= 0 && inputs[i] < m.vocab_size, Status::data_error,
               "trainer: input token id ", inputs[i], " at position ", i,
               " is outside the vocabulary [0, ", m.vocab_size, ")");
  }
  s.bind_workspace();
  s.backend->upload(s.at(s.r.inputs), inputs.data(), n * sizeof(int32_t));
  s.forward();
  std::vector<float> padded(n * static_cast<std::size_t>(m.padded_vocab));
  s.backend->download_f32(padded.data(), s.at(s.r.logits), s.types.compute,
                          static_cast<int64_t>(padded.size()));
  std::vector<float> out(n * static_cast<std::size_t>(m.vocab_size));
  for (std::size_t i = 0; i < n; ++i) {
    std::memcpy(out.data() + i * m.vocab_size, padded.data() + i * m.padded_vocab,
                static_cast<std::size_t>(m.vocab_size) * sizeof(float));
  }
  return out;
}

std::vector<float> Trainer::parameters() const {
  std::vector<float> out(static_cast<std::size_t>(s_->layout.total()));
  s_->backend->download_f32(out.data(), s_->whole_master(), s_->types.master, s_->layout.total());
  return out;
}

void Trainer::set_parameters(std::span<const float> params) {
  impl::TrainerState& s = *s_;
  KILN_CHECK_ARG(static_cast<int64_t>(params.size()) == s.layout.total(),
                 "trainer: set_parameters needs ", s.layout.total(), " values, got ",
                 params.size());
  s.set_master(params.data());
}

std::vector<float> Trainer::gradients() const {
  std::vector<float> out(static_cast<std::size_t>(s_->layout.total()));
  s_->backend->download_f32(out.data(), s_->at(s_->r.grads), s_->types.grad, s_->layout.total());
  return out;
}

std::vector<double> Trainer::parameters_f64() const {
  std::vector<double> out(static_cast<std::size_t>(s_->layout.total()));
  s_->backend->download_f64(out.data(), s_->whole_master(), s_->types.master, s_->layout.total());
  return out;
}

void Trainer::set_parameters(std::span<const double> params) {
  impl::TrainerState& s = *s_;
  KILN_CHECK_ARG(static_cast<int64_t>(params.size()) == s.layout.total(),
                 "trainer: set_parameters needs ", s.layout.total(), " values, got ",
                 params.size());
  s.set_master(params.data());
}

std::vector<double> Trainer::gradients_f64() const {
  std::vector<double> out(static_cast<std::size_t>(s_->layout.total()));
  s_->backend->download_f64(out.data(), s_->at(s_->r.grads), s_->types.grad, s_->layout.total());
  return out;
}

void Trainer::reset_optimizer() {
  impl::TrainerState& s = *s_;
  s.backend->fill_zero(s.at(s.r.adam_m), s.plan[s.r.adam_m].bytes);
  s.backend->fill_zero(s.at(s.r.adam_v), s.plan[s.r.adam_v].bytes);
  s.backend->fill_zero(s.at(s.r.grads), s.plan[s.r.grads].bytes);
  s.backend->fill_zero(s.at(s.r.stats), s.plan[s.r.stats].bytes);
  s.step = 0;
}

}  // namespace kiln
