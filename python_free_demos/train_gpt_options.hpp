// train_gpt's command line: its options, their checks, the combinations it refuses, and the
// runtime's configurations they make.
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cli_checks.hpp"
#include "demo_options.hpp"
#include "kiln/kiln.hpp"

namespace train_gpt {

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
  demo_cli::Sampling sampling;
  std::string metrics, plot;
  int64_t log_every = 1;
  int64_t stop_at = 0;
  bool dry_run = false;
  int ranks = 1;
  bool zero1 = false;
  double bucket_mb = 25;
  double comm_timeout = 600;
  // Hugging Face folders: the model to start from, and where to write the result.
  std::string hf, export_hf, export_hf_dtype = "f32";
};

// Adds every option to `app`, bound to `o`.
inline void add_options(CLI::App& app, Options& o) {
  app.add_option("--data", o.data,
                 "Directory of token shards (train_*.bin, val_*.bin) from kiln_tokenize")
      ->required();
  demo_cli::add_backend_option(app, o.backend);
  app.add_option("--device", o.device,
                 "CUDA device ordinal (default: the launcher's local rank, else 0)")
      ->check(demo_cli::integer(0, 4095));
  demo_cli::add_threads_option(app, o.threads);
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
  demo_cli::add_vocab_dir_option(app, o.vocab_dir);
  demo_cli::add_sampling_options(app, o.sampling);
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
  app.add_option("--hf", o.hf,
                 "Start from a Hugging Face Llama / Qwen2 folder: its config.json picks the model, "
                 "its weights initialise it, its tokenizer.json (if any) decodes the samples");
  app.add_option("--export-hf", o.export_hf,
                 "At the end, write the model as a Hugging Face folder here (with the --hf "
                 "folder's tokenizer.json and tokenizer_config.json)");
  app.add_option("--export-hf-dtype", o.export_hf_dtype, "Weights of --export-hf: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  app.final_callback([&] {
    using demo_cli::refuse_given;
    refuse_given(app, "--device", o.backend == "cpu", "with --backend cpu");
    for (const char* cuda_only : {"--cuda-graph", "--nondeterministic"})
      refuse_given(app, cuda_only, o.backend == "cpu", "with --backend cpu");
    refuse_given(app, "--threads", o.backend == "cuda", "with --backend cuda");
    refuse_given(app, "--mask-fraction", !o.encoder, "without --encoder");
    refuse_given(app, "--checkpoint-every", o.checkpoint_dir.empty(), "without --checkpoint-dir");
    refuse_given(app, "--export-hf-dtype", o.export_hf.empty(), "without --export-hf");
    // The folder's config is the model.
    for (const char* part :
         {"--model", "--layers", "--heads", "--channels", "--vocab", "--encoder", "--kv-heads",
          "--norm", "--positions", "--mlp", "--intermediate", "--bias", "--head", "--rope-theta",
          "--rope-scaling", "--rope-factor", "--rope-low-freq-factor", "--rope-high-freq-factor",
          "--rope-original-max-position"}) {
      refuse_given(app, part, !o.hf.empty(), "with --hf (the folder's config.json is the model)");
    }
    refuse_given(app, "--hf", !o.resume.empty() && o.resume != "auto",
                 "with --resume (the model comes from the checkpoint)");
    // An explicit checkpoint brings its own model.
    for (const char* shape : {"--model", "--layers", "--heads", "--channels", "--max-seq-len",
                              "--vocab", "--encoder"}) {
      refuse_given(app, shape, !o.resume.empty() && o.resume != "auto",
                   "with --resume (the model comes from the checkpoint)");
    }
  });
}

// The model options (checked by CLI11) as the runtime's overrides of the preset.
inline kiln::ModelOverrides model_overrides(const Options& o) {
  kiln::ModelOverrides m;
  m.vocab_size = o.vocab;
  m.n_layer = o.layers;
  m.n_head = o.heads;
  m.n_embd = o.channels;
  m.max_seq_len = o.max_seq_len;
  m.encoder = o.encoder;
  m.n_kv_head = o.kv_heads;
  m.intermediate_size = o.intermediate;
  if (!o.norm.empty()) m.norm = kiln::parse_norm_kind(o.norm);
  if (!o.positions.empty()) m.positions = kiln::parse_position_kind(o.positions);
  if (!o.mlp.empty()) m.mlp = kiln::parse_mlp_kind(o.mlp);
  if (!o.bias.empty()) m.bias = kiln::parse_bias_kind(o.bias);
  if (!o.head.empty()) m.tied_embeddings = o.head == "tied";
  m.rope_theta = o.rope_theta;
  if (!o.rope_scaling.empty()) m.rope_scaling = kiln::parse_rope_scaling(o.rope_scaling);
  m.rope_factor = o.rope_factor;
  m.rope_low_freq_factor = o.rope_low;
  m.rope_high_freq_factor = o.rope_high;
  m.rope_original_max_position = o.rope_original;
  return m;
}

// The training options as the runtime's TrainConfig, checked against the model.
inline kiln::TrainConfig train_config(const Options& o, const kiln::ModelConfig& model) {
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
  return tc;
}

}  // namespace train_gpt
