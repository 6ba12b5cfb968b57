// Hugging Face Llama / Qwen2 folders: import of a folder written here (every HF tensor lands in
// its rows of kiln's fused tensors), export read back independently of the importer, round trips
// in F32 (bit for bit) and BF16 (within its rounding), F16 / BF16 inputs, sharded indexes, and
// the issue's "done when": a folder imports, trains a step, exports and re-imports identically.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/backend.hpp"
#include "kiln/hf_llama.hpp"
#include "kiln/safetensors.hpp"
#include "kiln/trainer.hpp"
#include "tests/cpu/hf_llama_folder.hpp"
#include "tests/cpu/llama_models.hpp"

namespace fs = std::filesystem;
using kiln::ParamKind;
using kiln::SafeDtype;
using kiln::test::TempDir;
using namespace kiln::test::hf;

namespace {

// Element (r, c) of the HF tensor `name` (a vector: r = 0).
float at(const Tensors& t, const std::string& name, int64_t r, int64_t c = 0) {
  const Tensor& x = t.at(name);
  const int64_t cols = x.shape.size() == 2 ? x.shape[1] : 1;
  return x.data[static_cast<std::size_t>(r * cols + c)];
}

// Every HF tensor against where kiln keeps it: q, k, v stacked in qkv_w (and qkv_b), gate and up
// in fc_w, the rest one to one; index math written out here rather than borrowed from the code.
void check_placement(const kiln::ModelConfig& m, const std::vector<float>& p, const Tensors& t) {
  const kiln::ParamLayout layout(m);
  const int64_t C = m.n_embd, HD = m.head_dim(), Q = m.n_head * HD, KV = m.kv_heads() * HD;
  const int64_t I = m.intermediate_size;
  auto kiln_at = [&](ParamKind kind, int64_t layer, int64_t r, int64_t c) {
    const kiln::ParamTensor& x = layout.get(kind, layer);
    return p[static_cast<std::size_t>(x.offset + r * x.cols + c)];
  };
  for (int64_t v = 0; v < m.vocab_size; ++v) {
    for (int64_t c = 0; c < C; ++c) {
      REQUIRE(kiln_at(ParamKind::wte, -1, v, c) == at(t, "model.embed_tokens.weight", v, c));
      if (!m.tied_embeddings)
        REQUIRE(kiln_at(ParamKind::lm_head, -1, v, c) == at(t, "lm_head.weight", v, c));
    }
  }
  for (int64_t l = 0; l < m.n_layer; ++l) {
    const std::string h = "model.layers." + std::to_string(l) + ".";
    for (int64_t r = 0; r < Q + 2 * KV; ++r) {
      const std::string which = r < Q ? "q" : r < Q + KV ? "k" : "v";
      const int64_t hr = r < Q ? r : r < Q + KV ? r - Q : r - Q - KV;
      for (int64_t c = 0; c < C; ++c) {
        REQUIRE(kiln_at(ParamKind::qkv_w, l, r, c) ==
                at(t, h + "self_attn." + which + "_proj.weight", hr, c));
      }
      if (m.qkv_bias()) {
        REQUIRE(kiln_at(ParamKind::qkv_b, l, 0, r) ==
                at(t, h + "self_attn." + which + "_proj.bias", 0, hr));
      }
    }
    for (int64_t r = 0; r < 2 * I; ++r) {
      for (int64_t c = 0; c < C; ++c) {
        REQUIRE(kiln_at(ParamKind::fc_w, l, r, c) ==
                at(t, h + (r < I ? "mlp.gate_proj.weight" : "mlp.up_proj.weight"), r % I, c));
      }
    }
    for (int64_t r = 0; r < C; ++r) {
      REQUIRE(kiln_at(ParamKind::ln1_w, l, 0, r) == at(t, h + "input_layernorm.weight", 0, r));
      REQUIRE(kiln_at(ParamKind::ln2_w, l, 0, r) ==
              at(t, h + "post_attention_layernorm.weight", 0, r));
      for (int64_t c = 0; c < C; ++c)
        REQUIRE(kiln_at(ParamKind::attproj_w, l, r, c) ==
                at(t, h + "self_attn.o_proj.weight", r, c));
      for (int64_t c = 0; c < I; ++c)
        REQUIRE(kiln_at(ParamKind::fcproj_w, l, r, c) == at(t, h + "mlp.down_proj.weight", r, c));
    }
  }
  for (int64_t c = 0; c < C; ++c)
    REQUIRE(kiln_at(ParamKind::lnf_w, -1, 0, c) == at(t, "model.norm.weight", 0, c));
}

// The exported folder read back with the plain safetensors reader: the same tensors as `t`.
void check_export(const fs::path& dir, const Tensors& t) {
  const kiln::SafetensorsReader r(dir / "model.safetensors");
  CHECK(r.tensors().size() == t.size());
  for (const auto& [name, x] : t) {
    INFO(name);
    REQUIRE(r.info(name).shape == x.shape);
    REQUIRE(r.read_float(name) == x.data);
  }
}

std::vector<float> read_folder(const fs::path& dir, kiln::ModelConfig* model = nullptr) {
  std::vector<float> p;
  const kiln::ModelConfig m = kiln::import_hf_llama(dir, &p);
  if (model) *model = m;
  return p;
}

}  // namespace

