// The model: a GPT-2 family Transformer (learned positions, pre-LayerNorm, GELU MLP, tied
// embeddings) used as a causal decoder or, with bidirectional attention and a masked-token
// objective, as a BERT-style encoder. This header describes the model's shape (ModelConfig), the
// presets, and where each parameter tensor lives in the flat parameter buffer (ParamLayout).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/error.hpp"
#include "kiln/export.h"

namespace kiln {

// Element types of the runtime's buffers.
enum class DType { bf16, f32, f64 };
KILN_API std::size_t dtype_size(DType dtype);
KILN_API const char* dtype_name(DType dtype);

enum class ModelKind {
  decoder,  // causal attention, next-token loss (GPT)
  encoder,  // bidirectional attention, loss at masked positions only (BERT-style)
};
KILN_API const char* model_kind_name(ModelKind kind);

struct KILN_API ModelConfig {
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_embd = 0;        // C, the channels; n_head must divide it
  int64_t vocab_size = 0;    // V, the real vocabulary
  int64_t padded_vocab = 0;  // Vp >= V, the rows of the embedding / columns of the logits; 0 means
                             // "V rounded up to a multiple of 128" (50257 -> 50304), resolved by
                             // resolved()
  int64_t max_seq_len = 0;   // the rows of the position embedding
  ModelKind kind = ModelKind::decoder;
  int32_t mask_token_id = -1;  // encoder: the id that replaces masked inputs (< vocab_size)
  double layernorm_eps = 1e-5;
  double init_std = 0.02;  // GPT-2: N(0, 0.02), residual projections scaled by 1/sqrt(2 L)

  int64_t head_dim() const { return n_head > 0 ? n_embd / n_head : 0; }
  bool causal() const { return kind == ModelKind::decoder; }

  // A copy with padded_vocab filled in.
  ModelConfig resolved() const;

  // Throws kiln::Error(invalid_argument) naming the first problem: a zero or negative size, heads
  // not dividing channels, padded_vocab < vocab_size, a vocabulary beyond int32, an encoder
  // without a valid mask id, eps <= 0.
  void validate() const;

  // Parameters the model really has: the tied embedding counted once, without the padded rows
  // (GPT-2 124M: 124,439,808). This is the count PERF.md's MFU uses.
  int64_t num_parameters() const;

  // One line, e.g. "decoder L=12 H=12 C=768 V=50257 (padded 50304) maxT=1024".
  std::string describe() const;

  // Training FLOPs per token by PERF.md's convention: 6 * params + 6 * L * C * T.
  double flops_per_token(int64_t seq_len) const;

  bool operator==(const ModelConfig&) const = default;
};

// The named presets: gpt2-124m (alias gpt2), gpt2-350m (gpt2-medium), gpt2-774m (gpt2-large),
// gpt2-1558m (gpt2-xl) at T = 1024; gpt3-125m and gpt3-350m (dense attention) at T = 2048; and
// small test sizes: tiny (L2 H4 C64 T64), small (L4 H4 C128 T256), medium (L6 H6 C384 T512).
// `vocab_size` defaults to GPT-2's 50257. Throws kiln::Error(invalid_argument) for an unknown
// name, listing the known ones.
KILN_API ModelConfig model_preset(std::string_view name, int64_t vocab_size = 50257);
KILN_API std::vector<std::string> model_preset_names();

// ---- parameters -------------------------------------------------------------------------------

// The parameter tensors of one model. Shapes are those of torch.nn.Linear (out, in) for weights.
enum class ParamKind {
  wte,        // (Vp, C) token embedding, tied with the LM head; rows V..Vp-1 are zero
  wpe,        // (maxT, C) position embedding
  ln1_w,      // (C)
  ln1_b,      // (C)
  qkv_w,      // (3C, C) rows: q (C), k (C), v (C); within each, head h owns rows h*HD..h*HD+HD-1
  qkv_b,      // (3C)
  attproj_w,  // (C, C)
  attproj_b,  // (C)
  ln2_w,      // (C)
  ln2_b,      // (C)
  fc_w,       // (4C, C)
  fc_b,       // (4C)
  fcproj_w,   // (C, 4C)
  fcproj_b,   // (C)
  lnf_w,      // (C)
  lnf_b,      // (C)
};
KILN_API const char* param_kind_name(ParamKind kind);

struct ParamTensor {
  ParamKind kind;
  int64_t layer;  // -1 for wte, wpe, lnf_*
  int64_t rows;   // rows x cols, row-major; a vector has rows == 1
  int64_t cols;
  int64_t offset;    // in elements from the start of the parameter buffer
  bool decay;        // AdamW weight decay applies: the matrices (wte, wpe and the four weights of
                     // each layer), not the biases and LayerNorm parameters (GPT-2 / nanoGPT)
  std::string name;  // Hugging Face GPT-2's name: "wte.weight", "h.3.attn.c_attn.weight", ...
  int64_t numel() const { return rows * cols; }
};

// Where every parameter tensor lives in one flat buffer. Tensors are laid out layer by layer
// (embeddings, layer 0, ..., layer L-1, final LayerNorm) so that the gradients of one layer are
// one contiguous range: the communicator can reduce a layer's gradients as soon as its backward
// is done. Every tensor starts at a multiple of kAlign elements (16-byte vector access and GEMM
// alignment in every dtype); the gaps are zero and stay zero.
class KILN_API ParamLayout {
 public:
  static constexpr int64_t kAlign = 64;

  explicit ParamLayout(const ModelConfig& config);

  const ModelConfig& config() const { return config_; }
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  // Total elements of the buffer, gaps included.
  int64_t total() const { return total_; }

  // The tensor of `kind` in `layer` (layer ignored for wte, wpe, lnf_*).
  const ParamTensor& get(ParamKind kind, int64_t layer = -1) const;

  // The contiguous ranges [begin, end) (elements) whose gradients become final together, in the
  // order the backward pass finishes them: final LayerNorm, layer L-1, ..., layer 0, embeddings
  // (the tied embedding receives its last contribution from the embedding backward).
  struct Bucket {
    int64_t begin, end;
    std::string name;
  };
  const std::vector<Bucket>& buckets() const { return buckets_; }
  // The bucket holding layer `layer`'s tensors.
  const Bucket& layer_bucket(int64_t layer) const;
  const Bucket& final_norm_bucket() const;
  const Bucket& embedding_bucket() const;

 private:
  ModelConfig config_;
  std::vector<ParamTensor> tensors_;
  std::vector<Bucket> buckets_;
  int64_t total_ = 0;
  int64_t per_layer_ = 0;  // tensors per layer
};

// GPT-2's initialisation, deterministic for a seed on every platform: weights N(0, init_std),
// the attention and MLP output projections N(0, init_std / sqrt(2 L)), biases 0, LayerNorm
// weights 1, the padded embedding rows and the alignment gaps 0. Fills `params` (layout.total()
// floats).
KILN_API void init_parameters(const ParamLayout& layout, uint64_t seed, float* params);

}  // namespace kiln
