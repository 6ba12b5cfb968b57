// Shared by the Hugging Face Llama tests (hf_llama_test.cpp, hf_llama_refusal_test.cpp,
// hf_llama_demo_test.cpp): a tiny HF Llama / Qwen2 folder written here independently of kiln's
// exporter (tensors by HF's names and shapes, random values, config.json as JSON text).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/error.hpp"
#include "kiln/safetensors.hpp"
#include "tests/common/files.hpp"
#include "tests/common/support.hpp"

namespace kiln::test::hf {

// The config of the tiny Llama in tests/cpu/llama_models.hpp (llama(2, 11, 8)): GQA 4:1, untied
// head, Llama 3 scaling; with the keys kiln ignores (token ids, dtype, version) present.
inline const char* kLlamaConfig = R"({
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "hidden_size": 32,
  "intermediate_size": 24,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 1,
  "head_dim": 8,
  "vocab_size": 11,
  "max_position_embeddings": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "rope_scaling": {"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 64, "rope_type": "llama3"},
  "tie_word_embeddings": false,
  "attention_bias": false,
  "attention_dropout": 0.0,
  "mlp_bias": false,
  "hidden_act": "silu",
  "initializer_range": 0.02,
  "pretraining_tp": 1,
  "use_cache": true,
  "bos_token_id": 1,
  "eos_token_id": [2, 3],
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0"
})";

// Qwen2's: q/k/v biases, tied, no scaling, GQA 2:1 (qwen(11, 8) of llama_models.hpp).
inline const char* kQwen2Config = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "model_type": "qwen2",
  "hidden_size": 32,
  "intermediate_size": 24,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "vocab_size": 11,
  "max_position_embeddings": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0,
  "rope_scaling": null,
  "sliding_window": 4096,
  "max_window_layers": 21,
  "use_sliding_window": false,
  "tie_word_embeddings": true,
  "hidden_act": "silu",
  "torch_dtype": "bfloat16"
})";

// HF tensors by name: shape and values.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};
using Tensors = std::map<std::string, Tensor>;

// Random tensors of the names and shapes HF gives a model of this config.
inline Tensors make_tensors(const nlohmann::json& config, uint64_t seed) {
  const int64_t C = config["hidden_size"], I = config["intermediate_size"];
  const int64_t L = config["num_hidden_layers"], NH = config["num_attention_heads"];
  const int64_t NKV = config["num_key_value_heads"], V = config["vocab_size"];
  const int64_t HD = C / NH;
  const bool qwen2 = config["model_type"] == "qwen2";
  auto rng = make_rng(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  Tensors t;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t s : shape)
      n *= s;
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v)
      x = d(rng);
    t[name] = {std::move(shape), std::move(v)};
  };
  add("model.embed_tokens.weight", {V, C});
  for (int64_t l = 0; l < L; ++l) {
    const std::string h = "model.layers." + std::to_string(l) + ".";
    add(h + "input_layernorm.weight", {C});
    add(h + "self_attn.q_proj.weight", {NH * HD, C});
    add(h + "self_attn.k_proj.weight", {NKV * HD, C});
    add(h + "self_attn.v_proj.weight", {NKV * HD, C});
    if (qwen2) {
      add(h + "self_attn.q_proj.bias", {NH * HD});
      add(h + "self_attn.k_proj.bias", {NKV * HD});
      add(h + "self_attn.v_proj.bias", {NKV * HD});
    }
    add(h + "self_attn.o_proj.weight", {C, C});
    add(h + "post_attention_layernorm.weight", {C});
    add(h + "mlp.gate_proj.weight", {I, C});
    add(h + "mlp.up_proj.weight", {I, C});
    add(h + "mlp.down_proj.weight", {C, I});
  }
  add("model.norm.weight", {C});
  if (!config.value("tie_word_embeddings", false)) add("lm_head.weight", {V, C});
  return t;
}

// Writes `tensors` (all of `dtype`) as `file` in `dir`.
inline void write_tensors(const std::filesystem::path& path, const Tensors& tensors,
                          SafeDtype dtype = SafeDtype::F32) {
  std::vector<SafetensorsEntry> entries;
  for (const auto& [name, t] : tensors)
    entries.push_back({name, dtype, t.shape, t.data, {}});
  write_safetensors(path, entries, {{"format", "pt"}});
}

// A whole folder: config.json, and model.safetensors or (shards > 1) that many shards with
// their index, tensors dealt round-robin.
inline void write_folder(const std::filesystem::path& dir, const std::string& config_text,
                         const Tensors& tensors, SafeDtype dtype = SafeDtype::F32, int shards = 1) {
  std::filesystem::create_directories(dir);
  write_bytes(dir / "config.json", config_text);
  if (shards <= 1) {
    write_tensors(dir / "model.safetensors", tensors, dtype);
    return;
  }
  std::vector<Tensors> parts(static_cast<std::size_t>(shards));
  nlohmann::json map = nlohmann::json::object();
  int k = 0;
  for (const auto& [name, t] : tensors) {
    parts[static_cast<std::size_t>(k % shards)][name] = t;
    map[name] = "part-" + std::to_string(k % shards) + ".safetensors";
    ++k;
  }
  for (int s = 0; s < shards; ++s) {
    write_tensors(dir / ("part-" + std::to_string(s) + ".safetensors"),
                  parts[static_cast<std::size_t>(s)], dtype);
  }
  write_bytes(dir / "model.safetensors.index.json",
              nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump(1));
}

// The status and message of what `f` throws (ok and "" when it does not).
inline std::pair<Status, std::string> error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return {e.status(), e.message()};
  }
  return {Status::ok, ""};
}

}  // namespace kiln::test::hf