TEST_CASE("an HF Llama folder imports: config, fused q/k/v and gate/up rows", "[hf]") {
  TempDir dir;
  const auto config = nlohmann::json::parse(kLlamaConfig);
  const Tensors t = make_tensors(config, 1);
  write_folder(dir.path(), kLlamaConfig, t);
  kiln::ModelConfig m;
  const std::vector<float> p = read_folder(dir.path(), &m);
  CHECK(m == kiln::test::llama::llama(2, 11, 8));
  CHECK(m.rope.scaling == kiln::RopeScaling::llama3);
  CHECK(m.rope.factor == 4);
  CHECK(m.rope.original_max_position == 64);
  CHECK(p.size() == static_cast<std::size_t>(kiln::ParamLayout(m).total()));
  check_placement(m, p, t);

  // max_seq_len from the caller (the cache size) changes no weight.
  std::vector<float> q;
  kiln::HfImportOptions o;
  o.max_seq_len = 32;
  CHECK(kiln::import_hf_llama(dir.path(), &q, o).max_seq_len == 32);
  CHECK(q == p);

  // transformers 5 spells the rotary parameters as one object.
  auto v5 = config;
  v5.erase("rope_theta");
  v5.erase("rope_scaling");
  v5["rope_parameters"] = config["rope_scaling"];
  v5["rope_parameters"]["rope_theta"] = 10000.0;
  kiln::test::write_bytes(dir / "config.json", v5.dump());
  kiln::ModelConfig v5_model;
  CHECK(read_folder(dir.path(), &v5_model) == p);
  CHECK(v5_model == m);
  // ... with the base beside it.
  v5["rope_parameters"].erase("rope_theta");
  v5["rope_theta"] = 20000.0;
  kiln::test::write_bytes(dir / "config.json", v5.dump());
  CHECK(kiln::import_hf_llama(dir.path(), &q).rope.theta == 20000);
}

TEST_CASE("HF Llama export writes HF's tensors; import -> export -> import is exact in F32",
          "[hf]") {
  for (const char* text : {kLlamaConfig, kQwen2Config}) {
    TempDir dir;
    const auto config = nlohmann::json::parse(text);
    INFO(config["model_type"]);
    const Tensors t = make_tensors(config, 2);
    write_folder(dir / "in", text, t);
    kiln::ModelConfig m;
    const std::vector<float> p = read_folder(dir / "in", &m);
    check_placement(m, p, t);
    kiln::HfExportOptions o;
    o.bos_token_id = 1;
    o.eos_token_id = 2;
    kiln::export_hf_llama(dir / "out", m, p, o);
    check_export(dir / "out", t);
    // The config says what a loader needs; the tied model writes no lm_head.
    const auto out = nlohmann::json::parse(kiln::test::read_bytes(dir / "out" / "config.json"));
    CHECK(out["architectures"][0] == config["architectures"][0]);
    CHECK(out["model_type"] == config["model_type"]);
    CHECK(out["tie_word_embeddings"] == config["tie_word_embeddings"]);
    CHECK(out["num_key_value_heads"] == config["num_key_value_heads"]);
    CHECK(out["rope_scaling"] == config["rope_scaling"]);
    CHECK(out["bos_token_id"] == 1);
    const auto gen =
        nlohmann::json::parse(kiln::test::read_bytes(dir / "out" / "generation_config.json"));
    CHECK(gen["eos_token_id"] == 2);
    CHECK(fs::exists(dir / "out" / "model.safetensors"));
    CHECK_FALSE(fs::exists(dir / "out" / "tokenizer.json"));  // nothing it was not given
    kiln::ModelConfig back_model;
    CHECK(read_folder(dir / "out", &back_model) == p);
    CHECK(back_model == m);
  }
}

