// The Llama family on the CPU backend: the presets' published parameter counts, descriptions
// refused naming the field, the layout of the parts, whole-model gradients of a tiny Llama (GQA
// 4:1, untied head, Llama 3 scaling, SwiGLU, RMSNorm) and of a Qwen-style q/k/v-bias model
// against central finite differences (fp64), recompute equivalence, KV-cache decoding against the
// full forward, checkpoints (round trip, resume bit-exact, descriptions written before the parts
// existed), data-parallel ranks against one rank with the whole batch, and the forward against
// Hugging Face's Llama written from scratch.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/communicator.hpp"
#include "kiln/generate.hpp"
#include "kiln/hf_gpt2.hpp"
#include "kiln/model.hpp"
#include "kiln/trainer.hpp"
#include "runtime/model_json.hpp"
#include "tests/common/support.hpp"

using kiln::ModelConfig;
using kiln::ParamKind;
using kiln::ParamLayout;
using kiln::TrainConfig;
using kiln::Trainer;

namespace {

// Every part on: RMSNorm, rotary with Llama 3 scaling whose three bands all occur at head dim 8
// (wavelengths 6.3 kept, 63 interpolated, 628 and 6283 scaled), SwiGLU, GQA 4:1, untied head.
ModelConfig llama(int64_t L = 2, int64_t V = 11, int64_t T = 8) {
  ModelConfig c;
  c.n_layer = L;
  c.n_head = 4;
  c.n_kv_head = 1;
  c.n_embd = 32;
  c.intermediate_size = 24;
  c.vocab_size = V;
  c.max_seq_len = T;
  c.norm = kiln::NormKind::rmsnorm;
  c.positions = kiln::PositionKind::rotary;
  c.mlp = kiln::MlpKind::swiglu;
  c.bias = kiln::BiasKind::none;
  c.tied_embeddings = false;
  c.rope.theta = 10000;
  c.rope.scaling = kiln::RopeScaling::llama3;
  c.rope.factor = 4;
  c.rope.low_freq_factor = 1;
  c.rope.high_freq_factor = 4;
  c.rope.original_max_position = 64;
  return c.resolved();
}

// Qwen2's parts: biases on q, k, v only, tied head, no scaling, GQA 2:1.
ModelConfig qwen(int64_t V = 11, int64_t T = 8) {
  ModelConfig c = llama(2, V, T);
  c.n_kv_head = 2;
  c.bias = kiln::BiasKind::qkv;
  c.tied_embeddings = true;
  c.rope.scaling = kiln::RopeScaling::none;
  c.rope.theta = 1e6;
  return c;
}

TrainConfig train(int64_t B, int64_t T, double lr = 0) {
  TrainConfig t;
  t.batch = B;
  t.seq_len = T;
  t.optimizer.lr = lr;
  t.optimizer.weight_decay = 0;
  t.optimizer.grad_clip = 0;
  return t;
}

std::vector<int32_t> random_tokens(std::size_t n, int32_t V, std::mt19937_64& rng) {
  std::uniform_int_distribution<int32_t> d(0, V - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t)
    x = d(rng);
  return t;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return e.message();
  }
  return "";
}

bool vocab_rows(ParamKind k) {
  return k == ParamKind::wte || k == ParamKind::lm_head;
}

// Adds noise to every real parameter (norm weights and biases too, so their gradients are
// generic); padded rows stay zero.
template <typename V>
void add_noise(const Trainer& trainer, V& p, double stddev, uint64_t stream) {
  const ModelConfig& m = trainer.model();
  auto rng = kiln::test::make_rng(stream);
  std::normal_distribution<double> noise(0.0, stddev);
  for (const kiln::ParamTensor& t : trainer.layout().tensors()) {
    const int64_t n = vocab_rows(t.kind) ? m.vocab_size * m.n_embd : t.numel();
    for (int64_t i = 0; i < n; ++i)
      p[static_cast<std::size_t>(t.offset + i)] += static_cast<typename V::value_type>(noise(rng));
  }
}

