// The Llama family on the CPU backend: the presets' published parameter counts, descriptions
// refused naming the field, JSON round trips (and descriptions written before the parts existed),
// the layout of the parts, KV-cache decoding against the full forward, and checkpoints (round
// trip, resume bit-exact).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/generate.hpp"
#include "kiln/hf_gpt2.hpp"
#include "kiln/model.hpp"
#include "kiln/trainer.hpp"
#include "runtime/model_json.hpp"
#include "tests/common/support.hpp"
#include "tests/cpu/llama_models.hpp"

using kiln::ModelConfig;
using kiln::ParamKind;
using kiln::ParamLayout;
using kiln::TrainConfig;
using kiln::Trainer;
using namespace kiln::test::llama;

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
  c.intermediate_size = int64_t{1} << 40;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("intermediate_size 1099511627776 exceeds"));
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