TEST_CASE("HF Llama BF16 export re-imports within bf16 rounding; F16 and BF16 inputs", "[hf]") {
  TempDir dir;
  const auto config = nlohmann::json::parse(kLlamaConfig);
  const Tensors t = make_tensors(config, 3);
  write_folder(dir / "in", kLlamaConfig, t);
  kiln::ModelConfig m;
  const std::vector<float> p = read_folder(dir / "in", &m);
  kiln::HfExportOptions o;
  o.dtype = SafeDtype::BF16;
  kiln::export_hf_llama(dir / "bf16", m, p, o);
  CHECK(kiln::SafetensorsReader(dir / "bf16" / "model.safetensors").info("lm_head.weight").dtype ==
        SafeDtype::BF16);
  CHECK(nlohmann::json::parse(
            kiln::test::read_bytes(dir / "bf16" / "config.json"))["torch_dtype"] == "bfloat16");
  const std::vector<float> back = read_folder(dir / "bf16");
  REQUIRE(back.size() == p.size());
  int64_t rounded = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    // bf16 keeps 8 significant bits: half an ulp is 2^-8 relative.
    REQUIRE(std::abs(back[i] - p[i]) <= std::ldexp(std::abs(p[i]), -8));
    rounded += back[i] != p[i];
  }
  CHECK(rounded > 0);
  // Exporting the bf16 values again changes nothing.
  kiln::export_hf_llama(dir / "bf16-again", m, back, o);
  CHECK(read_folder(dir / "bf16-again") == back);

  for (const auto& [dtype, bits] : {std::pair{SafeDtype::F16, 11}, std::pair{SafeDtype::BF16, 8}}) {
    write_folder(dir / "typed", kLlamaConfig, t, dtype);
    kiln::ModelConfig typed_model;
    const std::vector<float> typed = read_folder(dir / "typed", &typed_model);
    CHECK(typed_model == m);
    for (std::size_t i = 0; i < p.size(); ++i)
      // (+ the absolute error of f16's subnormals)
      REQUIRE(std::abs(typed[i] - p[i]) <= std::ldexp(std::abs(p[i]), -bits) + 1e-7f);
  }
}

TEST_CASE("HF Llama sharded folders: a hand-made index, and the exporter's shards", "[hf]") {
  TempDir dir;
  const auto config = nlohmann::json::parse(kLlamaConfig);
  const Tensors t = make_tensors(config, 4);
  write_folder(dir / "one", kLlamaConfig, t);
  const std::vector<float> p = read_folder(dir / "one");
  for (const char* name : {"s2", "s3"}) {
    const int shards = name[1] - '0';
    write_folder(dir / name, kLlamaConfig, t, SafeDtype::F32, shards);
    CHECK(read_folder(dir / name) == p);
  }
  kiln::ModelConfig m;
  read_folder(dir / "one", &m);
  kiln::HfExportOptions o;
  o.max_shard_bytes = 4000;  // the 11 x 32 embedding alone is 1408 bytes
  kiln::export_hf_llama(dir / "out", m, p, o);
  CHECK_FALSE(fs::exists(dir / "out" / "model.safetensors"));
  const auto index =
      nlohmann::json::parse(kiln::test::read_bytes(dir / "out" / "model.safetensors.index.json"));
  CHECK(index["weight_map"].size() == t.size());
  int64_t bytes = 0, files = 0;
  for (const auto& e : fs::directory_iterator(dir / "out")) {
    if (e.path().extension() != ".safetensors") continue;
    ++files;
    const kiln::SafetensorsReader r(e.path());
    int64_t in_file = 0;
    for (const auto& info : r.tensors())
      in_file += static_cast<int64_t>(info.end - info.begin);
    CHECK((in_file <= 4000 || r.tensors().size() == 1));
    bytes += in_file;
  }
  CHECK(files >= 3);
  CHECK(index["metadata"]["total_size"] == bytes);
  CHECK(read_folder(dir / "out") == p);
  // A sharded export beside a single file would be shadowed by it: refused before writing.
  kiln::export_hf_llama(dir / "both", m, p);
  const auto [status, message] = error_of([&] { kiln::export_hf_llama(dir / "both", m, p, o); });
  CHECK(status == kiln::Status::invalid_argument);
  CHECK_THAT(message, Catch::Contains("model.safetensors"));
  CHECK_FALSE(fs::exists(dir / "both" / "model.safetensors.index.json"));
}