void check_gradients(const ModelConfig& m, const TrainConfig& t, const std::vector<int32_t>& in,
                     const std::vector<int32_t>& tg) {
  Trainer trainer(m, t, kiln::make_cpu_backend(kiln::DType::f64, 2), 11);
  std::vector<double> p = trainer.parameters_f64();
  add_noise(trainer, p, 0.1, 5);
  trainer.set_parameters(p);
  const kiln::StepResult r = trainer.step(in, tg);
  REQUIRE_FALSE(r.skipped);
  const std::vector<double> g = trainer.gradients_f64();
  REQUIRE(trainer.parameters_f64() == p);  // lr 0
  const double h = 1e-5;
  int64_t checked = 0;
  for (const kiln::ParamTensor& tensor : trainer.layout().tensors()) {
    const int64_t n = vocab_rows(tensor.kind) ? m.vocab_size * m.n_embd : tensor.numel();
    for (int64_t i = 0; i < n; ++i) {
      const std::size_t k = static_cast<std::size_t>(tensor.offset + i);
      const double saved = p[k];
      p[k] = saved + h;
      trainer.set_parameters(p);
      const double up = trainer.evaluate(in, tg);
      p[k] = saved - h;
      trainer.set_parameters(p);
      const double down = trainer.evaluate(in, tg);
      p[k] = saved;
      const double fd = (up - down) / (2 * h);
      INFO(tensor.name << "[" << i << "]: analytic " << g[k] << " finite difference " << fd);
      REQUIRE(std::abs(fd - g[k]) <= 1e-8 + 1e-6 * std::abs(fd));
      ++checked;
    }
    // The padded rows of the embedding and the head receive no gradient.
    for (int64_t i = n; i < tensor.numel(); ++i)
      REQUIRE(g[static_cast<std::size_t>(tensor.offset + i)] == 0.0);
  }
  CHECK(checked == m.num_parameters());
}

}  // namespace

TEST_CASE("Llama-family presets have the published parameter counts", "[runtime][llama]") {
  // Per layer: 2 C (two RMSNorm weights) + W C (q/k/v, W = (NH + 2 NKV) HD) + C^2 (o_proj)
  // + 2 I C (gate, up) + I C (down); plus V C (embedding), V C more when untied, C (final norm).
  // SmolLM2-135M: HD 64, W = 15 * 64 = 960; layer 1152 + 552960 + 331776 + 1769472 + 884736
  // = 3540096; x30 = 106202880; + 49152 * 576 = 28311552; + 576 = 134515008.
  CHECK(kiln::model_preset("smollm2-135m").num_parameters() == 134515008);
  // SmolLM2-360M: HD 64, W = 25 * 64 = 1600; layer 1920 + 1536000 + 921600 + 4915200 + 2457600
  // = 9832320; x32 = 314634240; + 49152 * 960 = 47185920; + 960 = 361821120.
  CHECK(kiln::model_preset("smollm2-360m").num_parameters() == 361821120);
  // Qwen2.5-0.5B: HD 64, W = 18 * 64 = 1152 with a 1152 bias; layer 1792 + 1032192 + 1152
  // + 802816 + 8716288 + 4358144 = 14912384; x24 = 357897216; + 151936 * 896 = 136134656;
  // + 896 = 494032768.
  CHECK(kiln::model_preset("qwen2.5-0.5b").num_parameters() == 494032768);
  // Llama-3.2-1B: HD 64, W = 48 * 64 = 3072; layer 4096 + 6291456 + 4194304 + 33554432
  // + 16777216 = 60821504; x16 = 973144064; + 128256 * 2048 = 262668288; + 2048 = 1235814400.
  CHECK(kiln::model_preset("llama-3.2-1b").num_parameters() == 1235814400);
  // TinyLlama-1.1B: HD 64, W = 40 * 64 = 2560; layer 4096 + 5242880 + 4194304 + 23068672
  // + 11534336 = 44044288; x22 = 968974336; + 2 * 32000 * 2048 = 131072000 (untied);
  // + 2048 = 1100048384.
  CHECK(kiln::model_preset("tinyllama-1.1b").num_parameters() == 1100048384);
  // Llama-3.1-8B: HD 128, W = 48 * 128 = 6144; layer 8192 + 25165824 + 16777216 + 117440512
  // + 58720256 = 218112000; x32 = 6979584000; + 2 * 128256 * 4096 = 1050673152 (untied);
  // + 4096 = 8030261248.
  CHECK(kiln::model_preset("llama-3.1-8b").num_parameters() == 8030261248);

  const ModelConfig l32 = kiln::model_preset("llama-3.2-1b");
  CHECK(l32.rope.scaling == kiln::RopeScaling::llama3);
  CHECK(l32.rope.factor == 32);
  CHECK(l32.rope.theta == 500000);
  CHECK(l32.tied_embeddings);
  CHECK(kiln::model_preset("llama-3.1-8b").rope.factor == 8);
  CHECK(kiln::model_preset("qwen2.5-0.5b").layernorm_eps == 1e-6);
  CHECK(kiln::model_preset("qwen2.5-0.5b").bias == kiln::BiasKind::qkv);
  // The test sizes take the caller's vocabulary; the published ones keep theirs.
  CHECK(kiln::model_preset("llama-tiny", 300).vocab_size == 300);
  CHECK(kiln::model_preset("smollm2-135m", 300).vocab_size == 49152);
  // The layout holds exactly the parameters counted (plus padding and gaps).
  for (const std::string& name : kiln::model_preset_names()) {
    const ModelConfig c = kiln::model_preset(name, 257);
    INFO(name);
    if (c.num_parameters() > 600'000'000) continue;  // a layout is cheap, but keep the test quick
    const ParamLayout layout(c);
    int64_t real = 0;
    for (const kiln::ParamTensor& t : layout.tensors())
      real += vocab_rows(t.kind) ? c.vocab_size * c.n_embd : t.numel();
    CHECK(real == c.num_parameters());
  }
  // FLOPs per token: 6 N + 6 L C T whatever the kv heads.
  const ModelConfig s = kiln::model_preset("smollm2-360m");
  CHECK(s.flops_per_token(2048) == 6.0 * 361821120 + 6.0 * 32 * 960 * 2048);
}

