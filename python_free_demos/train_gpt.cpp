// train_gpt: trains a GPT-2 family model (or a BERT-style encoder), or a Llama-family one
// (--model smollm2-135m, llama-tiny, ... or a preset with other parts: --norm rmsnorm
// --positions rotary --mlp swiglu --kv-heads 2 ...), on token shards.
//
// clang-format off
//   kiln_tokenize --tokenizer byte --val-fraction 0.05 --out data/fortunes /usr/share/games/fortunes
//   train_gpt --data data/fortunes --model tiny --batch 8 --seq-len 64 --steps 300
//   train_gpt --data data/owt --model gpt2 --batch 16 --seq-len 1024 --grad-accum 4
//             --steps 5000 --lr 6e-4 --warmup 700 --checkpoint-dir ckpt --checkpoint-every 500
//   train_gpt --data data/owt --resume ckpt/latest.ckpt ...       (continues bit-exactly)
//   mpirun -np 8 train_gpt --data data/owt --model gpt2 ...         (8 GPUs; also srun, torchrun)
//   train_gpt --ranks 4 --backend cpu ...                          (4 in-process ranks, threads)
//   train_gpt --hf SmolLM2-135M --data ... --export-hf out   (a Hugging Face folder in and out)
// clang-format on
//
// Prints the memory plan, then one progress line per step (loss, learning rate, gradient norm,
// tokens/s, MFU by bench/README.md's convention against the device's datasheet peak, n/a where that
// is unknown or on the cpu backend, ETA); evaluates, samples and checkpoints every N steps; writes
// metrics as JSON lines and the loss curve as a PNG. Ctrl-C stops after the current step, saving a
// checkpoint when a checkpoint directory is set.
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

#include "demo_options.hpp"
#include "kiln/kiln.hpp"
#include "kiln/launch.hpp"
#include "loss_plot.hpp"
#include "train_gpt_options.hpp"

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

using train_gpt::Options;

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
  std::string why;
  if (kiln::resolve_backend_kind(o.backend, &why) == kiln::BackendKind::cuda) {
    return kiln::make_backend(kiln::BackendKind::cuda, choose_device(o, launch));
  }
  if (!why.empty()) {
    say("backend: no CUDA device (%s); training on the cpu backend instead\n", why.c_str());
  }
  return kiln::make_cpu_backend(kiln::DType::f32, threads);
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

// The loader's place in a resumed run: the checkpoint's, moved to this run's batch and ranks.
void restore_loader(kiln::DataLoader& loader, const std::string& data_state,
                    const std::string& path, int64_t B, int world) {
  const kiln::DataLoaderState saved = kiln::loader_state_from_json(data_state, path);
  const kiln::DataLoaderState s =
      kiln::rebase_loader_state(saved, loader.steps_per_epoch(), B, world);
  if (s.B != saved.B || s.world_size != saved.world_size) {
    say("data: the checkpoint read %" PRIu64 " windows of epoch %" PRIu64 " as batch %" PRIu64
        " x %" PRIu64 " rank(s); continuing at step %" PRIu64 " with batch %" PRId64
        " x %d rank(s)\n",
        saved.step * saved.B * saved.world_size, s.epoch, saved.B, saved.world_size, s.step, B,
        world);
  }
  loader.restore(s);
}

