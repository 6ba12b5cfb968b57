// Hugging Face GPT-2 weights (`model.safetensors`, as transformers' GPT2Model / GPT2LMHeadModel
// save them) into and out of kiln's parameter layout.
//
// Names: wte.weight (V, C), wpe.weight (maxT, C), h.{i}.ln_1.{weight,bias},
// h.{i}.attn.c_attn.{weight,bias}, h.{i}.attn.c_proj.{weight,bias}, h.{i}.ln_2.{weight,bias},
// h.{i}.mlp.c_fc.{weight,bias}, h.{i}.mlp.c_proj.{weight,bias}, ln_f.{weight,bias}; optionally
// prefixed "transformer." (GPT2LMHeadModel), with an lm_head.weight and the attention-mask
// buffers h.{i}.attn.bias / masked_bias, which carry no parameters. An lm_head.weight holding
// wte.weight's values is the tied head; one whose values differ imports as an untied head
// (ModelConfig::tied_embeddings false), never silently replaced by the embedding. GPT-2's Conv1D
// stores its weights (in, out); kiln (as torch.nn.Linear) keeps (out, in): import and export
// transpose them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "kiln/error.hpp"
#include "kiln/export.h"
#include "kiln/model.hpp"

namespace kiln {

// Reads `path` and returns the model it holds, filling `params` (ParamLayout(model).total()
// floats, padded embedding rows and gaps zero). The sizes come from the shapes; the head count
// and LayerNorm epsilon from config.json beside the file, else `n_head` (> 0) and 1e-5. Throws
// kiln::Error naming the file and the tensor: io_error when unreadable, data_error for a missing
// or unexpected tensor, a wrong shape or a dtype that is not F32 / F16 / BF16 / F64;
// invalid_argument when the head count is unknown or does not divide the channels.
KILN_API ModelConfig import_hf_gpt2(const std::filesystem::path& path, int64_t n_head,
                                    std::vector<float>* params);

// Writes a decoder's parameters (ParamLayout(model).total() floats) as `path` in Hugging Face's
// GPT-2 names and layout (F32), atomically, plus config.json beside it when `write_config`; an
// untied head is written as lm_head.weight with tie_word_embeddings false.
// invalid_argument for an encoder, a model with other parts than GPT-2's (RMSNorm, rotary, ...)
// or a wrong parameter count; io_error when it cannot write.
KILN_API void export_hf_gpt2(const std::filesystem::path& path, const ModelConfig& model,
                             std::span<const float> params, bool write_config = true);

}  // namespace kiln