TEST_CASE("bad model descriptions are refused naming the field", "[runtime][llama]") {
  ModelConfig c = llama();
  CHECK_NOTHROW(c.validate());
  c.n_kv_head = 3;
  CHECK_THAT(error_of([&] { c.validate(); }),
             Catch::Contains("n_kv_head (3) must divide n_head (4)"));
  c = llama();
  c.n_kv_head = -1;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("n_kv_head"));
  c = llama();
  c.intermediate_size = 0;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("intermediate_size must be > 0"));
  c = llama();
  c.mlp = kiln::MlpKind::gelu;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("intermediate_size must be 0"));
  c = llama();
  c.rope.theta = 1;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("rope.theta"));
  c = llama();
  c.rope.theta = NAN;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("rope.theta"));
  c = llama();
  c.rope.factor = 0.5;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("rope.factor"));
  c = llama();
  c.rope.high_freq_factor = 1;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("rope.high_freq_factor"));
  c = llama();
  c.rope.low_freq_factor = 0;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("rope.low_freq_factor"));
  c = llama();
  c.rope.original_max_position = 0;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("rope.original_max_position"));
  c = llama();
  c.n_embd = 36;  // head dim 9: rotary pairs need an even one
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("even head dim"));
  // Without scaling its factors are not read.
  c = llama();
  c.rope.scaling = kiln::RopeScaling::none;
  c.rope.factor = 0;
  CHECK_NOTHROW(c.validate());
  // The JSON reader names an unknown part.
  nlohmann::json j = kiln::impl::model_to_json(llama());
  j["norm"] = "batchnorm";
  CHECK_THAT(error_of([&] { kiln::impl::model_from_json(j); }),
             Catch::Contains("unknown norm 'batchnorm'") && Catch::Contains("rmsnorm"));
  j = kiln::impl::model_to_json(llama());
  j["rope"]["scaling"] = "yarn";
  CHECK_THAT(error_of([&] { kiln::impl::model_from_json(j); }),
             Catch::Contains("unknown scaling 'yarn'"));
}

TEST_CASE("model descriptions round-trip through JSON; old ones are GPT-2", "[runtime][llama]") {
  for (const std::string& name : kiln::model_preset_names()) {
    const ModelConfig c = kiln::model_preset(name, 300);
    INFO(name);
    CHECK(kiln::impl::model_from_json(kiln::impl::model_to_json(c)) == c);
  }
  CHECK(kiln::impl::model_from_json(kiln::impl::model_to_json(qwen())) == qwen());
  // A description written before the parts existed (GPT-2 checkpoints): GPT-2's parts.
  const nlohmann::json old{{"n_layer", 2},      {"n_head", 2},         {"n_embd", 16},
                           {"vocab_size", 29},  {"padded_vocab", 128}, {"max_seq_len", 8},
                           {"kind", "decoder"}, {"mask_token_id", -1}, {"layernorm_eps", 1e-5},
                           {"init_std", 0.02}};
  ModelConfig gpt2;
  gpt2.n_layer = 2;
  gpt2.n_head = 2;
  gpt2.n_embd = 16;
  gpt2.vocab_size = 29;
  gpt2.max_seq_len = 8;
  CHECK(kiln::impl::model_from_json(old) == gpt2.resolved());
}

