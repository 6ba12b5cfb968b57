// Hugging Face Llama-family folders (Llama 2 / 3, SmolLM2, TinyLlama as LlamaForCausalLM; Qwen2 /
// Qwen2.5 as Qwen2ForCausalLM) into and out of kiln's model and parameter layout.
//
// A folder holds config.json and either model.safetensors or a sharded
// model.safetensors.index.json ({"weight_map": {tensor: shard file}}) beside its shards. Names:
//   model.embed_tokens.weight (V, C)            lm_head.weight (V, C), absent when tied
//   model.layers.{i}.input_layernorm.weight (C) model.layers.{i}.post_attention_layernorm.weight
//   model.layers.{i}.self_attn.{q,k,v}_proj.weight (NH HD | NKV HD | NKV HD, C), .bias (Qwen2)
//   model.layers.{i}.self_attn.o_proj.weight (C, C)
//   model.layers.{i}.mlp.{gate,up}_proj.weight (I, C), mlp.down_proj.weight (C, I)
//   model.norm.weight (C)
// kiln fuses q/k/v (q rows, then k, then v) and gate/up (gate rows, then up) into one tensor
// each; its rotary embedding is Hugging Face's rotate-half, so q and k need no permutation.
//
// What config.json must say, and what kiln ignores (see hf_llama_config.cpp for each key):
// - read: architectures (LlamaForCausalLM | Qwen2ForCausalLM), model_type (llama | qwen2),
//   hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
//   head_dim (null or hidden_size / num_attention_heads), vocab_size, max_position_embeddings,
//   rms_norm_eps, rope_theta, rope_scaling (null, default or llama3; or transformers 5's
//   rope_parameters), tie_word_embeddings, attention_bias, mlp_bias, hidden_act (silu),
//   use_sliding_window (Qwen2: false), attention_dropout (0), initializer_range (init_std).
// - ignored: bos/eos/pad token ids (the tokenizer's business), torch_dtype / dtype (the weights'
//   own dtypes are read), transformers_version, use_cache, pretraining_tp (a tensor-parallel
//   slicing of the same product), Qwen2's sliding_window / max_window_layers (unused without the
//   sliding window), any key transformers does not read for these models, and the rotary
//   inv_freq buffers older checkpoints hold (recomputed from the config).
// Everything else kiln cannot represent is refused naming the key or tensor: another
// architecture, a rope type other than default / llama3, mlp_bias, Llama's attention_bias (an
// o_proj bias kiln does not have), an activation other than silu, a head dim that is not
// hidden_size / num_attention_heads, a missing, unexpected, misshaped or non-float tensor, and a
// tied config whose lm_head.weight differs from embed_tokens.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "kiln/error.hpp"
#include "kiln/export.h"
#include "kiln/model.hpp"
#include "kiln/safetensors.hpp"
#include "kiln/tokenizer.hpp"

