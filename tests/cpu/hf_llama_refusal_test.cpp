// Hugging Face Llama folders kiln cannot represent or that are broken: every refusal names the
// config key or the tensor (and the file), with the status the header promises; exports of models
// HF's Llama cannot express are refused before anything is written.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/hf_llama.hpp"
#include "kiln/model.hpp"
#include "tests/cpu/hf_llama_folder.hpp"
#include "tests/cpu/llama_models.hpp"

namespace fs = std::filesystem;
using kiln::Status;
using kiln::test::TempDir;
using namespace kiln::test::hf;

namespace {

std::pair<Status, std::string> import_error(const fs::path& dir) {
  return error_of([&] {
    std::vector<float> p;
    kiln::import_hf_llama(dir, &p);
  });
}

struct ConfigCase {
  const char* what;
  std::function<void(nlohmann::json&)> edit;
  Status status;
  std::vector<std::string> says;  // substrings of the message, the key among them
};

}  // namespace

TEST_CASE("HF Llama configs kiln cannot represent or read are refused naming the key", "[hf]") {
  using J = nlohmann::json;
  const std::vector<ConfigCase> cases = {
      {"another model type",
       [](J& j) { j["model_type"] = "mistral"; },
       Status::not_supported,
       {"'model_type'", "mistral"}},
      {"another architecture",
       [](J& j) { j["architectures"] = {"MistralForCausalLM"}; },
       Status::not_supported,
       {"'architectures'", "MistralForCausalLM"}},
      {"no model type", [](J& j) { j.erase("model_type"); }, Status::data_error, {"'model_type'"}},
      {"yarn",
       [](J& j) { j["rope_scaling"]["rope_type"] = "yarn"; },
       Status::not_supported,
       {"'rope_scaling.rope_type'", "yarn"}},
      {"dynamic (old spelling)",
       [](J& j) {
         j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
       },
       Status::not_supported,
       {"'rope_scaling.type'", "dynamic"}},
      {"rope_parameters linear",
       [](J& j) {
         j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 2.0}};
       },
       Status::not_supported,
       {"'rope_parameters.rope_type'", "linear"}},
      {"llama3 without its factor",
       [](J& j) { j["rope_scaling"].erase("factor"); },
       Status::data_error,
       {"'rope_scaling.factor'"}},
      {"llama3 factor a string",
       [](J& j) { j["rope_scaling"]["factor"] = "8"; },
       Status::data_error,
       {"rope_scaling", "'factor'"}},
      {"rope_scaling a list",
       [](J& j) {
         j["rope_scaling"] = {1, 2};
       },
       Status::data_error,
       {"'rope_scaling'"}},
      {"mlp_bias", [](J& j) { j["mlp_bias"] = true; }, Status::not_supported, {"'mlp_bias'"}},
      {"attention_bias",
       [](J& j) { j["attention_bias"] = true; },
       Status::not_supported,
       {"'attention_bias'", "o_proj"}},
      {"gelu",
       [](J& j) { j["hidden_act"] = "gelu"; },
       Status::not_supported,
       {"'hidden_act'", "gelu"}},
      {"head_dim", [](J& j) { j["head_dim"] = 16; }, Status::not_supported, {"'head_dim' 16"}},
      {"dropout",
       [](J& j) { j["attention_dropout"] = 0.1; },
       Status::not_supported,
       {"'attention_dropout'"}},
      {"no hidden_size",
       [](J& j) { j.erase("hidden_size"); },
       Status::data_error,
       {"'hidden_size'"}},
      {"hidden_size a string",
       [](J& j) { j["hidden_size"] = "32"; },
       Status::data_error,
       {"'hidden_size'"}},
      {"hidden_size a float",
       [](J& j) { j["hidden_size"] = 32.5; },
       Status::data_error,
       {"'hidden_size'"}},
      {"kv heads not dividing",
       [](J& j) { j["num_key_value_heads"] = 3; },
       Status::data_error,
       {"'num_key_value_heads'"}},
      {"heads not dividing",
       [](J& j) { j["num_attention_heads"] = 5; },
       Status::not_supported,
       {"'num_attention_heads'"}},
      {"layers beyond the limits",
       [](J& j) { j["num_hidden_layers"] = 1 << 20; },
       Status::data_error,
       {"'num_hidden_layers'"}},
      {"vocabulary beyond int32",
       [](J& j) { j["vocab_size"] = 1LL << 33; },
       Status::data_error,
       {"'vocab_size'"}},
      {"negative eps",
       [](J& j) { j["rms_norm_eps"] = -1; },
       Status::invalid_argument,
       {"layernorm_eps"}},
      {"tie a string",
       [](J& j) { j["tie_word_embeddings"] = "yes"; },
       Status::data_error,
       {"'tie_word_embeddings'"}},
      {"not an object",
       [](J& j) {
         j = J::array({1, 2});
       },
       Status::data_error,
       {"not a JSON object"}},
  };
  TempDir dir;
  const auto base = nlohmann::json::parse(kLlamaConfig);
  write_folder(dir.path(), kLlamaConfig, make_tensors(base, 1));
  CHECK(import_error(dir.path()).first == Status::ok);
  for (const ConfigCase& c : cases) {
    INFO(c.what);
    auto j = base;
    c.edit(j);
    kiln::test::write_bytes(dir / "config.json", j.dump());
    const auto [status, message] = import_error(dir.path());
    INFO(message);
    CHECK(status == c.status);
    CHECK_THAT(message, Catch::Contains("config.json"));
    for (const std::string& s : c.says)
      CHECK_THAT(message, Catch::Contains(s));
  }
  // Qwen2: the sliding window.
  auto q = nlohmann::json::parse(kQwen2Config);
  q["use_sliding_window"] = true;
  kiln::test::write_bytes(dir / "config.json", q.dump());
  CHECK_THAT(import_error(dir.path()).second, Catch::Contains("'use_sliding_window'"));
  // Not JSON at all, and no config.
  kiln::test::write_bytes(dir / "config.json", "{\"model_type\": ");
  CHECK(import_error(dir.path()).first == Status::data_error);
  fs::remove(dir / "config.json");
  CHECK(import_error(dir.path()).first == Status::io_error);
}