TEST_CASE("the layout has the tensors the parts need", "[runtime][llama]") {
  const ModelConfig c = llama(3, 50, 8);
  const ParamLayout layout(c);
  // Per layer: two norm weights, qkv, o, gate_up, down; then the final norm and the head.
  CHECK(layout.tensors().size() == 1 + 6 * 3 + 2);
  CHECK_FALSE(layout.has(ParamKind::wpe));
  CHECK_FALSE(layout.has(ParamKind::ln1_b));
  CHECK_FALSE(layout.has(ParamKind::qkv_b));
  CHECK_FALSE(layout.has(ParamKind::fc_b));
  CHECK(layout.has(ParamKind::lm_head));
  CHECK_THAT(error_of([&] { layout.get(ParamKind::wpe); }), Catch::Contains("has no wpe"));
  const int64_t W = (4 + 2 * 1) * 8;
  CHECK(layout.get(ParamKind::qkv_w, 1).rows == W);
  CHECK(layout.get(ParamKind::fc_w, 2).rows == 2 * 24);
  CHECK(layout.get(ParamKind::fcproj_w, 0).cols == 24);
  CHECK(layout.get(ParamKind::lm_head).rows == c.padded_vocab);
  CHECK(layout.get(ParamKind::lm_head).decay);
  CHECK_FALSE(layout.get(ParamKind::ln2_w, 0).decay);
  CHECK(layout.get(ParamKind::qkv_w, 0).name == "model.layers.0.self_attn.qkv_proj.weight");
  CHECK(layout.get(ParamKind::fc_w, 1).name == "model.layers.1.mlp.gate_up_proj.weight");
  CHECK(layout.get(ParamKind::lnf_w).name == "model.norm.weight");
  // Buckets: final norm + head first, then layers from the last, then the embedding; contiguous.
  const auto& buckets = layout.buckets();
  REQUIRE(buckets.size() == 5);
  CHECK(buckets.front().begin == layout.get(ParamKind::lnf_w).offset);
  CHECK(buckets.front().end == layout.total());
  CHECK(layout.get(ParamKind::lm_head).offset > layout.get(ParamKind::lnf_w).offset);
  for (std::size_t i = 0; i + 1 < buckets.size(); ++i)
    CHECK(buckets[i + 1].end == buckets[i].begin);
  CHECK(buckets.back().begin == 0);
  // Qwen: q/k/v biases only.
  const ParamLayout q(qwen());
  CHECK(q.has(ParamKind::qkv_b));
  CHECK_FALSE(q.has(ParamKind::attproj_b));
  CHECK_FALSE(q.has(ParamKind::lm_head));
  CHECK(q.get(ParamKind::qkv_b, 1).cols == (4 + 2 * 2) * 8);

  // Initialisation: norm weights 1, biases 0, padded head rows 0, the head random.
  std::vector<float> p(static_cast<std::size_t>(layout.total()));
  kiln::init_parameters(layout, 3, p.data());
  const auto& ln = layout.get(ParamKind::ln1_w, 1);
  CHECK(p[static_cast<std::size_t>(ln.offset)] == 1.0f);
  const auto& head = layout.get(ParamKind::lm_head);
  double sq = 0;
  for (int64_t i = 0; i < c.vocab_size * c.n_embd; ++i)
    sq += static_cast<double>(p[static_cast<std::size_t>(head.offset + i)]) *
          p[static_cast<std::size_t>(head.offset + i)];
  CHECK(std::sqrt(sq / static_cast<double>(c.vocab_size * c.n_embd)) == Approx(0.02).epsilon(0.1));
  for (int64_t i = c.vocab_size * c.n_embd; i < head.numel(); ++i)
    REQUIRE(p[static_cast<std::size_t>(head.offset + i)] == 0.0f);
}