TEST_CASE("a tied HF Llama: no lm_head, or one equal to the embedding", "[hf]") {
  TempDir dir;
  auto config = nlohmann::json::parse(kLlamaConfig);
  config["tie_word_embeddings"] = true;
  Tensors t = make_tensors(config, 5);
  write_folder(dir.path(), config.dump(), t);
  kiln::ModelConfig m;
  const std::vector<float> p = read_folder(dir.path(), &m);
  CHECK(m.tied_embeddings);
  CHECK_FALSE(kiln::ParamLayout(m).has(ParamKind::lm_head));
  // Some exports write the tied head too: equal values are the same model.
  t["lm_head.weight"] = t.at("model.embed_tokens.weight");
  write_folder(dir.path(), config.dump(), t);
  CHECK(read_folder(dir.path()) == p);
}

TEST_CASE("done when: an HF Llama folder imports, trains a step, exports, re-imports identically",
          "[hf]") {
  TempDir dir;
  const auto config = nlohmann::json::parse(kLlamaConfig);
  write_folder(dir / "in", kLlamaConfig, make_tensors(config, 6));
  kiln::ModelConfig m;
  const std::vector<float> p = read_folder(dir / "in", &m);
  kiln::Trainer trainer(m, kiln::test::llama::train(2, 8, 1e-2),
                        kiln::make_cpu_backend(kiln::DType::f32, 2), 1);
  trainer.set_parameters(p);
  auto rng = kiln::test::make_rng(7);
  const auto in = kiln::test::llama::random_tokens(16, 11, rng);
  const auto tg = kiln::test::llama::random_tokens(16, 11, rng);
  const kiln::StepResult r = trainer.step(in, tg);
  CHECK(std::isfinite(r.loss));
  const std::vector<float> trained = trainer.parameters();
  CHECK(trained != p);
  kiln::export_hf_llama(dir / "out", m, trained);
  kiln::ModelConfig back_model;
  CHECK(read_folder(dir / "out", &back_model) == trained);
  CHECK(back_model == m);
}

TEST_CASE("export_hf_folder carries the source's tokenizer files and token ids along", "[hf]") {
  TempDir dir;
  const auto config = nlohmann::json::parse(kLlamaConfig);  // bos 1, eos [2, 3]
  write_folder(dir / "src", kLlamaConfig, make_tensors(config, 10));
  kiln::test::write_bytes(dir / "src" / "tokenizer.json", "not read, only copied");
  kiln::test::write_bytes(dir / "src" / "tokenizer_config.json", R"({"add_bos_token": true})");
  kiln::test::write_bytes(dir / "src" / "README.md", "not copied");
  kiln::ModelConfig m;
  const std::vector<float> p = read_folder(dir / "src", &m);
  kiln::export_hf_folder(dir / "out", m, p, dir / "src");
  CHECK(kiln::test::read_bytes(dir / "out" / "tokenizer.json") == "not read, only copied");
  CHECK(fs::exists(dir / "out" / "tokenizer_config.json"));
  CHECK_FALSE(fs::exists(dir / "out" / "README.md"));
  const auto out = nlohmann::json::parse(kiln::test::read_bytes(dir / "out" / "config.json"));
  CHECK(out["bos_token_id"] == 1);
  CHECK_FALSE(out.contains("eos_token_id"));  // a list there: not an id kiln can vouch for
  CHECK(read_folder(dir / "out") == p);
  // Without a source: the model alone.
  kiln::export_hf_folder(dir / "bare", m, p, {});
  CHECK_FALSE(fs::exists(dir / "bare" / "tokenizer.json"));
  // Into the source itself: refused, nothing overwritten.
  const auto [status, message] =
      error_of([&] { kiln::export_hf_folder(dir / "src", m, p, dir / "src"); });
  CHECK(status == kiln::Status::invalid_argument);
  CHECK(kiln::test::read_bytes(dir / "src" / "config.json") == kLlamaConfig);
  // A tokenizer_config.json of the wrong shape is refused naming the key.
  kiln::test::write_bytes(dir / "out" / "tokenizer_config.json", R"({"add_bos_token": "yes"})");
  CHECK_THAT(error_of([&] { kiln::load_hf_tokenizer(dir / "out"); }).second,
             Catch::Contains("tokenizer_config.json") && Catch::Contains("'add_bos_token'"));
  CHECK(kiln::load_hf_tokenizer(dir / "bare") == nullptr);
}
