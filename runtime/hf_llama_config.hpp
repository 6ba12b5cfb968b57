// Internal: a Hugging Face Llama / Qwen2 config.json as a kiln ModelConfig and back (see
// kiln/hf_llama.hpp for the keys read and ignored). Split from the weights so that the fuzz
// target fuzz_hf_llama_config reaches the parser alone.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/hf_llama.hpp"
#include "kiln/model.hpp"

namespace kiln::impl {

// The model config.json `j` describes (resolved and validated, max_seq_len from
// max_position_embeddings unless options.max_seq_len is set). Throws kiln::Error naming `path`
// and the key: data_error for a missing key or a value of the wrong type or out of range,
// not_supported for what kiln cannot represent, invalid_argument when the model is out of kiln's
// limits.
ModelConfig hf_llama_config_from_json(const nlohmann::json& j, const std::filesystem::path& path,
                                      const HfImportOptions& options = {});

// config.json for `model`, which must be one HF Llama (or, with q/k/v biases, Qwen2) expresses:
// throws kiln::Error(invalid_argument) naming the part otherwise.
nlohmann::json hf_llama_config_to_json(const ModelConfig& model, const HfExportOptions& options);

// generation_config.json: the token ids when known.
nlohmann::json hf_generation_config_json(const HfExportOptions& options);

// One Hugging Face tensor: rows [row, row + rows) of kiln's parameter (kind, layer), layer -1
// for the ones outside the layers. A 1-D parameter (a norm's weight, a bias) counts elements.
struct HfTensorRows {
  std::string name;
  ParamKind kind;
  int64_t layer;
  int64_t row;
  int64_t rows;
};
// HF's Llama / Qwen2 tensors in HF's order (embedding, layers, final norm), the one name map that
// import and export share. The untied head (lm_head.weight) is not listed: the importer checks it
// against the config, the exporter writes it when the model has one.
std::vector<HfTensorRows> hf_llama_tensors(const ModelConfig& m);

}  // namespace kiln::impl