TEST_CASE("Llama gradients match central finite differences (fp64 cpu backend)",
          "[runtime][llama]") {
  const ModelConfig m = llama(2, 11, 8);
  auto rng = kiln::test::make_rng(21);
  auto in = random_tokens(10, 11, rng);
  auto tg = random_tokens(10, 11, rng);
  tg[4] = kiln::kIgnoreIndex;
  check_gradients(m, train(2, 5), in, tg);
}

TEST_CASE("Qwen-style q/k/v-bias gradients match central finite differences", "[runtime][llama]") {
  const ModelConfig m = qwen(11, 8);
  auto rng = kiln::test::make_rng(22);
  check_gradients(m, train(2, 4), random_tokens(8, 11, rng), random_tokens(8, 11, rng));
}

TEST_CASE("Llama: recomputing SwiGLU and RMSNorm gives the same gradients, bit for bit",
          "[runtime][llama]") {
  const ModelConfig m = llama(2, 40, 16);
  auto rng = kiln::test::make_rng(23);
  const auto in = random_tokens(3 * 16, 40, rng), tg = random_tokens(3 * 16, 40, rng);
  TrainConfig t = train(3, 16, 1e-3);
  Trainer plain(m, t, kiln::make_cpu_backend(kiln::DType::f32, 2), 4);
  t.recompute.gelu = t.recompute.layernorm = true;
  Trainer recompute(m, t, kiln::make_cpu_backend(kiln::DType::f32, 2), 4);
  CHECK(recompute.plan().total_bytes() < plain.plan().total_bytes());
  for (int i = 0; i < 3; ++i) {
    const auto a = plain.step(in, tg), b = recompute.step(in, tg);
    CHECK(a.loss == b.loss);
    CHECK(plain.gradients() == recompute.gradients());
  }
  CHECK(plain.parameters() == recompute.parameters());
}

TEST_CASE("a tiny Llama learns a short sequence", "[runtime][llama]") {
  const ModelConfig m = kiln::model_preset("llama-tiny", 20);
  TrainConfig t = train(2, 16, 3e-3);
  t.optimizer.warmup_steps = 5;
  t.optimizer.grad_clip = 1.0;
  Trainer trainer(m, t, kiln::make_cpu_backend(kiln::DType::f32, 2), 1);
  std::vector<int32_t> seq(17);
  auto rng = kiln::test::make_rng(24);
  std::uniform_int_distribution<int32_t> d(0, 19);
  for (auto& x : seq)
    x = d(rng);
  std::vector<int32_t> in, tg;
  for (int r = 0; r < 2; ++r) {
    in.insert(in.end(), seq.begin(), seq.end() - 1);
    tg.insert(tg.end(), seq.begin() + 1, seq.end());
  }
  const double first = trainer.step(in, tg).loss;
  double last = first;
  for (int i = 0; i < 150; ++i)
    last = trainer.step(in, tg).loss;
  INFO("loss " << first << " -> " << last);
  CHECK(first == Approx(std::log(20.0)).epsilon(0.1));
  CHECK(last < 0.1);
}

TEST_CASE("Llama KV-cache decoding equals the full forward at every position", "[runtime][llama]") {
  for (const ModelConfig& m : {llama(2, 23, 12), qwen(23, 12)}) {
    const int64_t T = 12;
    Trainer trainer(m, train(1, T), kiln::make_cpu_backend(kiln::DType::f32, 2), 21);
    auto p = trainer.parameters();
    add_noise(trainer, p, 0.2, 9);
    trainer.set_parameters(p);
    auto rng = kiln::test::make_rng(25);
    const std::vector<int32_t> seq = random_tokens(T, 23, rng);
    const std::vector<float> full = trainer.logits(seq);
    kiln::Generator gen(trainer);
    // The cache holds the key/value heads only: 2 NKV HD per position and layer.
    const kiln::Region& cache = gen.plan().find("layer0.kv_cache");
    CHECK(cache.numel == T * 2 * m.kv_heads() * m.head_dim());
    for (int64_t pos = 0; pos < T; ++pos) {
      const std::vector<float> step = gen.feed(std::span<const int32_t>(&seq[pos], 1));
      for (int64_t v = 0; v < m.vocab_size; ++v) {
        INFO(m.describe() << " position " << pos << " token " << v);
        REQUIRE(step[v] == Approx(full[pos * m.vocab_size + v]).epsilon(1e-5).margin(1e-6));
      }
    }
    // A prompt of 5, then 7 at once: the same.
    gen.reset();
    gen.feed(std::span<const int32_t>(seq.data(), 5));
    const std::vector<float> last = gen.feed(std::span<const int32_t>(seq.data() + 5, 7));
    for (int64_t v = 0; v < m.vocab_size; ++v)
      CHECK(last[v] == Approx(full[11 * m.vocab_size + v]).epsilon(1e-5).margin(1e-6));
    kiln::Generator own(m, kiln::make_cpu_backend(kiln::DType::f32, 1), trainer.parameters());
    const std::vector<float> again = own.feed(seq);
    for (int64_t v = 0; v < m.vocab_size; ++v)
      CHECK(again[v] == last[v]);
  }
}

