// train_gpt: trains a GPT-2 family model (or a BERT-style encoder), or a Llama-family one
// (--model smollm2-135m, llama-tiny, ... or a preset with other parts: --norm rmsnorm
// --positions rotary --mlp swiglu --kv-heads 2 ...), on token shards.
//
//   kiln_tokenize --tokenizer byte --val-fraction 0.05 --out data/fortunes
//   /usr/share/games/fortunes train_gpt --data data/fortunes --model tiny --batch 8 --seq-len 64
//   --steps 300 train_gpt --data data/owt --model gpt2 --batch 16 --seq-len 1024 --grad-accum 4
//             --steps 5000 --lr 6e-4 --warmup 700 --checkpoint-dir ckpt --checkpoint-every 500
//   train_gpt --data data/owt --resume ckpt/latest.ckpt ...       (continues bit-exactly)
//   mpirun -np 8 train_gpt --data data/owt --model gpt2 ...         (8 GPUs; also srun, torchrun)
//   train_gpt --ranks 4 --backend cpu ...                          (4 in-process ranks, threads)
//
// Prints the memory plan, then one progress line per step (loss, learning rate, gradient norm,
// tokens/s, MFU by bench/README.md's convention on a GPU, ETA); evaluates, samples and checkpoints
// every N steps; writes metrics as JSON lines and the loss curve as a PNG. Ctrl-C stops after the
// current step, saving a checkpoint when a checkpoint directory is set.
//
// Data parallelism: started by mpirun, srun or torchrun --no-python (one process per GPU, the
// GPU picked by local rank), or with --ranks N (N ranks as threads of this process, on the cpu
// backend or as N logical ranks on one GPU), every rank trains on its own stride of the data and
// rank 0 alone prints and writes files. A communicator failure (a rank gone, a collective past
// --comm-timeout) ends the process with status 1, so that the launcher stops the other ranks.
#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_checks.hpp"
#include "kiln/kiln.hpp"
#include "kiln/launch.hpp"
#include "loss_plot.hpp"

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_stop{false};
// Only rank 0 speaks (each in-process rank runs on its own thread).
thread_local bool t_speaks = true;

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
void say(const char* format, ...) {
  if (!t_speaks) return;
  va_list args;
  va_start(args, format);
  std::vprintf(format, args);
  va_end(args);
}

// The first Ctrl-C finishes the step and saves; a second one ends the process at once.
void on_sigint(int) {
  g_stop = true;
  std::signal(SIGINT, SIG_DFL);
}

struct Options {
  std::string backend = "auto";
  int device = -1;
  int threads = 0;
  std::string model = "tiny";
  int64_t layers = 0, heads = 0, channels = 0, max_seq_len = 0, vocab = 0;
  // The model's parts, overriding the preset's when given (empty / 0: the preset's).
  int64_t kv_heads = 0, intermediate = 0;
  std::string norm, positions, mlp, bias, head, rope_scaling;
  double rope_theta = 0, rope_factor = 0, rope_low = 0, rope_high = 0;
  int64_t rope_original = 0;
  bool encoder = false;
  double mask_fraction = 0.15;
  std::string data;
  int64_t batch = 8, seq_len = 64, grad_accum = 1, steps = 300;
  double lr = 1e-3, min_lr_ratio = 0.1, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95,
         grad_clip = 1.0;
  int64_t warmup = -1;
  std::string schedule = "cosine";
  std::string recompute = "none";
  bool cuda_graph = false;
  bool nondeterministic = false;
  std::string on_nonfinite = "skip";
  uint64_t seed = 1337;
  std::string checkpoint_dir;
  int64_t checkpoint_every = 0;
  std::string resume;
  int64_t eval_every = 0, eval_batches = 10;
  int64_t sample_every = 0, sample_length = 200;
  std::string prompt = "\n";
  std::string tokenizer = "auto", vocab_dir = "data/gpt2";
  double temperature = 0.8, top_p = 0.95;
  int64_t top_k = 40;
  std::string metrics, plot;
  int64_t log_every = 1;
  int64_t stop_at = 0;
  bool dry_run = false;
  int ranks = 1;
  bool zero1 = false;
  double bucket_mb = 25;
  double comm_timeout = 600;
};

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%" PRId64 "h%02" PRId64 "m", t / 3600, t / 60 % 60);
  } else if (t >= 60) {
    std::snprintf(buf, sizeof buf, "%" PRId64 "m%02" PRId64 "s", t / 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%" PRId64 "s", t);
  }
  return buf;
}

// The GPU: --device, else the launcher's local rank (one process per GPU), else 0.
int choose_device(const Options& o, const kiln::LaunchInfo& launch) {
  if (o.device >= 0) return o.device;
  return launch.world_size > 1 ? kiln::select_device(launch, kiln::device_count()) : 0;
}

// `threads`: the cpu backend's threads for this rank.
std::shared_ptr<kiln::Backend> choose_backend(const Options& o, const kiln::LaunchInfo& launch,
                                              int threads) {
  if (o.backend == "cpu") return kiln::make_cpu_backend(kiln::DType::f32, threads);
  if (o.backend == "cuda") {
    return kiln::make_backend(kiln::BackendKind::cuda, choose_device(o, launch));
  }
  int count = 0;
  if (kiln_device_count(&count) == KILN_STATUS_OK && count > 0) {
    return kiln::make_backend(kiln::BackendKind::cuda, choose_device(o, launch));
  }
  say("backend: no CUDA device (%s); training on the cpu backend instead\n", kiln_last_error());
  return kiln::make_cpu_backend(kiln::DType::f32, threads);
}