TEST_CASE("HF Llama tensors missing, unexpected, misshaped or of the wrong type are refused",
          "[hf]") {
  TempDir dir;
  auto config = nlohmann::json::parse(kLlamaConfig);
  const Tensors good = make_tensors(config, 2);
  auto refused = [&](const Tensors& t, const std::string& text = kLlamaConfig) {
    write_folder(dir.path(), text, t);
    return import_error(dir.path());
  };
  {
    Tensors t = good;
    t.erase("model.layers.1.mlp.up_proj.weight");
    const auto [s, m] = refused(t);
    CHECK(s == Status::data_error);
    CHECK_THAT(m, Catch::Contains("model.safetensors") &&
                      Catch::Contains("has no tensor 'model.layers.1.mlp.up_proj.weight'"));
  }
  {
    Tensors t = good;
    t["model.layers.0.self_attn.o_proj.bias"] = {{32}, std::vector<float>(32, 0.5f)};
    CHECK_THAT(refused(t).second,
               Catch::Contains("unexpected tensor 'model.layers.0.self_attn.o_proj.bias'"));
  }
  {
    // Old checkpoints' inv_freq buffers are recomputed, not refused.
    Tensors t = good;
    t["model.layers.0.self_attn.rotary_emb.inv_freq"] = {{4}, std::vector<float>(4, 1.0f)};
    CHECK(refused(t).first == Status::ok);
  }
  {
    Tensors t = good;
    t["model.layers.0.self_attn.k_proj.weight"].shape = {32, 8};  // transposed
    const auto [s, m] = refused(t);
    CHECK(s == Status::data_error);
    CHECK_THAT(m, Catch::Contains("'model.layers.0.self_attn.k_proj.weight'") &&
                      Catch::Contains("(32, 8)") && Catch::Contains("expected (8, 32)"));
  }
  {
    // The config's vocabulary and the embedding's rows disagree.
    auto c = config;
    c["vocab_size"] = 12;
    CHECK_THAT(refused(good, c.dump()).second,
               Catch::Contains("'model.embed_tokens.weight'") && Catch::Contains("(12, 32)"));
  }
  {
    Tensors t = good;
    t.erase("lm_head.weight");
    const auto [s, m] = refused(t);
    CHECK(s == Status::data_error);
    CHECK_THAT(m, Catch::Contains("'lm_head.weight'") && Catch::Contains("tie_word_embeddings"));
  }
  {
    // Tied in the config, but a head of its own: never silently dropped.
    auto c = config;
    c["tie_word_embeddings"] = true;
    const auto [s, m] = refused(good, c.dump());
    CHECK(s == Status::not_supported);
    CHECK_THAT(m, Catch::Contains("'lm_head.weight' differs from 'model.embed_tokens.weight'"));
  }
  {
    write_folder(dir.path(), kLlamaConfig, good);
    std::vector<int32_t> ints(32, 1);
    std::vector<kiln::SafetensorsEntry> entries;
    for (const auto& [name, x] : good) {
      if (name == "model.norm.weight") {
        entries.push_back({name,
                           kiln::SafeDtype::I32,
                           x.shape,
                           {},
                           std::as_bytes(std::span<const int32_t>(ints))});
      } else {
        entries.push_back({name, kiln::SafeDtype::F32, x.shape, x.data, {}});
      }
    }
    kiln::write_safetensors(dir / "model.safetensors", entries);
    CHECK_THAT(import_error(dir.path()).second,
               Catch::Contains("'model.norm.weight'") && Catch::Contains("I32"));
  }
  {
    // Truncated and corrupt files name the file.
    write_folder(dir.path(), kLlamaConfig, good);
    const std::string whole = kiln::test::read_bytes(dir / "model.safetensors");
    kiln::test::write_bytes(dir / "model.safetensors", whole.substr(0, whole.size() - 100));
    auto [s, m] = import_error(dir.path());
    CHECK(s == Status::data_error);
    CHECK_THAT(m, Catch::Contains("model.safetensors"));
    std::string corrupt = whole;
    corrupt[10] = '\x01';  // inside the JSON header
    kiln::test::write_bytes(dir / "model.safetensors", corrupt);
    CHECK(import_error(dir.path()).first == Status::data_error);
    fs::remove(dir / "model.safetensors");
    CHECK_THAT(import_error(dir.path()).second, Catch::Contains("neither model.safetensors"));
  }
}