// The peak MFU is measured against: the device's datasheet figure, 0 (no MFU) when unknown.
double mfu_peak(const kiln::Backend& backend) {
  if (backend.kind() != kiln::BackendKind::cuda) return 0;
  const kiln_device_info_t info = kiln::device_info(backend.device_ordinal());
  const double peak = kiln::datasheet_bf16_flops(info);
  if (peak > 0) {
    say("MFU: against %s's datasheet dense bf16 peak, %.1f TFLOP/s\n", info.name, peak / 1e12);
  } else {
    say("MFU: not shown (no datasheet peak known for %s, compute capability %d.%d)\n", info.name,
        info.compute_major, info.compute_minor);
  }
  return peak;
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
  const std::string resume_path = kiln::resume_path(o.resume, o.checkpoint_dir).string();
  kiln::ModelConfig model;
  std::optional<kiln::HfFolder> hf;  // --hf: the folder's model, weights and tokenizer
  if (!o.hf.empty()) hf = kiln::load_hf_folder(o.hf, o.max_seq_len);
  if (!resume_path.empty()) {
    resume_info = kiln::read_checkpoint(resume_path, nullptr);
    model = resume_info->model;
    say("resuming from %s (step %" PRId64 "); the model comes from the checkpoint\n",
        resume_path.c_str(), resume_info->step);
  } else if (hf) {
    model = hf->model;
    say("model: from the Hugging Face folder %s\n", o.hf.c_str());
  } else {
    model = kiln::training_model(o.model, data_vocab, o.seq_len, train_gpt::model_overrides(o));
  }
  if (data_vocab > model.vocab_size) {
    throw kiln::Error(kiln::Status::invalid_argument,
                      "the shards in '" + o.data + "' use a vocabulary of " +
                          std::to_string(data_vocab) + " tokens, more than the model's " +
                          std::to_string(model.vocab_size));
  }
  const kiln::TrainConfig tc = train_gpt::train_config(o, model);
  // Refused now rather than after training.
  if (!o.export_hf.empty()) kiln::check_hf_llama_export(model, o.export_hf, o.hf);

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
    restore_loader(loader, resume_info->data_state, resume_path, o.batch, world);
  } else if (hf) {
    trainer.set_parameters(hf->params);
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
    if (hf && hf->tokenizer) {
      tokenizer = std::move(hf->tokenizer);
    } else {
      tokenizer =
          kiln::make_tokenizer(demo_cli::tokenizer_kind(o.tokenizer, data_vocab), o.vocab_dir);
    }
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
    const fs::path path = kiln::latest_checkpoint(o.checkpoint_dir);
    trainer.save_checkpoint(path, kiln::loader_state_to_json(loader.state()));
    say("checkpoint: %s (step %" PRId64 ", %s)\n", path.c_str(), trainer.step_count(), why);
  };
  auto sample = [&] {
    if (!generator) return;
    const kiln::SamplingConfig sc =
        o.sampling.config(o.seed + static_cast<uint64_t>(trainer.step_count()));
    const auto ids =
        generator->generate(demo_cli::prompt_tokens(*tokenizer, o.prompt), o.sample_length, sc,
                            [&](int32_t t) { return t != tokenizer->eot_token(); });
    std::vector<int32_t> text_ids;
    for (int32_t t : ids) {
      // A model's vocabulary may outgrow its tokenizer's (Qwen2.5: 151936 rows, 151665 tokens).
      if (t < tokenizer->vocab_size() && !tokenizer->is_special(t)) text_ids.push_back(t);
    }
    const std::string text = tokenizer->decode(text_ids);
    say("---- sample at step %" PRId64 " ----\n%s%s\n--------\n", trainer.step_count(),
        o.prompt.c_str(), text.c_str());
    log_json({{"step", trainer.step_count()}, {"sample", o.prompt + text}});
  };
  std::vector<loss_plot::Point> train_curve, val_curve;
  auto evaluate = [&] {
    if (!val_loader) return;
    const kiln::EvalResult e = kiln::evaluate_loss(trainer, *val_loader, o.eval_batches, comm);
    say("eval: step %" PRId64 " val loss %.4f (%" PRId64 " batches x %d rank(s))\n",
        trainer.step_count(), e.loss, e.batches, world);
    val_curve.push_back({static_cast<double>(trainer.step_count()), e.loss});
    log_json({{"step", trainer.step_count()}, {"val_loss", e.loss}});
  };

  // ---- the loop ------------------------------------------------------------------------------
  std::signal(SIGINT, on_sigint);
  // N logical ranks on one GPU share its throughput.
  kiln::ThroughputMeter meter(
      model.flops_per_token(o.seq_len) * static_cast<double>(tc.tokens_per_step()), world,
      launch.world_size > 1 ? 1 : world, mfu_peak(*backend));
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  if (trainer.step_count() == 0 && o.eval_every > 0) evaluate();
  const int64_t last_step = o.stop_at > 0 ? std::min(o.stop_at, o.steps) : o.steps;
  // Every rank stops after the same step: a Ctrl-C seen by any rank counts for all.
  bool stopping = false;
  std::vector<int32_t> in, tg;
  const bool encoder = model.kind == kiln::ModelKind::encoder;
  while (trainer.step_count() < last_step && !(stopping = kiln::any_rank(comm, g_stop))) {
    kiln::next_batches(loader, o.grad_accum, in, tg);
    const auto t0 = clock::now();
    const kiln::StepResult r = trainer.step(in, encoder ? std::vector<int32_t>{} : tg, true);
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    const kiln::Throughput f = meter.add(dt, r.tokens);
    train_curve.push_back({static_cast<double>(r.step), r.loss});
    char mfu[32] = "n/a";
    if (meter.mfu_known()) std::snprintf(mfu, sizeof mfu, "%.1f%%", 100 * f.mfu);
    if (r.step % o.log_every == 0 || r.step == o.steps || r.skipped) {
      say("step %6" PRId64 "/%" PRId64
          " | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | "
          "MFU %s | ETA %s%s\n",
          r.step, o.steps, r.loss, r.lr, r.grad_norm, f.tokens_per_s, mfu,
          format_duration(meter.seconds_left(o.steps - r.step)).c_str(),
          r.skipped ? " | SKIPPED (non-finite)" : "");
      std::fflush(stdout);
    }
    nlohmann::json j{{"step", r.step},
                     {"loss", r.loss},
                     {"lr", r.lr},
                     {"grad_norm", r.grad_norm},
                     {"tokens_per_s", f.tokens_per_s},
                     {"step_ms", dt * 1e3},
                     {"skipped", r.skipped},
                     {"elapsed_s", std::chrono::duration<double>(clock::now() - start).count()}};
    if (meter.mfu_known()) j["mfu"] = f.mfu;
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
  if (!o.export_hf.empty()) {
    const std::vector<float> params = trainer.parameters();  // collective under ZeRO-1
    if (comm.rank() == 0) {
      kiln::HfExportOptions eo;
      eo.dtype = o.export_hf_dtype == "bf16" ? kiln::SafeDtype::BF16 : kiln::SafeDtype::F32;
      kiln::export_hf_folder(o.export_hf, model, params, o.hf, eo);
      say("exported: %s (Hugging Face, %s)\n", o.export_hf.c_str(), o.export_hf_dtype.c_str());
    }
  }
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
    const bool gpu = kiln::resolve_backend_kind(o.backend) == kiln::BackendKind::cuda;
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
  train_gpt::add_options(app, o);
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