// A loader state saved with another batch or world size: the same position in the epoch's window
// order (windows consumed = step x B x world size), rounded up to a whole step of the new shape.
kiln::DataLoaderState rebase_loader_state(kiln::DataLoaderState s, const kiln::DataLoader& loader,
                                          int64_t B, int world) {
  const uint64_t rows = static_cast<uint64_t>(B) * static_cast<uint64_t>(world);
  if (s.B * s.world_size == rows && s.B == static_cast<uint64_t>(B) &&
      s.world_size == static_cast<uint64_t>(world)) {
    return s;
  }
  const uint64_t consumed = s.step * s.B * s.world_size;
  s.step = (consumed + rows - 1) / rows;
  if (s.step >= static_cast<uint64_t>(loader.steps_per_epoch())) {
    ++s.epoch;
    s.step = 0;
  }
  say("data: the checkpoint read %" PRIu64 " windows of epoch %" PRIu64 " as batch %" PRIu64
      " x %" PRIu64 " rank(s); continuing at step %" PRIu64 " with batch %" PRId64
      " x %d rank(s)\n",
      consumed, s.epoch, s.B, s.world_size, s.step, B, world);
  s.B = static_cast<uint64_t>(B);
  s.world_size = static_cast<uint64_t>(world);
  return s;
}

std::string loader_state_json(const kiln::DataLoaderState& s) {
  return nlohmann::json{{"epoch", s.epoch}, {"step", s.step}, {"fingerprint", s.fingerprint},
                        {"B", s.B},         {"T", s.T},       {"world_size", s.world_size}}
      .dump();
}

kiln::DataLoaderState loader_state_from_json(const std::string& text, const std::string& path) {
  try {
    const auto j = nlohmann::json::parse(text);
    // get<uint64_t>() would convert a float (undefined when out of range) or wrap a negative.
    auto count = [&](const char* key) {
      const auto& v = j.at(key);
      if (!v.is_number_unsigned()) {
        throw std::runtime_error(std::string("'") + key + "' is not an integer >= 0");
      }
      return v.get<uint64_t>();
    };
    kiln::DataLoaderState s;
    s.epoch = count("epoch");
    s.step = count("step");
    s.fingerprint = count("fingerprint");
    s.B = count("B");
    s.T = count("T");
    s.world_size = count("world_size");
    return s;
  } catch (const std::exception& e) {
    throw kiln::Error(
        kiln::Status::data_error,
        "checkpoint '" + path + "': the data loader state is unreadable (" + e.what() + ")");
  }
}

void print_plan(const kiln::MemoryPlan& plan, const kiln::Backend& backend, int world) {
  say("memory plan (%s): %s in one arena%s, %zu buffers\n", backend.description().c_str(),
      kiln::format_bytes(plan.total_bytes()).c_str(), world > 1 ? " per rank" : "",
      plan.regions().size());
  const auto groups = plan.bytes_by_group();
  for (std::size_t g = 0; g < groups.size(); ++g) {
    if (groups[g] == 0) continue;
    say("  %-22s %12s  (%4.1f%%)\n", kiln::memory_group_name(static_cast<kiln::MemoryGroup>(g)),
        kiln::format_bytes(groups[g]).c_str(),
        100.0 * static_cast<double>(groups[g]) / static_cast<double>(plan.total_bytes()));
  }
}

// Fills `in` / `tg` with grad_accum batches of (B, T) inputs and next-token targets.
void next_batches(kiln::DataLoader& loader, int64_t accum, int64_t B, int64_t T,
                  std::vector<int32_t>& in, std::vector<int32_t>& tg) {
  in.resize(static_cast<std::size_t>(accum * B * T));
  tg.resize(in.size());
  std::size_t k = 0;
  for (int64_t a = 0; a < accum; ++a) {
    const std::span<const int32_t> rows = loader.next();
    for (int64_t b = 0; b < B; ++b) {
      const int32_t* row = rows.data() + b * (T + 1);
      for (int64_t t = 0; t < T; ++t, ++k) {
        in[k] = row[t];
        tg[k] = row[t + 1];
      }
    }
  }
}