TEST_CASE("Llama checkpoints round-trip and resume bit-exactly", "[runtime][llama]") {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("kiln_llama_ckpt_" + std::to_string(kiln::test::make_rng(26)()));
  fs::create_directories(dir);
  const ModelConfig m = llama(2, 29, 8);
  TrainConfig t = train(2, 8, 3e-3);
  t.grad_accum = 2;
  t.optimizer.weight_decay = 0.1;
  t.optimizer.grad_clip = 1.0;
  auto rng = kiln::test::make_rng(27);
  std::vector<std::vector<int32_t>> ins, tgs;
  for (int s = 0; s < 6; ++s) {
    ins.push_back(random_tokens(32, 29, rng));
    tgs.push_back(random_tokens(32, 29, rng));
  }
  std::vector<double> uninterrupted;
  {
    Trainer a(m, t, kiln::make_cpu_backend(kiln::DType::f32, 2), 5);
    for (int s = 0; s < 6; ++s) {
      uninterrupted.push_back(a.step(ins[s], tgs[s]).loss);
      if (s == 2) a.save_checkpoint(dir / "llama.ckpt");
    }
  }
  const kiln::CheckpointInfo info = kiln::read_checkpoint(dir / "llama.ckpt", nullptr);
  CHECK(info.model == m);
  CHECK(info.step == 3);
  Trainer b(m, t, kiln::make_cpu_backend(kiln::DType::f32, 2), 99);
  b.load_checkpoint(dir / "llama.ckpt");
  for (int s = 3; s < 6; ++s)
    CHECK(b.step(ins[s], tgs[s]).loss == uninterrupted[static_cast<std::size_t>(s)]);
  // GPT-2's file format has no place for these parts.
  std::vector<float> w(static_cast<std::size_t>(ParamLayout(m).total()));
  CHECK_THAT(error_of([&] { kiln::export_hf_gpt2(dir / "x.safetensors", m, w, false); }),
             Catch::Contains("only GPT-2's parts"));
  CHECK_FALSE(fs::exists(dir / "x.safetensors"));
  // Another model's trainer refuses it, naming both.
  Trainer other(qwen(29, 8), t, kiln::make_cpu_backend(kiln::DType::f32, 1), 5);
  CHECK_THROWS_AS(other.load_checkpoint(dir / "llama.ckpt"), kiln::Error);
  // The weights alone serve a generator.
  std::vector<float> weights;
  kiln::read_checkpoint(dir / "llama.ckpt", &weights);
  kiln::Generator gen(info.model, kiln::make_cpu_backend(kiln::DType::f32, 1), weights);
  CHECK(gen.feed(std::vector<int32_t>{1, 2, 3}).size() == 29);
  fs::remove_all(dir);
}

