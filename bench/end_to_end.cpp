// bench_end_to_end: whole training steps of GPT-2 124M at T = 1024, and of SmolLM2-360M- and
// Llama-3.2-1B-shaped models at T = 2048, in bf16 on one GPU (PERF.md's rows): tokens/s and MFU,
// with MFU = (6 * parameters + 6 * L * C * T) FLOPs per token times tokens/s over the device's
// datasheet dense bf16 peak (kiln::datasheet_bf16_flops: 989.4 TFLOP/s on an H100 SXM or H200;
// PERF.md's convention; no "mfu" for a device the table lacks). The JSON also carries the model
// TFLOP/s as "tflops", so the report shows them against the measured cuBLAS ceiling. One timed
// repetition is one optimizer step (forward, fused classifier, backward, global norm, AdamW) issued
// by kiln::Trainer without reading the loss; the median over repetitions after warm-up steps. The
// peers are bench/peers/nanogpt.py (PyTorch, torch.compile, flash SDPA) for GPT-2 and
// bench/peers/llama.py (transformers' LlamaForCausalLM from a config, torch.compile, SDPA) for the
// Llama shapes, measured the same way on the same shapes.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bench/harness/harness.hpp"
#include "kiln/kiln.hpp"

namespace {

struct Case {
  std::string preset;
  int64_t batch, seq_len;
  bool graph;
  kiln::Recompute recompute;
};

}  // namespace

int main(int argc, char** argv) {
  const kiln::bench::Options options = kiln::bench::parse_options(
      argc, argv,
      "bench_end_to_end: GPT-2 124M (T = 1024) and Llama-shaped (T = 2048) training steps (bf16): "
      "tokens/s and MFU (PERF.md)");
  if (const int skip = kiln::bench::device_or_skip()) return skip;
  try {
    std::vector<Case> cases = {{"gpt2-124m", 16, 1024, false, {}},
                               {"gpt2-124m", 16, 1024, true, {}},
                               {"smollm2-360m", 4, 2048, false, {}},
                               {"llama-3.2-1b", 4, 2048, false, {}}};
    if (!options.quick) {
      cases.push_back({"smollm2-360m", 8, 2048, true, {}});
      cases.push_back({"llama-3.2-1b", 8, 2048, false, {true, true}});
      cases.push_back({"gpt2-124m", 8, 1024, false, {}});
      cases.push_back({"gpt2-124m", 32, 1024, false, {true, false}});
      cases.push_back({"gpt2-124m", 64, 1024, false, {true, true}});
    }
    auto backend = kiln::make_backend(kiln::BackendKind::cuda, 0);
    const double peak = kiln::datasheet_bf16_flops(kiln::device_info(0));
    cudaStream_t stream = static_cast<cudaStream_t>(backend->native_stream());
    kiln::bench::Report report("end_to_end", options);
    if (!options.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, options));

    for (const Case& c : cases) {
      const kiln::ModelConfig model = kiln::model_preset(c.preset);
      kiln::TrainConfig train;
      train.batch = c.batch;
      train.seq_len = c.seq_len;
      train.cuda_graph = c.graph;
      train.recompute = c.recompute;
      train.optimizer.lr = 6e-4;
      train.optimizer.warmup_steps = 10;
      std::string shape = c.preset + " B=" + std::to_string(c.batch) +
                          " T=" + std::to_string(c.seq_len) + (c.graph ? " graph" : "");
      if (c.recompute.gelu) shape += c.recompute.layernorm ? " recompute=all" : " recompute=gelu";
      std::unique_ptr<kiln::Trainer> trainer;
      try {
        trainer = std::make_unique<kiln::Trainer>(model, train, backend, 1337);
      } catch (const kiln::Error& e) {
        if (e.status() != kiln::Status::out_of_memory) throw;
        std::printf("end_to_end: %s skipped (%s)\n", shape.c_str(), e.message().c_str());
        continue;
      }
      // Random tokens (never zeros): the step's cost does not depend on the text.
      std::mt19937_64 rng(7);
      std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(model.vocab_size) - 1);
      std::vector<int32_t> in(static_cast<std::size_t>(c.batch * c.seq_len)), tg(in.size());
      for (auto& x : in)
        x = d(rng);
      for (auto& x : tg)
        x = d(rng);
      // Check the step trains before timing it: the loss must start near log(V) and fall.
      const double first = trainer->step(in, tg, true).loss;
      double last = first;
      for (int i = 0; i < 5; ++i)
        last = trainer->step(in, tg, true).loss;
      // (Within 1: a wide model's initial logits spread by init_std * sqrt(C) raise it a little.)
      if (!(std::abs(first - std::log(static_cast<double>(model.vocab_size))) < 1.0 &&
            last < first)) {
        kiln::bench::check_failed("bench_end_to_end " + shape + ": does not train (loss " +
                                  std::to_string(first) + " -> " + std::to_string(last) + ")");
        continue;
      }
      const kiln::bench::Timing t = kiln::bench::time_region(
          [&](cudaStream_t) { trainer->step(in, tg, false); }, stream, options, false);
      const double tokens = static_cast<double>(c.batch * c.seq_len);
      const double tok_s = tokens / (t.median_ms * 1e-3);
      const double flops = model.flops_per_token(c.seq_len) * tokens;
      const bool llama = model.positions == kiln::PositionKind::rotary;
      nlohmann::json record{{"op", llama ? "llama_train_step" : "gpt2_train_step"},
                            {"impl", "kiln"},
                            {"shape", shape},
                            {"B", c.batch},
                            {"T", c.seq_len},
                            {"params", model.num_parameters()},
                            {"ms", t.median_ms},
                            {"tokens_per_s", tok_s},
                            {"tflops", kiln::bench::tflops(flops, t.median_ms)}};
      if (peak > 0) {
        record["mfu"] = flops / (t.median_ms * 1e-3) / peak;
        record["peak_tflops"] = peak / 1e12;
      }
      report.add(std::move(record));
    }
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "bench_end_to_end: %s\n", e.what());
    return 1;
  }
  return kiln::bench::exit_status();
}