// The parts given on the command line over the preset's (the values were checked by CLI11).
void apply_parts(const Options& o, kiln::ModelConfig& m) {
  if (o.kv_heads) m.n_kv_head = o.kv_heads;
  if (!o.norm.empty())
    m.norm = o.norm == "rmsnorm" ? kiln::NormKind::rmsnorm : kiln::NormKind::layernorm;
  if (!o.positions.empty()) {
    m.positions =
        o.positions == "rotary" ? kiln::PositionKind::rotary : kiln::PositionKind::learned;
  }
  if (!o.mlp.empty()) m.mlp = o.mlp == "swiglu" ? kiln::MlpKind::swiglu : kiln::MlpKind::gelu;
  if (o.intermediate) m.intermediate_size = o.intermediate;
  // A GELU MLP is 4C wide; SwiGLU without a size takes Llama's usual 8C/3 rounded up to 64.
  if (m.mlp == kiln::MlpKind::gelu) m.intermediate_size = 0;
  if (m.mlp == kiln::MlpKind::swiglu && m.intermediate_size == 0) {
    m.intermediate_size = (8 * m.n_embd / 3 + 63) / 64 * 64;
  }
  if (!o.bias.empty()) {
    m.bias = o.bias == "none"  ? kiln::BiasKind::none
             : o.bias == "qkv" ? kiln::BiasKind::qkv
                               : kiln::BiasKind::all;
  }
  if (!o.head.empty()) m.tied_embeddings = o.head == "tied";
  if (o.rope_theta) m.rope.theta = o.rope_theta;
  if (!o.rope_scaling.empty()) {
    m.rope.scaling =
        o.rope_scaling == "llama3" ? kiln::RopeScaling::llama3 : kiln::RopeScaling::none;
  }
  if (o.rope_factor) m.rope.factor = o.rope_factor;
  if (o.rope_low) m.rope.low_freq_factor = o.rope_low;
  if (o.rope_high) m.rope.high_freq_factor = o.rope_high;
  if (o.rope_original) m.rope.original_max_position = o.rope_original;
}