TEST_CASE("Llama data parallelism: 2 ranks equal 1 rank with the whole batch", "[runtime][llama]") {
  const ModelConfig m = llama(2, 37, 8);
  TrainConfig t = train(2, 8, 3e-3);
  t.optimizer.weight_decay = 0.1;
  t.optimizer.grad_clip = 1.0;
  t.optimizer.warmup_steps = 0;
  auto rng = kiln::test::make_rng(28);
  std::vector<std::vector<int32_t>> ins, tgs;
  for (int s = 0; s < 3; ++s) {
    ins.push_back(random_tokens(32, 37, rng));
    tgs.push_back(random_tokens(32, 37, rng));
  }
  TrainConfig whole = t;
  whole.batch = 4;
  Trainer one(m, whole, kiln::make_cpu_backend(kiln::DType::f64, 1), 7);
  std::vector<std::vector<double>> expected;
  for (int s = 0; s < 3; ++s) {
    one.step(ins[s], tgs[s]);
    expected.push_back(one.parameters_f64());
  }
  for (bool zero1 : {false, true}) {
    t.zero1 = zero1;
    std::vector<std::vector<std::vector<double>>> params(2);
    kiln::CommOptions o;
    o.timeout = std::chrono::seconds(30);
    kiln::run_in_process(2, kiln::BackendKind::cpu, o, [&](kiln::Communicator& comm) {
      Trainer trainer(m, t, kiln::make_cpu_backend(kiln::DType::f64, 1), 7, &comm);
      const std::size_t rows = 16, r = static_cast<std::size_t>(comm.rank());
      for (int s = 0; s < 3; ++s) {
        const std::vector<int32_t> in(ins[s].begin() + r * rows, ins[s].begin() + (r + 1) * rows);
        const std::vector<int32_t> tg(tgs[s].begin() + r * rows, tgs[s].begin() + (r + 1) * rows);
        trainer.step(in, tg);
        params[r].push_back(trainer.parameters_f64());
      }
    });
    for (int s = 0; s < 3; ++s) {
      INFO("zero1 " << zero1 << " step " << s);
      REQUIRE(params[1][s] == params[0][s]);  // bitwise across ranks
      double diff = 0;
      for (std::size_t i = 0; i < expected[s].size(); ++i)
        diff = std::max(diff, std::abs(expected[s][i] - params[0][s][i]));
      CHECK(diff < 1e-12);
    }
  }
}