namespace kiln {

struct HfImportOptions {
  // The model's max_seq_len (the generator's cache, the longest training sequence); 0 takes the
  // config's max_position_embeddings (Llama 3.2: 131072, a large cache). Rotary positions have no
  // table, so this changes no weight.
  int64_t max_seq_len = 0;
};

// Reads the folder `dir` and returns its model (resolved), filling `params` with
// ParamLayout(model).total() floats (padded embedding rows and gaps zero). Weights may be F32,
// F16, BF16 or F64 and are converted to float. The config is checked against kiln/limits.hpp
// before anything is allocated. Throws kiln::Error naming the file and the key or tensor:
// io_error when a file cannot be read; data_error for malformed JSON or safetensors, a missing
// key, a value of the wrong type or outside kiln's limits, a missing, unexpected or misshaped
// tensor, a shard name that is not a plain file name in `dir`; not_supported for a model kiln
// cannot represent (see above); invalid_argument for a model kiln's checks refuse otherwise (e.g.
// a head dim over 256).
KILN_API ModelConfig import_hf_llama(const std::filesystem::path& dir, std::vector<float>* params,
                                     const HfImportOptions& options = {});

struct HfExportOptions {
  SafeDtype dtype = SafeDtype::F32;  // F32, BF16 (rounded to nearest even) or F16
  // Above this many bytes of tensor data the weights are split into
  // model-0000k-of-0000n.safetensors with model.safetensors.index.json; 0: one model.safetensors.
  int64_t max_shard_bytes = 0;
  // Written to config.json and generation_config.json when >= 0 (kiln's model does not know its
  // tokenizer's ids; train_gpt passes the folder tokenizer's).
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
};

// Writes `model` with `params` (ParamLayout(model).total() floats) into the folder `dir` (created
// when missing) as Hugging Face loads it: config.json for LlamaForCausalLM (Qwen2ForCausalLM when
// the biases are q/k/v only), the weights, and generation_config.json; each file atomically.
// Writes nothing else (no tokenizer: the caller copies its own). invalid_argument, before
// anything is written, for a model Hugging Face's Llama cannot express (an encoder, LayerNorm,
// learned positions, GELU, biases on every linear layer), a wrong parameter count or dtype, or a
// sharded export into a folder holding model.safetensors (which loaders would read instead);
// io_error when it cannot write.
KILN_API void export_hf_llama(const std::filesystem::path& dir, const ModelConfig& model,
                              std::span<const float> params, const HfExportOptions& options = {});

// ---- whole folders, for the demos (train_gpt --hf / --export-hf, generate --hf) ----------------

// The tokenizer a Hugging Face folder ships: its tokenizer.json, with what tokenizer_config.json
// (when present) says: "add_bos_token" (true: every encode() starts with "bos_token", a string or
// {"content": ...}) and "eos_token" (what eot_token() returns, where generation stops). `add_bos`
// overrides the first: 1 yes, 0 no, -1 the folder's (no BOS when tokenizer_config.json does not
// ask for one). Returns null when the folder has no tokenizer.json. Throws kiln::Error naming the
// file and key for a tokenizer_config.json that is not JSON or has a key of the wrong type, and
// what HfTokenizer throws.
KILN_API std::unique_ptr<HfTokenizer> load_hf_tokenizer(const std::filesystem::path& dir,
                                                        int add_bos = -1);

// What train_gpt --hf and generate --hf start from: the folder's model and weights
// (import_hf_llama) and its tokenizer (load_hf_tokenizer; null without tokenizer.json).
struct HfFolder {
  ModelConfig model;
  std::vector<float> params;
  std::unique_ptr<HfTokenizer> tokenizer;
};
// A Hugging Face config's context (Llama 3.2: 131072) would size a generator's cache of
// gigabytes; rotary positions have no table, so the demos plan for at most this by default.
inline constexpr int64_t kHfDefaultContext = 4096;
// `max_seq_len` > 0: the model's max_seq_len; 0: the config's max_position_embeddings, at most
// kHfDefaultContext. `add_bos` as load_hf_tokenizer's.
KILN_API HfFolder load_hf_folder(const std::filesystem::path& dir, int64_t max_seq_len = 0,
                                 int add_bos = -1);

// Throws what export_hf_folder(dir, model, ..., source_dir) would refuse before writing
// (invalid_argument naming the part HF's Llama cannot express, or `dir` being `source_dir`),
// without writing anything: for a trainer to refuse --export-hf before it trains.
KILN_API void check_hf_llama_export(const ModelConfig& model, const std::filesystem::path& dir = {},
                                    const std::filesystem::path& source_dir = {});

// export_hf_llama into `dir`, then, when `source_dir` is not empty, the source folder's
// tokenizer.json and tokenizer_config.json (those present) copied beside it (atomically, each), and
// token ids the options leave unset (-1) taken from the source's config.json where they are
// integers there (bos_token_id, eos_token_id). `dir` and `source_dir` must differ.
KILN_API void export_hf_folder(const std::filesystem::path& dir, const ModelConfig& model,
                               std::span<const float> params,
                               const std::filesystem::path& source_dir,
                               HfExportOptions options = {});

}  // namespace kiln