int run_rank(const Options& o, const kiln::LaunchInfo& launch, kiln::Communicator& comm,
             std::shared_ptr<kiln::Backend> backend) {
  const int world = comm.world_size();
  // ---- data --------------------------------------------------------------------------------
  const auto train_shards = kiln::find_shards(o.data, "train");
  std::vector<fs::path> val_shards;
  try {
    val_shards = kiln::find_shards(o.data, "val");
  } catch (const kiln::Error&) {
    // No validation split: evaluation is skipped.
  }
  kiln::DataLoaderConfig dc;
  dc.shards = train_shards;
  dc.B = o.batch;
  dc.T = o.seq_len;
  dc.seed = o.seed;
  dc.rank = comm.rank();
  dc.world_size = world;
  kiln::DataLoader loader(dc);
  const int32_t data_vocab = loader.vocab_size();

  // ---- model -------------------------------------------------------------------------------
  std::optional<kiln::CheckpointInfo> resume_info;
  std::string resume_path = o.resume;
  if (resume_path == "auto") {
    resume_path =
        o.checkpoint_dir.empty() ? "" : (fs::path(o.checkpoint_dir) / "latest.ckpt").string();
    if (!resume_path.empty() && !fs::exists(resume_path)) resume_path.clear();
  }
  kiln::ModelConfig model;
  if (!resume_path.empty()) {
    resume_info = kiln::read_checkpoint(resume_path, nullptr);
    model = resume_info->model;
    say("resuming from %s (step %" PRId64 "); the model comes from the checkpoint\n",
        resume_path.c_str(), resume_info->step);
  } else {
    const int64_t vocab = o.vocab > 0 ? o.vocab : data_vocab + (o.encoder ? 1 : 0);
    model = kiln::model_preset(o.model, vocab);
    if (o.vocab) model.vocab_size = o.vocab;
    if (o.layers) model.n_layer = o.layers;
    if (o.heads) model.n_head = o.heads;
    if (o.channels) model.n_embd = o.channels;
    apply_parts(o, model);
    // A preset's positions grow to the requested sequence length unless given explicitly.
    model.max_seq_len = o.max_seq_len ? o.max_seq_len : std::max(model.max_seq_len, o.seq_len);
    model.padded_vocab = 0;
    if (o.encoder) {
      model.kind = kiln::ModelKind::encoder;
      model.mask_token_id = static_cast<int32_t>(vocab - 1);
    }
    model = model.resolved();
  }
  if (data_vocab > model.vocab_size) {
    throw kiln::Error(kiln::Status::invalid_argument,
                      "the shards in '" + o.data + "' use a vocabulary of " +
                          std::to_string(data_vocab) + " tokens, more than the model's " +
                          std::to_string(model.vocab_size));
  }

  kiln::TrainConfig tc;
  tc.batch = o.batch;
  tc.seq_len = o.seq_len;
  tc.grad_accum = o.grad_accum;
  tc.seed = o.seed;
  tc.mask_fraction = o.mask_fraction;
  tc.cuda_graph = o.cuda_graph;
  tc.deterministic = !o.nondeterministic;
  tc.on_nonfinite =
      o.on_nonfinite == "stop" ? kiln::NonFinitePolicy::stop : kiln::NonFinitePolicy::skip;
  tc.recompute.gelu = o.recompute == "gelu" || o.recompute == "all";
  tc.recompute.layernorm = o.recompute == "layernorm" || o.recompute == "all";
  tc.optimizer.lr = o.lr;
  tc.optimizer.min_lr = o.lr * o.min_lr_ratio;
  tc.optimizer.warmup_steps = o.warmup >= 0 ? o.warmup : std::max<int64_t>(1, o.steps / 20);
  tc.optimizer.decay_steps = o.steps;
  tc.optimizer.schedule = kiln::parse_lr_schedule(o.schedule);
  tc.optimizer.beta1 = o.beta1;
  tc.optimizer.beta2 = o.beta2;
  tc.optimizer.weight_decay = o.weight_decay;
  tc.optimizer.grad_clip = o.grad_clip;
  tc.zero1 = o.zero1;
  tc.bucket_bytes = static_cast<int64_t>(o.bucket_mb * (1 << 20));
  tc.validate(model);

  const bool on_gpu = backend->kind() == kiln::BackendKind::cuda;
  say("model: %s, %.2fM parameters\n", model.describe().c_str(),
      static_cast<double>(model.num_parameters()) / 1e6);
  say("data: %zu train shard(s), %zu val shard(s) in %s; vocabulary %d; %" PRId64
      " windows, %" PRId64 " steps per epoch\n",
      train_shards.size(), val_shards.size(), o.data.c_str(), data_vocab, loader.windows(),
      loader.steps_per_epoch());
  if (world > 1) {
    say("data parallel: %s, %d ranks (%s)%s, gradient buckets of %.1f MiB\n",
        comm.description().c_str(), world,
        launch.world_size > 1 ? launch.describe().c_str() : "in-process threads",
        tc.zero1 ? ", ZeRO-1 (optimizer state sharded)" : "", o.bucket_mb);
  }
  say("training: batch %" PRId64 " x seq %" PRId64 " x accum %" PRId64 " x %d rank(s) = %" PRId64
      " tokens per step, %" PRId64 " steps, lr %.2e (%s, warm-up %" PRId64 ")%s%s\n",
      o.batch, o.seq_len, o.grad_accum, world, tc.tokens_per_step() * world, o.steps, o.lr,
      o.schedule.c_str(), tc.optimizer.warmup_steps,
      tc.recompute.gelu || tc.recompute.layernorm ? ", recompute " : "",
      tc.recompute.gelu || tc.recompute.layernorm ? o.recompute.c_str() : "");
  const kiln::MemoryPlan plan = kiln::plan_training(model, tc, *backend, world);
  print_plan(plan, *backend, world);
  if (o.dry_run) return 0;

  kiln::Trainer trainer(model, tc, backend, o.seed, &comm);
  if (resume_info) {
    trainer.load_checkpoint(resume_path);
    loader.restore(rebase_loader_state(loader_state_from_json(resume_info->data_state, resume_path),
                                       loader, o.batch, world));
  }

  // ---- evaluation, sampling, checkpoints ------------------------------------------------------
  std::optional<kiln::DataLoader> val_loader;
  if (o.eval_every > 0 && !val_shards.empty()) {
    kiln::DataLoaderConfig vc = dc;
    vc.shards = val_shards;
    vc.shuffle = false;
    try {
      val_loader.emplace(vc);
    } catch (const kiln::Error& e) {
      say("eval: disabled (%s)\n", e.message().c_str());
    }
  }
  std::unique_ptr<kiln::Tokenizer> tokenizer;
  std::unique_ptr<kiln::Generator> generator;
  if (o.sample_every > 0 && model.kind == kiln::ModelKind::decoder && comm.rank() == 0) {
    const std::string kind =
        o.tokenizer != "auto" ? o.tokenizer : (data_vocab <= 257 ? "byte" : "gpt2");
    tokenizer = kiln::make_tokenizer(kind, o.vocab_dir);
    generator = std::make_unique<kiln::Generator>(trainer);
  }
  std::ofstream metrics;
  if (!o.metrics.empty() && comm.rank() == 0) {
    metrics.open(o.metrics, resume_info ? std::ios::app : std::ios::trunc);
    if (!metrics) throw kiln::Error(kiln::Status::io_error, "cannot write '" + o.metrics + "'");
  }
  auto log_json = [&](const nlohmann::json& j) {
    if (metrics) metrics << j.dump() << '\n' << std::flush;
  };
  auto save = [&](const char* why) {
    if (o.checkpoint_dir.empty()) return;
    fs::create_directories(o.checkpoint_dir);
    const fs::path path = fs::path(o.checkpoint_dir) / "latest.ckpt";
    trainer.save_checkpoint(path, loader_state_json(loader.state()));
    say("checkpoint: %s (step %" PRId64 ", %s)\n", path.c_str(), trainer.step_count(), why);
  };
  auto sample = [&] {
    if (!generator) return;
    std::vector<int32_t> prompt = tokenizer->encode(o.prompt);
    if (prompt.empty()) prompt.push_back(tokenizer->eot_token());
    kiln::SamplingConfig sc;
    sc.temperature = o.temperature;
    sc.top_k = o.top_k;
    sc.top_p = o.top_p;
    sc.seed = o.seed + static_cast<uint64_t>(trainer.step_count());
    const auto ids = generator->generate(prompt, o.sample_length, sc,
                                         [&](int32_t t) { return t != tokenizer->eot_token(); });
    std::vector<int32_t> text_ids;
    for (int32_t t : ids) {
      if (!tokenizer->is_special(t)) text_ids.push_back(t);
    }
    const std::string text = tokenizer->decode(text_ids);
    say("---- sample at step %" PRId64 " ----\n%s%s\n--------\n", trainer.step_count(),
        o.prompt.c_str(), text.c_str());
    log_json({{"step", trainer.step_count()}, {"sample", o.prompt + text}});
  };
  std::vector<loss_plot::Point> train_curve, val_curve;
  std::vector<int32_t> in, tg, vin, vtg;
  auto evaluate = [&] {
    if (!val_loader) return;
    val_loader->reset();
    double sum = 0;
    const int64_t n =
        std::max<int64_t>(1, std::min<int64_t>(o.eval_batches, val_loader->steps_per_epoch()));
    for (int64_t i = 0; i < n; ++i) {
      next_batches(*val_loader, 1, o.batch, o.seq_len, vin, vtg);
      sum += trainer.evaluate(
          vin, model.kind == kiln::ModelKind::encoder ? std::vector<int32_t>{} : vtg, i);
    }
    // Each rank evaluated its own stride of the validation windows.
    const double loss = comm.all_reduce_value(sum / static_cast<double>(n), kiln::ReduceOp::mean);
    say("eval: step %" PRId64 " val loss %.4f (%" PRId64 " batches x %d rank(s))\n",
        trainer.step_count(), loss, n, world);
    val_curve.push_back({static_cast<double>(trainer.step_count()), loss});
    log_json({{"step", trainer.step_count()}, {"val_loss", loss}});
  };

  // ---- the loop ------------------------------------------------------------------------------
  std::signal(SIGINT, on_sigint);
  const double flops_per_step =
      model.flops_per_token(o.seq_len) * static_cast<double>(tc.tokens_per_step());
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  double ema_step_s = 0;
  int64_t timed = 0;
  if (trainer.step_count() == 0 && o.eval_every > 0) evaluate();
  const int64_t last_step = o.stop_at > 0 ? std::min(o.stop_at, o.steps) : o.steps;
  // Every rank stops after the same step: a Ctrl-C seen by any rank counts for all.
  bool stopping = false;
  auto stop_requested = [&] {
    stopping = world > 1 ? comm.all_reduce_value(g_stop ? 1.0 : 0.0, kiln::ReduceOp::max) > 0
                         : g_stop.load();
    return stopping;
  };
  // N logical ranks on one GPU share its throughput.
  const int ranks_per_device = launch.world_size > 1 ? 1 : world;
  while (trainer.step_count() < last_step && !stop_requested()) {
    next_batches(loader, o.grad_accum, o.batch, o.seq_len, in, tg);
    const auto t0 = clock::now();
    const kiln::StepResult r = trainer.step(
        in, model.kind == kiln::ModelKind::encoder ? std::vector<int32_t>{} : tg, true);
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    // The first steps include warm-up work (allocation of caches, CUDA graph capture).
    ema_step_s = timed == 0 ? dt : 0.9 * ema_step_s + 0.1 * dt;
    ++timed;
    const double tok_s = static_cast<double>(r.tokens) * world / ema_step_s;
    const double eta = ema_step_s * static_cast<double>(o.steps - r.step);
    train_curve.push_back({static_cast<double>(r.step), r.loss});
    char mfu[32] = "n/a";
    double mfu_value = NAN;
    if (on_gpu) {
      mfu_value = flops_per_step * ranks_per_device / ema_step_s / 989e12;
      std::snprintf(mfu, sizeof mfu, "%.1f%%", 100 * mfu_value);
    }
    if (r.step % o.log_every == 0 || r.step == o.steps || r.skipped) {
      say("step %6" PRId64 "/%" PRId64
          " | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | "
          "MFU %s | ETA %s%s\n",
          r.step, o.steps, r.loss, r.lr, r.grad_norm, tok_s, mfu, format_duration(eta).c_str(),
          r.skipped ? " | SKIPPED (non-finite)" : "");
      std::fflush(stdout);
    }
    nlohmann::json j{{"step", r.step},
                     {"loss", r.loss},
                     {"lr", r.lr},
                     {"grad_norm", r.grad_norm},
                     {"tokens_per_s", tok_s},
                     {"step_ms", dt * 1e3},
                     {"skipped", r.skipped},
                     {"elapsed_s", std::chrono::duration<double>(clock::now() - start).count()}};
    if (on_gpu) j["mfu"] = mfu_value;
    log_json(j);
    if (o.eval_every > 0 && r.step % o.eval_every == 0) evaluate();
    if (o.sample_every > 0 && r.step % o.sample_every == 0) sample();
    if (o.checkpoint_every > 0 && r.step % o.checkpoint_every == 0) save("periodic");
  }
  const bool interrupted = stopping || trainer.step_count() < o.steps;
  if (interrupted)
    say("stopped at step %" PRId64 " of %" PRId64 "\n", trainer.step_count(), o.steps);
  if (o.eval_every > 0 && trainer.step_count() % o.eval_every != 0) evaluate();
  save(interrupted ? "interrupted" : "final");
  bool plot_failed = false;
  if (!o.plot.empty() && comm.rank() == 0) {
    try {
      loss_plot::write(o.plot, train_curve, val_curve);
      say("loss curve: %s\n", o.plot.c_str());
    } catch (const std::exception& e) {
      // Reported now, training's results are kept; the exit status says something failed.
      std::fprintf(stderr, "train_gpt: %s\n", e.what());
      plot_failed = true;
    }
  }
  if (o.sample_every > 0 && trainer.step_count() % o.sample_every != 0) sample();
  say("done: %" PRId64 " steps in %s\n", trainer.step_count(),
      format_duration(std::chrono::duration<double>(clock::now() - start).count()).c_str());
  return stopping ? 130 : plot_failed ? 1 : 0;
}

