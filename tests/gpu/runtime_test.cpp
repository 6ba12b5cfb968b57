// The training runtime on a GPU: the cuda backend (bf16 compute, fp32 master weights) against the
// cpu backend (fp32 references) on a tiny model, determinism, CUDA graphs, the non-finite guard,
// bit-exact resume and the KV-cache generator.
//
// Tolerances. The cuda backend rounds every activation to bf16 (relative precision 2^-8) through
// about 25 ops per layer; the cpu backend keeps fp32. Against the cpu backend we therefore allow
// a few percent of the typical magnitude, relative to each tensor's RMS (a transposed weight, a
// wrong stride or a missing epilogue gives errors of order 100%); determinism and graph replays
// are checked bit for bit.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <memory>
#include <vector>

#include "kiln/kiln.hpp"
#include "tests/common/support.hpp"

namespace {

kiln::ModelConfig tiny_model(kiln::ModelKind kind = kiln::ModelKind::decoder) {
  kiln::ModelConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 128;      // head dim 64: kiln's own attention kernels
  c.vocab_size = 100;  // padded to 128
  c.max_seq_len = 32;
  c.kind = kind;
  if (kind == kiln::ModelKind::encoder) c.mask_token_id = 99;
  return c.resolved();
}

kiln::TrainConfig tiny_train(double lr = 1e-3) {
  kiln::TrainConfig t;
  t.batch = 2;
  t.seq_len = 32;
  t.grad_accum = 2;
  t.optimizer.lr = lr;
  t.optimizer.warmup_steps = 2;
  t.optimizer.decay_steps = 10;
  return t;
}

struct Batch {
  std::vector<int32_t> in, tg;
};

Batch make_batch(int64_t step, int64_t n, int32_t vocab) {
  auto rng = kiln::test::make_rng(1000 + static_cast<uint64_t>(step));
  std::uniform_int_distribution<int32_t> d(0, vocab - 2);
  Batch b;
  b.in.resize(static_cast<std::size_t>(n));
  b.tg.resize(static_cast<std::size_t>(n));
  for (auto& x : b.in)
    x = d(rng);
  for (auto& x : b.tg)
    x = d(rng);
  return b;
}

double rms(const std::vector<float>& x, std::size_t begin, std::size_t end) {
  double s = 0;
  for (std::size_t i = begin; i < end; ++i)
    s += static_cast<double>(x[i]) * x[i];
  return std::sqrt(s / static_cast<double>(std::max<std::size_t>(1, end - begin)));
}

// max |a - b| over [begin, end) relative to rms(b) there (plus a floor for all-zero tensors).
double relative_error(const std::vector<float>& a, const std::vector<float>& b, std::size_t begin,
                      std::size_t end) {
  double worst = 0;
  for (std::size_t i = begin; i < end; ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return worst / (rms(b, begin, end) + 1e-6);
}

// ||a - b|| / ||b|| over [begin, end): robust to the few elements bf16 rounding hits hardest.
double relative_l2(const std::vector<float>& a, const std::vector<float>& b, std::size_t begin,
                   std::size_t end) {
  double d = 0, n = 0;
  for (std::size_t i = begin; i < end; ++i) {
    d += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    n += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(d) / (std::sqrt(n) + 1e-12);
}

std::shared_ptr<kiln::Backend> cuda() {
  return kiln::make_backend(kiln::BackendKind::cuda, 0);
}

}  // namespace

TEST_CASE("cuda backend matches the cpu backend: logits, loss, every gradient, ten steps",
          "[runtime][smoke]") {
  const kiln::ModelConfig m = tiny_model();
  const kiln::TrainConfig t = tiny_train();
  kiln::Trainer gpu(m, t, cuda(), 17);
  kiln::Trainer cpu(m, t, kiln::make_cpu_backend(kiln::DType::f32), 17);
  // The cpu trainer starts from the bf16-rounded weights the gpu computes with.
  cpu.set_parameters(kiln::test::round_to_bf16(gpu.parameters()));
  gpu.set_parameters(cpu.parameters());

  // Logits of one forward pass (B * T, V).
  kiln::TrainConfig one = t;
  one.grad_accum = 1;
  const Batch b0 = make_batch(0, 2 * 32, 100);
  {
    kiln::Trainer g1(m, one, cuda(), 17), c1(m, one, kiln::make_cpu_backend(), 17);
    g1.set_parameters(cpu.parameters());
    c1.set_parameters(cpu.parameters());
    const auto lg = g1.logits(b0.in), lc = c1.logits(b0.in);
    REQUIRE(lg.size() == lc.size());
    CHECK(relative_l2(lg, lc, 0, lc.size()) < 0.02);
    CHECK(relative_error(lg, lc, 0, lc.size()) < 0.1);
    const double lossg = g1.evaluate(b0.in, b0.tg), lossc = c1.evaluate(b0.in, b0.tg);
    CHECK(lossg == Approx(lossc).epsilon(0.01));
  }

  // One step's gradients, tensor by tensor, then ten steps of losses.
  for (int64_t step = 0; step < 10; ++step) {
    const Batch b = make_batch(step, 2 * 2 * 32, 100);
    const kiln::StepResult rg = gpu.step(b.in, b.tg), rc = cpu.step(b.in, b.tg);
    INFO("step " << step << ": loss gpu " << rg.loss << " cpu " << rc.loss);
    REQUIRE_FALSE(rg.skipped);
    CHECK(rg.loss == Approx(rc.loss).epsilon(0.02));
    CHECK(rg.grad_norm == Approx(rc.grad_norm).epsilon(0.05));
    if (step == 0) {
      const auto gg = gpu.gradients(), gc = cpu.gradients();
      for (const kiln::ParamTensor& p : gpu.layout().tensors()) {
        const auto begin = static_cast<std::size_t>(p.offset);
        const auto end = begin + static_cast<std::size_t>(p.kind == kiln::ParamKind::wte
                                                              ? m.vocab_size * m.n_embd
                                                              : p.numel());
        INFO(p.name << ": relative L2 " << relative_l2(gg, gc, begin, end) << ", max / rms "
                    << relative_error(gg, gc, begin, end));
        CHECK(relative_l2(gg, gc, begin, end) < 0.05);
      }
    }
  }
  // The master weights after ten AdamW steps. AdamW's update is about lr * sign(g) wherever the
  // gradient is consistent, so elements whose tiny gradients bf16 flips move apart by up to
  // 2 lr per step: compare in L2, where those few elements weigh little.
  const auto pg = gpu.parameters(), pc = cpu.parameters();
  CHECK(relative_l2(pg, pc, 0, pc.size()) < 0.05);
}

TEST_CASE("cuda training is deterministic and CUDA graphs replay it bit for bit", "[runtime]") {
  const kiln::ModelConfig m = tiny_model();
  kiln::TrainConfig t = tiny_train();
  kiln::Trainer a(m, t, cuda(), 5), b(m, t, cuda(), 5);
  t.cuda_graph = true;
  kiln::Trainer g(m, t, cuda(), 5);
  for (int64_t step = 0; step < 10; ++step) {
    const Batch batch = make_batch(step, 2 * 2 * 32, 100);
    const double la = a.step(batch.in, batch.tg).loss;
    const double lb = b.step(batch.in, batch.tg).loss;
    const double lg = g.step(batch.in, batch.tg).loss;
    CHECK(la == lb);
    CHECK(la == lg);
  }
  CHECK(a.parameters() == b.parameters());
  CHECK(a.parameters() == g.parameters());
}

TEST_CASE("cuda: a non-deterministic backward trains as the deterministic one does", "[runtime]") {
  // Only the order of attention's fp32 dQ additions differs, so the runs may part in the last
  // bits, never by more than bf16 noise over ten steps.
  const kiln::ModelConfig m = tiny_model();
  kiln::TrainConfig t = tiny_train();
  kiln::Trainer exact(m, t, cuda(), 5);
  t.deterministic = false;
  kiln::Trainer fast(m, t, cuda(), 5);
  for (int64_t step = 0; step < 10; ++step) {
    const Batch batch = make_batch(step, 2 * 2 * 32, 100);
    const double le = exact.step(batch.in, batch.tg).loss;
    const kiln::StepResult rf = fast.step(batch.in, batch.tg);
    REQUIRE_FALSE(rf.skipped);
    CHECK(rf.loss == Approx(le).epsilon(1e-2));
  }
  const auto pe = exact.parameters(), pf = fast.parameters();
  CHECK(relative_l2(pf, pe, 0, pe.size()) < 1e-2);
}

TEST_CASE("cuda: a non-finite loss skips the step and leaves the weights", "[runtime]") {
  const kiln::ModelConfig m = tiny_model();
  kiln::Trainer t(m, tiny_train(), cuda(), 3);
  auto p = t.parameters();
  p[static_cast<std::size_t>(t.layout().get(kiln::ParamKind::lnf_b).offset)] = NAN;
  t.set_parameters(p);
  const Batch b = make_batch(0, 2 * 2 * 32, 100);
  const kiln::StepResult r = t.step(b.in, b.tg);
  CHECK(r.skipped);
  const auto after = t.parameters();
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (!std::isnan(p[i])) REQUIRE(after[i] == p[i]);
  }
}

TEST_CASE("cuda: resume from a checkpoint continues bit-exactly", "[runtime]") {
  const kiln::ModelConfig m = tiny_model();
  const auto dir = std::filesystem::temp_directory_path() / "kiln_gpu_runtime_test";
  std::filesystem::create_directories(dir);
  std::vector<double> losses;
  {
    kiln::Trainer a(m, tiny_train(), cuda(), 9);
    for (int64_t s = 0; s < 6; ++s) {
      if (s == 3) a.save_checkpoint(dir / "a.ckpt");
      const Batch b = make_batch(s, 2 * 2 * 32, 100);
      losses.push_back(a.step(b.in, b.tg).loss);
    }
  }
  kiln::Trainer r(m, tiny_train(), cuda(), 1);
  CHECK(r.load_checkpoint(dir / "a.ckpt").step == 3);
  for (int64_t s = 3; s < 6; ++s) {
    const Batch b = make_batch(s, 2 * 2 * 32, 100);
    CHECK(r.step(b.in, b.tg).loss == losses[static_cast<std::size_t>(s)]);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("cuda: the encoder's masked loss matches the cpu backend", "[runtime]") {
  const kiln::ModelConfig m = tiny_model(kiln::ModelKind::encoder);
  kiln::TrainConfig t = tiny_train();
  t.grad_accum = 1;
  kiln::Trainer gpu(m, t, cuda(), 4);
  kiln::Trainer cpu(m, t, kiln::make_cpu_backend(), 4);
  cpu.set_parameters(kiln::test::round_to_bf16(gpu.parameters()));
  const Batch b = make_batch(0, 2 * 32, 99);
  CHECK(gpu.evaluate(b.in, {}) == Approx(cpu.evaluate(b.in, {})).epsilon(0.01));
}

TEST_CASE("cuda: KV-cache decoding matches the full forward pass", "[runtime]") {
  const kiln::ModelConfig m = tiny_model();
  kiln::TrainConfig t;
  t.batch = 1;
  t.seq_len = 32;
  kiln::Trainer trainer(m, t, cuda(), 8);
  const Batch b = make_batch(0, 32, 100);
  const auto full = trainer.logits(b.in);
  kiln::Generator gen(trainer);
  for (int64_t pos = 0; pos < 32; ++pos) {
    const auto step = gen.feed(std::span<const int32_t>(&b.in[static_cast<std::size_t>(pos)], 1));
    const std::vector<float> row(full.begin() + pos * 100, full.begin() + (pos + 1) * 100);
    INFO("position " << pos);
    // Both paths compute in bf16 but split the work differently (1 query vs 32 per call).
    CHECK(relative_l2(step, row, 0, 100) < 0.02);
    CHECK(relative_error(step, row, 0, 100) < 0.1);
  }
  kiln::SamplingConfig sc;
  sc.seed = 11;
  const std::vector<int32_t> prompt{1, 2, 3};
  CHECK(gen.generate(prompt, 40, sc) == gen.generate(prompt, 40, sc));
}

// ---- Llama family ------------------------------------------------------------------------------

namespace {

// RMSNorm, rotary with Llama 3 scaling, SwiGLU, GQA 4:1, untied head; head dim 64 (kiln's own
// attention kernels), every width a multiple of 8 (16-byte vectors).
kiln::ModelConfig tiny_llama() {
  kiln::ModelConfig c = kiln::model_preset("llama-tiny", 100);
  c.n_embd = 256;
  c.n_head = 4;
  c.n_kv_head = 1;
  c.intermediate_size = 704;
  c.max_seq_len = 32;
  c.rope.original_max_position = 256;
  return c.resolved();
}

// One step of the cuda backend against the cpu backend from the same bf16 weights: loss, norm and
// every gradient tensor; then `steps` more steps' losses.
void compare_llama_step(const kiln::ModelConfig& m, int64_t steps) {
  const kiln::TrainConfig t = tiny_train();
  kiln::Trainer gpu(m, t, cuda(), 17);
  kiln::Trainer cpu(m, t, kiln::make_cpu_backend(kiln::DType::f32), 17);
  cpu.set_parameters(kiln::test::round_to_bf16(gpu.parameters()));
  gpu.set_parameters(cpu.parameters());
  for (int64_t step = 0; step <= steps; ++step) {
    const Batch b = make_batch(step, 2 * 2 * 32, 100);
    const kiln::StepResult rg = gpu.step(b.in, b.tg), rc = cpu.step(b.in, b.tg);
    INFO(m.describe() << " step " << step << ": loss gpu " << rg.loss << " cpu " << rc.loss);
    REQUIRE_FALSE(rg.skipped);
    CHECK(rg.loss == Approx(rc.loss).epsilon(0.02));
    CHECK(rg.grad_norm == Approx(rc.grad_norm).epsilon(0.05));
    if (step > 0) continue;
    const auto gg = gpu.gradients(), gc = cpu.gradients();
    for (const kiln::ParamTensor& p : gpu.layout().tensors()) {
      const bool vocab = p.kind == kiln::ParamKind::wte || p.kind == kiln::ParamKind::lm_head;
      const auto begin = static_cast<std::size_t>(p.offset);
      const auto end =
          begin + static_cast<std::size_t>(vocab ? m.vocab_size * m.n_embd : p.numel());
      INFO(p.name << ": relative L2 " << relative_l2(gg, gc, begin, end));
      CHECK(relative_l2(gg, gc, begin, end) < 0.05);
    }
  }
}

}  // namespace

TEST_CASE("cuda: a tiny Llama's step matches the cpu backend (smoke)", "[runtime][llama][smoke]") {
  compare_llama_step(tiny_llama(), 0);
}

TEST_CASE("cuda: Llama and Qwen-style steps match the cpu backend over ten steps",
          "[runtime][llama]") {
  compare_llama_step(tiny_llama(), 9);
  kiln::ModelConfig qwen = tiny_llama();
  qwen.n_kv_head = 2;
  qwen.bias = kiln::BiasKind::qkv;
  qwen.tied_embeddings = true;
  qwen.rope.scaling = kiln::RopeScaling::none;
  compare_llama_step(qwen.resolved(), 9);
}

TEST_CASE("cuda: Llama training is deterministic, with and without CUDA graphs",
          "[runtime][llama]") {
  const kiln::ModelConfig m = tiny_llama();
  kiln::TrainConfig t = tiny_train();
  kiln::Trainer a(m, t, cuda(), 3), b(m, t, cuda(), 3);
  t.cuda_graph = true;
  t.recompute.gelu = t.recompute.layernorm = true;
  kiln::Trainer g(m, t, cuda(), 3);
  for (int64_t step = 0; step < 3; ++step) {
    const Batch batch = make_batch(step, 2 * 2 * 32, 100);
    const auto ra = a.step(batch.in, batch.tg), rb = b.step(batch.in, batch.tg),
               rg = g.step(batch.in, batch.tg);
    CHECK(ra.loss == rb.loss);
    CHECK(ra.loss == rg.loss);
  }
  CHECK(a.parameters() == b.parameters());
  CHECK(a.parameters() == g.parameters());
}

TEST_CASE("cuda: Llama KV-cache decoding (key/value heads only) matches the full forward",
          "[runtime][llama][smoke]") {
  const kiln::ModelConfig m = tiny_llama();
  kiln::TrainConfig t;
  t.batch = 1;
  t.seq_len = 32;
  kiln::Trainer trainer(m, t, cuda(), 8);
  const Batch b = make_batch(0, 32, 100);
  const auto full = trainer.logits(b.in);
  kiln::Generator gen(trainer);
  for (int64_t pos = 0; pos < 32; ++pos) {
    const auto step = gen.feed(std::span<const int32_t>(&b.in[static_cast<std::size_t>(pos)], 1));
    const std::vector<float> row(full.begin() + pos * 100, full.begin() + (pos + 1) * 100);
    INFO("position " << pos);
    CHECK(relative_l2(step, row, 0, 100) < 0.02);
    CHECK(relative_error(step, row, 0, 100) < 0.1);
  }
}