TEST_CASE("HF Llama sharded indexes: shard paths outside the folder and inconsistent maps",
          "[hf]") {
  TempDir dir;
  const Tensors good = make_tensors(nlohmann::json::parse(kLlamaConfig), 3);
  write_folder(dir.path(), kLlamaConfig, good, kiln::SafeDtype::F32, 2);
  REQUIRE(import_error(dir.path()).first == Status::ok);
  const auto index =
      nlohmann::json::parse(kiln::test::read_bytes(dir / "model.safetensors.index.json"));
  auto with_index = [&](const nlohmann::json& j) {
    kiln::test::write_bytes(dir / "model.safetensors.index.json", j.dump());
    return import_error(dir.path());
  };
  for (const char* escape :
       {"../part-0.safetensors", "/etc/passwd", "sub/part-0.safetensors", "..", ""}) {
    auto j = index;
    j["weight_map"]["model.norm.weight"] = escape;
    const auto [s, m] = with_index(j);
    INFO(m);
    CHECK(s == Status::data_error);
    CHECK_THAT(m, Catch::Contains("'model.norm.weight'") && Catch::Contains("plain file name"));
  }
  {
    auto j = index;
    j["weight_map"]["model.layers.0.mlp.extra"] = "part-0.safetensors";
    CHECK_THAT(with_index(j).second,
               Catch::Contains("'model.layers.0.mlp.extra'") && Catch::Contains("does not hold"));
  }
  {
    auto j = index;
    j["weight_map"].erase("model.norm.weight");
    CHECK_THAT(with_index(j).second, Catch::Contains("'model.norm.weight'") &&
                                         Catch::Contains("'weight_map' puts nowhere"));
  }
  {
    auto j = index;
    j["weight_map"]["model.norm.weight"] = "missing.safetensors";
    const auto [s, m] = with_index(j);
    CHECK(s == Status::io_error);
    CHECK_THAT(m, Catch::Contains("missing.safetensors"));
  }
  CHECK_THAT(with_index(nlohmann::json{{"weight_map", {1, 2}}}).second,
             Catch::Contains("'weight_map'"));
  kiln::test::write_bytes(dir / "model.safetensors.index.json", "{");
  CHECK(import_error(dir.path()).first == Status::data_error);
}

TEST_CASE("HF Llama export refuses models HF's Llama cannot express, before writing", "[hf]") {
  TempDir dir;
  const kiln::ModelConfig llama = kiln::test::llama::llama(2, 11, 8);
  const std::vector<float> p(static_cast<std::size_t>(kiln::ParamLayout(llama).total()), 0.0f);
  auto refused = [&](const kiln::ModelConfig& m, const kiln::HfExportOptions& o = {}) {
    const std::vector<float> q(static_cast<std::size_t>(kiln::ParamLayout(m).total()), 0.0f);
    return error_of([&] { kiln::export_hf_llama(dir / "out", m, q, o); });
  };
  kiln::ModelConfig gpt2 = kiln::model_preset("tiny", 11);
  CHECK_THAT(refused(gpt2).second, Catch::Contains("RMSNorm"));
  kiln::ModelConfig m = llama;
  m.positions = kiln::PositionKind::learned;
  CHECK_THAT(refused(m).second, Catch::Contains("learned"));
  m = llama;
  m.mlp = kiln::MlpKind::gelu;
  m.intermediate_size = 0;
  CHECK_THAT(refused(m).second, Catch::Contains("GELU"));
  m = llama;
  m.bias = kiln::BiasKind::all;
  CHECK_THAT(refused(m).second, Catch::Contains("every linear layer"));
  m = llama;
  m.kind = kiln::ModelKind::encoder;
  m.mask_token_id = 3;
  CHECK_THAT(refused(m).second, Catch::Contains("encoder"));
  kiln::HfExportOptions o;
  o.dtype = kiln::SafeDtype::I32;
  CHECK_THAT(refused(llama, o).second, Catch::Contains("dtype"));
  const auto [s, msg] = error_of([&] {
    kiln::export_hf_llama(dir / "out", llama, std::span<const float>(p).first(p.size() - 1));
  });
  CHECK(s == Status::invalid_argument);
  CHECK_THAT(msg, Catch::Contains("parameters"));
  CHECK_FALSE(fs::exists(dir / "out"));
}