// One process of a launched job (or the only one), or --ranks in-process ranks.
int run(const Options& o) {
  const kiln::LaunchInfo launch = kiln::detect_launch();
  kiln::CommOptions copts;
  copts.timeout = std::chrono::milliseconds(static_cast<int64_t>(o.comm_timeout * 1000));
  copts.rendezvous_timeout = copts.timeout;
  // The library only reports a failed collective; this program ends, so that mpirun / srun /
  // torchrun stop the other ranks instead of leaving them blocked.
  copts.on_failure = [](const kiln::CommFailure& f) {
    std::fprintf(stderr, "train_gpt: rank %d of %d: %s\n", f.rank, f.world_size, f.message.c_str());
    std::fflush(stderr);
    std::_Exit(1);
  };
  if (o.ranks > 1) {
    if (launch.world_size > 1) {
      throw kiln::Error(kiln::Status::invalid_argument,
                        "--ranks " + std::to_string(o.ranks) + " runs in-process ranks, but " +
                            launch.describe() + " already started several processes");
    }
    // The backend decides where the ranks' buffers live: host memory, or one GPU for all.
    int count = 0;
    const bool gpu =
        o.backend == "cuda" ||
        (o.backend == "auto" && kiln_device_count(&count) == KILN_STATUS_OK && count > 0);
    const int threads =
        o.threads > 0
            ? std::max(1, o.threads / o.ranks)
            : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / o.ranks);
    std::atomic<int> status{0};
    kiln::run_in_process(o.ranks, gpu ? kiln::BackendKind::cuda : kiln::BackendKind::cpu, copts,
                         [&](kiln::Communicator& comm) {
                           t_speaks = comm.rank() == 0;
                           const int rc =
                               run_rank(o, launch, comm, choose_backend(o, launch, threads));
                           if (comm.rank() == 0) status = rc;
                         });
    return status;
  }
  t_speaks = launch.rank == 0;
  // Processes sharing a node share its cores.
  const int threads = o.threads > 0 || launch.local_world_size <= 1
                          ? o.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) /
                                            launch.local_world_size);
  std::shared_ptr<kiln::Backend> backend = choose_backend(o, launch, threads);
  if (launch.world_size == 1) {
    kiln::SingleRankCommunicator single;
    return run_rank(o, launch, single, std::move(backend));
  }
  // NCCL on the backend's GPU (picked by local rank), or TCP between cpu backends.
  const std::unique_ptr<kiln::Communicator> comm = kiln::make_communicator(launch, *backend, copts);
  return run_rank(o, launch, *comm, std::move(backend));
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"train_gpt: train a GPT-2 family model (or a BERT-style encoder) with kiln"};
  app.get_formatter()->column_width(34);
  app.add_option("--data", o.data,
                 "Directory of token shards (train_*.bin, val_*.bin) from kiln_tokenize")
      ->required();
  app.add_option("--backend", o.backend, "auto (cuda when a device exists, else cpu), cuda or cpu")
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}))
      ->capture_default_str();
  app.add_option("--device", o.device,
                 "CUDA device ordinal (default: the launcher's local rank, else 0)")
      ->check(demo_cli::integer(0, 4095));
  app.add_option("--threads", o.threads, "CPU backend threads (0: all cores)")
      ->capture_default_str()
      ->check(demo_cli::integer(0, kiln::limits::kMaxThreads));
  app.add_option(
         "--model", o.model,
         "Preset: gpt2-124m (gpt2), gpt2-350m, gpt2-774m, gpt2-1558m, gpt3-125m, gpt3-350m, "
         "tiny, small, medium; Llama family: smollm2-135m, smollm2-360m, qwen2.5-0.5b, "
         "llama-3.2-1b, tinyllama-1.1b, llama-3.1-8b, llama-tiny, llama-small")
      ->capture_default_str();
  app.add_option("--layers", o.layers, "Override the preset's layer count")
      ->check(demo_cli::integer(1, kiln::limits::kMaxLayers));
  app.add_option("--heads", o.heads, "Override the preset's head count")
      ->check(demo_cli::integer(1, kiln::limits::kMaxHeads));
  app.add_option("--channels", o.channels, "Override the preset's channels (n_embd)")
      ->check(demo_cli::integer(1, kiln::limits::kMaxChannels));
  app.add_option("--max-seq-len", o.max_seq_len, "Override the preset's maximum sequence length")
      ->check(demo_cli::integer(1, kiln::limits::kMaxSeqLen));
  // The model's parts (default: the preset's).
  app.add_option("--kv-heads", o.kv_heads, "Key/value heads (GQA; must divide --heads)")
      ->check(demo_cli::integer(1, kiln::limits::kMaxHeads));
  app.add_option("--norm", o.norm, "Norm: layernorm or rmsnorm")
      ->check(CLI::IsMember({"layernorm", "rmsnorm"}));
  app.add_option("--positions", o.positions, "Positions: learned or rotary")
      ->check(CLI::IsMember({"learned", "rotary"}));
  app.add_option("--mlp", o.mlp, "MLP: gelu (4C) or swiglu (--intermediate wide)")
      ->check(CLI::IsMember({"gelu", "swiglu"}));
  app.add_option("--intermediate", o.intermediate,
                 "SwiGLU's intermediate size (default: 8C/3 rounded up to 64)")
      ->check(demo_cli::integer(1, kiln::limits::kMaxIntermediate));
  app.add_option("--bias", o.bias, "Linear biases: all, qkv (Qwen2) or none (Llama)")
      ->check(CLI::IsMember({"all", "qkv", "none"}));
  app.add_option("--head", o.head, "LM head: tied (the token embedding) or untied")
      ->check(CLI::IsMember({"tied", "untied"}));
  app.add_option("--rope-theta", o.rope_theta, "Rotary base theta (> 1)")
      ->check(demo_cli::number(1, 1e30, true));
  app.add_option("--rope-scaling", o.rope_scaling, "Rotary frequency scaling: none or llama3")
      ->check(CLI::IsMember({"none", "llama3"}));
  app.add_option("--rope-factor", o.rope_factor, "Llama 3 scaling: factor (>= 1)")
      ->check(demo_cli::number(1, 1e6));
  app.add_option("--rope-low-freq-factor", o.rope_low, "Llama 3 scaling: low frequency factor")
      ->check(demo_cli::number(0, 1e6, true));
  app.add_option("--rope-high-freq-factor", o.rope_high, "Llama 3 scaling: high frequency factor")
      ->check(demo_cli::number(0, 1e6, true));
  app.add_option("--rope-original-max-position", o.rope_original,
                 "Llama 3 scaling: the original context")
      ->check(demo_cli::integer(1, int64_t{1} << 40));
  app.add_option("--vocab", o.vocab,
                 "Model vocabulary (default: the shards' vocabulary, +1 mask id for --encoder)")
      ->check(demo_cli::integer(1, kiln::limits::kMaxVocab));
  app.add_flag("--encoder", o.encoder, "BERT-style: bidirectional attention, masked-token loss");
  app.add_option("--mask-fraction", o.mask_fraction, "Encoder: fraction of input tokens masked")
      ->capture_default_str()
      ->check(demo_cli::number(0, 1, true));
  app.add_option("--batch", o.batch, "Sequences per micro-step (B)")
      ->capture_default_str()
      ->check(demo_cli::integer(1, int64_t{1} << 31));
  app.add_option("--seq-len", o.seq_len, "Tokens per sequence (T)")
      ->capture_default_str()
      ->check(demo_cli::integer(1, kiln::limits::kMaxSeqLen));
  app.add_option("--grad-accum", o.grad_accum, "Micro-steps per optimizer step")
      ->capture_default_str()
      ->check(demo_cli::integer(1, int64_t{1} << 20));
  app.add_option("--steps", o.steps, "Optimizer steps in total (a resumed run continues up to it)")
      ->capture_default_str()
      ->check(demo_cli::integer(1, int64_t{1} << 50));
  app.add_option("--lr", o.lr, "Peak learning rate")
      ->capture_default_str()
      ->check(demo_cli::number(0, 10));
  app.add_option("--min-lr-ratio", o.min_lr_ratio, "Final learning rate as a fraction of --lr")
      ->capture_default_str()
      ->check(demo_cli::number(0, 1));
  app.add_option("--warmup", o.warmup, "Warm-up steps (default: 5% of --steps)")
      ->check(demo_cli::integer(0, int64_t{1} << 50));
  app.add_option("--schedule", o.schedule,
                 "Learning-rate decay after warm-up: cosine, linear, constant")
      ->check(CLI::IsMember({"cosine", "linear", "constant"}))
      ->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay (matrices only)")
      ->capture_default_str()
      ->check(demo_cli::number(0, 1000));
  app.add_option("--beta1", o.beta1, "AdamW beta1")
      ->capture_default_str()
      ->check(demo_cli::number(0, 1, false, true));
  app.add_option("--beta2", o.beta2, "AdamW beta2")
      ->capture_default_str()
      ->check(demo_cli::number(0, 1, false, true));
  app.add_option("--grad-clip", o.grad_clip, "Global gradient-norm clip (0: off)")
      ->capture_default_str()
      ->check(demo_cli::number(0, 1e9));
  app.add_option("--recompute", o.recompute,
                 "Recompute in the backward instead of storing: none, gelu (the MLP activation, "
                 "SwiGLU too), layernorm (the norms, RMSNorm too), all")
      ->check(CLI::IsMember({"none", "gelu", "layernorm", "all"}))
      ->capture_default_str();
  app.add_flag("--cuda-graph", o.cuda_graph, "cuda: capture each micro-step as a CUDA graph");
  app.add_flag("--nondeterministic", o.nondeterministic,
               "cuda: let the attention backward accumulate dQ with atomics (faster; the last bits "
               "vary from run to run)");
  app.add_option("--on-nonfinite", o.on_nonfinite,
                 "A NaN/Inf loss or gradient norm: skip the step, or stop training")
      ->check(CLI::IsMember({"skip", "stop"}))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the initialisation, data order, masking and sampling")
      ->capture_default_str()
      ->check(demo_cli::unsigned64());
  app.add_option("--checkpoint-dir", o.checkpoint_dir,
                 "Directory for <dir>/latest.ckpt (written atomically; also at the end)");
  app.add_option("--checkpoint-every", o.checkpoint_every,
                 "Checkpoint every N steps (0: only at the end)")
      ->capture_default_str()
      ->check(demo_cli::integer(0, int64_t{1} << 50));
  app.add_option("--resume", o.resume,
                 "Checkpoint to continue from bit-exactly, or 'auto' (<checkpoint-dir>/latest.ckpt "
                 "if present)");
  app.add_option("--eval-every", o.eval_every, "Validation loss every N steps (0: never)")
      ->capture_default_str()
      ->check(demo_cli::integer(0, int64_t{1} << 50));
  app.add_option("--eval-batches", o.eval_batches, "Validation batches per evaluation")
      ->capture_default_str()
      ->check(demo_cli::integer(1, int64_t{1} << 30));
  app.add_option("--sample-every", o.sample_every,
                 "Print a generated sample every N steps (0: never)")
      ->capture_default_str()
      ->check(demo_cli::integer(0, int64_t{1} << 50));
  app.add_option("--sample-length", o.sample_length, "Tokens per sample")
      ->capture_default_str()
      ->check(demo_cli::integer(1, kiln::limits::kMaxSeqLen));
  app.add_option("--prompt", o.prompt, "Prompt of the samples");
  app.add_option("--tokenizer", o.tokenizer, "Tokenizer of the samples: auto, byte or gpt2")
      ->check(CLI::IsMember({"auto", "byte", "gpt2"}))
      ->capture_default_str();
  app.add_option("--vocab-dir", o.vocab_dir, "GPT-2 tokenizer files (encoder.json, vocab.bpe)")
      ->capture_default_str();
  app.add_option("--temperature", o.temperature, "Sampling temperature (0: greedy)")
      ->capture_default_str()
      ->check(demo_cli::number(0, 100));
  app.add_option("--top-k", o.top_k, "Sample among the k most likely tokens (0: all)")
      ->capture_default_str()
      ->check(demo_cli::integer(0, kiln::limits::kMaxVocab));
  app.add_option("--top-p", o.top_p, "Nucleus sampling threshold (1: off)")
      ->capture_default_str()
      ->check(demo_cli::number(0, 1, true));
  app.add_option("--metrics", o.metrics, "Write metrics as JSON lines to this file");
  app.add_option("--plot", o.plot, "Write the loss curve to this PNG file");
  app.add_option("--log-every", o.log_every, "Print a progress line every N steps")
      ->capture_default_str()
      ->check(demo_cli::integer(1, int64_t{1} << 50));
  app.add_option("--stop-at", o.stop_at,
                 "Stop after this step as if interrupted (checkpoint saved; the schedule still "
                 "spans --steps)")
      ->check(demo_cli::integer(0, int64_t{1} << 50));
  app.add_flag("--dry-run", o.dry_run, "Print the model, data and memory plan, then exit");
  app.add_option("--ranks", o.ranks,
                 "Data-parallel ranks as threads of this process (cpu backend, or N logical ranks "
                 "on one GPU); a launcher (mpirun, srun, torchrun) starts one process per rank "
                 "instead")
      ->check(demo_cli::integer(1, 64))
      ->capture_default_str();
  app.add_flag("--zero1", o.zero1,
               "ZeRO-1: shard the optimizer state (and the fp32 master weights) over the ranks");
  app.add_option("--bucket-mb", o.bucket_mb,
                 "Gradients are reduced in buckets of about this size, overlapped with backward")
      ->capture_default_str()
      ->check(demo_cli::number(0, 1 << 20));
  app.add_option("--comm-timeout", o.comm_timeout,
                 "Seconds a collective (or the start-up rendezvous) may take before the job fails")
      ->capture_default_str()
      ->check(demo_cli::number(0, 1e6, true));
  app.final_callback([&] {
    using demo_cli::refuse_given;
    refuse_given(app, "--device", o.backend == "cpu", "with --backend cpu");
    for (const char* cuda_only : {"--cuda-graph", "--nondeterministic"})
      refuse_given(app, cuda_only, o.backend == "cpu", "with --backend cpu");
    refuse_given(app, "--threads", o.backend == "cuda", "with --backend cuda");
    refuse_given(app, "--mask-fraction", !o.encoder, "without --encoder");
    refuse_given(app, "--checkpoint-every", o.checkpoint_dir.empty(), "without --checkpoint-dir");
    // An explicit checkpoint brings its own model.
    for (const char* shape : {"--model", "--layers", "--heads", "--channels", "--max-seq-len",
                              "--vocab", "--encoder"}) {
      refuse_given(app, shape, !o.resume.empty() && o.resume != "auto",
                   "with --resume (the model comes from the checkpoint)");
    }
  });
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "train_gpt: %s\n", e.message().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_gpt: %s\n", e.what());
  }
  if (o.ranks > 1) {
    // A rank left running (blocked where nothing reaches it, see kiln::run_in_process) must not
    // keep the process alive, nor run while static objects are destroyed.
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(1);
  }
  return 1;
}