namespace {

// Hugging Face's LlamaForCausalLM forward (Qwen2's with q/k/v biases), written from scratch in
// double over the flat parameters: the independent spec the schedule's forward is checked
// against (the gradient tests only show the backward agrees with the forward).
std::vector<double> llama_logits_spec(const ModelConfig& m, const ParamLayout& layout,
                                      const std::vector<double>& p,
                                      const std::vector<int32_t>& tokens) {
  const int64_t T = static_cast<int64_t>(tokens.size()), C = m.n_embd, NH = m.n_head;
  const int64_t NKV = m.kv_heads(), HD = m.head_dim(), I = m.intermediate_size;
  const double eps = m.layernorm_eps;
  auto W = [&](ParamKind k, int64_t l = -1) { return p.data() + layout.get(k, l).offset; };
  auto rmsnorm = [&](const std::vector<double>& x, const double* g) {
    std::vector<double> y(x.size());
    for (int64_t t = 0; t < T; ++t) {
      double ss = 0;
      for (int64_t c = 0; c < C; ++c)
        ss += x[t * C + c] * x[t * C + c];
      const double r = 1 / std::sqrt(ss / static_cast<double>(C) + eps);
      for (int64_t c = 0; c < C; ++c)
        y[t * C + c] = x[t * C + c] * r * g[c];
    }
    return y;
  };
  // out (T, N) = x (T, K) @ w (N, K)^T + b
  auto linear = [&](const std::vector<double>& x, const double* w, const double* b, int64_t K,
                    int64_t N) {
    std::vector<double> y(static_cast<std::size_t>(T * N));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t n = 0; n < N; ++n) {
        double s = b ? b[n] : 0.0;
        for (int64_t k = 0; k < K; ++k)
          s += x[t * K + k] * w[n * K + k];
        y[t * N + n] = s;
      }
    }
    return y;
  };
  // Hugging Face's rotary frequencies (_compute_default / _compute_llama3_parameters).
  std::vector<double> inv(static_cast<std::size_t>(HD / 2));
  for (int64_t i = 0; i < HD / 2; ++i) {
    double f = std::pow(m.rope.theta, -2.0 * static_cast<double>(i) / static_cast<double>(HD));
    if (m.rope.scaling == kiln::RopeScaling::llama3) {
      const double orig = static_cast<double>(m.rope.original_max_position);
      const double lo = m.rope.low_freq_factor, hi = m.rope.high_freq_factor;
      const double wavelen = 2 * M_PI / f;
      if (wavelen > orig / lo) {
        f /= m.rope.factor;
      } else if (wavelen >= orig / hi) {
        const double smooth = (orig / wavelen - lo) / (hi - lo);
        f = (1 - smooth) * f / m.rope.factor + smooth * f;
      }
    }
    inv[static_cast<std::size_t>(i)] = f;
  }
  std::vector<double> x(static_cast<std::size_t>(T * C));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c)
      x[t * C + c] = W(ParamKind::wte)[tokens[static_cast<std::size_t>(t)] * C + c];
  const int64_t width = (NH + 2 * NKV) * HD;
  for (int64_t l = 0; l < m.n_layer; ++l) {
    const auto qkv = linear(rmsnorm(x, W(ParamKind::ln1_w, l)), W(ParamKind::qkv_w, l),
                            m.qkv_bias() ? W(ParamKind::qkv_b, l) : nullptr, C, width);
    // q (head h) at h * HD, k (head g) at (NH + g) * HD, v at (NH + NKV + g) * HD of a row.
    auto rotated = [&](int64_t t, int64_t head, int64_t d) {
      const double* v = qkv.data() + t * width + head * HD;
      const int64_t i = d % (HD / 2);
      const double a = static_cast<double>(t) * inv[static_cast<std::size_t>(i)];
      return d < HD / 2 ? v[i] * std::cos(a) - v[i + HD / 2] * std::sin(a)
                        : v[i + HD / 2] * std::cos(a) + v[i] * std::sin(a);
    };
    std::vector<double> att(static_cast<std::size_t>(T * C));
    for (int64_t h = 0; h < NH; ++h) {
      const int64_t g = h / (NH / NKV);
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> s(static_cast<std::size_t>(i + 1));
        double mx = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          double d = 0;
          for (int64_t e = 0; e < HD; ++e)
            d += rotated(i, h, e) * rotated(j, NH + g, e);
          s[static_cast<std::size_t>(j)] = d / std::sqrt(static_cast<double>(HD));
          mx = std::max(mx, s[static_cast<std::size_t>(j)]);
        }
        double z = 0;
        for (double& v : s)
          z += (v = std::exp(v - mx));
        for (int64_t e = 0; e < HD; ++e) {
          double o = 0;
          for (int64_t j = 0; j <= i; ++j)
            o += s[static_cast<std::size_t>(j)] / z * qkv[j * width + (NH + NKV + g) * HD + e];
          att[i * C + h * HD + e] = o;
        }
      }
    }
    const auto o = linear(att, W(ParamKind::attproj_w, l), nullptr, C, C);
    for (std::size_t k = 0; k < x.size(); ++k)
      x[k] += o[k];
    const auto gu =
        linear(rmsnorm(x, W(ParamKind::ln2_w, l)), W(ParamKind::fc_w, l), nullptr, C, 2 * I);
    std::vector<double> act(static_cast<std::size_t>(T * I));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < I; ++i) {
        const double gate = gu[t * 2 * I + i], up = gu[t * 2 * I + I + i];
        act[t * I + i] = gate / (1 + std::exp(-gate)) * up;
      }
    }
    const auto down = linear(act, W(ParamKind::fcproj_w, l), nullptr, I, C);
    for (std::size_t k = 0; k < x.size(); ++k)
      x[k] += down[k];
  }
  const double* head = W(m.tied_embeddings ? ParamKind::wte : ParamKind::lm_head);
  return linear(rmsnorm(x, W(ParamKind::lnf_w)), head, nullptr, C, m.vocab_size);
}

}  // namespace

TEST_CASE("the Llama forward equals Hugging Face's Llama written from scratch (fp64)",
          "[runtime][llama]") {
  for (const ModelConfig& m : {llama(2, 13, 8), qwen(13, 8)}) {
    const int64_t T = 7;
    Trainer trainer(m, train(1, T), kiln::make_cpu_backend(kiln::DType::f64, 2), 31);
    std::vector<double> p = trainer.parameters_f64();
    add_noise(trainer, p, 0.3, 32);
    trainer.set_parameters(p);
    auto rng = kiln::test::make_rng(33);
    const std::vector<int32_t> tokens = random_tokens(T, 13, rng);
    const std::vector<float> got = trainer.logits(tokens);  // (T, V), rounded to float
    const std::vector<double> want = llama_logits_spec(m, trainer.layout(), p, tokens);
    double scale = 0;
    for (double v : want)
      scale = std::max(scale, std::abs(v));
    REQUIRE(scale > 0.1);  // logits that are not trivially small
    for (std::size_t k = 0; k < want.size(); ++k) {
      INFO(m.describe() << " logit " << k);
      REQUIRE(static_cast<double>(got[k]) == Approx(want[k]).margin(1e-5 * scale));
    }
  }
}
