// The model: a pre-norm Transformer described by its parts, used as a causal decoder or, with
// bidirectional attention and a masked-token objective, as a BERT-style encoder. The parts: the
// norm (LayerNorm | RMSNorm), the positions (learned | rotary, with Llama 3's frequency scaling or
// none), the MLP (GELU 4C | SwiGLU with its intermediate size), the biases of the linear layers
// (all | q/k/v only | none), the key/value heads (GQA) and a tied or untied output head. GPT-2
// (the defaults) and the Llama family (Llama 3, SmolLM2, Qwen2.5, TinyLlama) are presets of this
// one model, trained by one schedule. This header describes the model's shape (ModelConfig), the
// presets, and where each parameter tensor lives in the flat parameter buffer (ParamLayout).
#pragma once

#include <cstdint>
#include <optional>
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

// The parts. Each enum's names (norm_kind_name, ...) are those of the model JSON.
enum class NormKind {
  layernorm,  // (x - mean) * rstd * w + b (GPT-2); always has its bias b
  rmsnorm,    // x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps) (Llama); no bias
};
enum class PositionKind {
  learned,  // a (max_seq_len, C) position embedding added to the token embedding (GPT-2)
  rotary,   // rotary embedding of q and k in every layer (RoPE, Hugging Face's rotate-half)
};
enum class MlpKind {
  gelu,    // fc (4C, C) -> GELU (tanh) -> proj (C, 4C)
  swiglu,  // gate_up (2I, C) -> silu(gate) * up -> down (C, I)
};
enum class BiasKind {
  all,   // every linear layer has a bias (GPT-2)
  qkv,   // only the q/k/v projection (Qwen2)
  none,  // no linear layer has one (Llama)
};
enum class RopeScaling {
  none,    // inv_freq[i] = theta^(-2i/HD)
  llama3,  // Llama 3's frequency bands (Hugging Face's _compute_llama3_parameters)
};
KILN_API const char* norm_kind_name(NormKind kind);
KILN_API const char* position_kind_name(PositionKind kind);
KILN_API const char* mlp_kind_name(MlpKind kind);
KILN_API const char* bias_kind_name(BiasKind kind);
KILN_API const char* rope_scaling_name(RopeScaling scaling);
// The reverse: the enum a name means; kiln::Error(invalid_argument) listing the names otherwise.
KILN_API NormKind parse_norm_kind(std::string_view name);
KILN_API PositionKind parse_position_kind(std::string_view name);
KILN_API MlpKind parse_mlp_kind(std::string_view name);
KILN_API BiasKind parse_bias_kind(std::string_view name);
KILN_API RopeScaling parse_rope_scaling(std::string_view name);

// Rotary positions (used when positions == rotary).
struct RopeConfig {
  double theta = 10000;  // the base: 10000 (Llama 2, TinyLlama), 500000 (Llama 3), 1e6 (Qwen2.5)
  RopeScaling scaling = RopeScaling::none;
  double factor = 8;                     // llama3: 32 (Llama 3.2), 8 (Llama 3.1)
  double low_freq_factor = 1;            // llama3
  double high_freq_factor = 4;           // llama3
  int64_t original_max_position = 8192;  // llama3: the context the model was pre-trained at
  bool operator==(const RopeConfig&) const = default;
};

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
  int32_t mask_token_id = -1;   // encoder: the id that replaces masked inputs (< vocab_size)
  double layernorm_eps = 1e-5;  // the norm's eps (LayerNorm or RMSNorm)
  double init_std = 0.02;       // GPT-2: N(0, 0.02), residual projections scaled by 1/sqrt(2 L)

  // The parts; the defaults are GPT-2's, so a description without them (older checkpoints,
  // existing code) is the GPT-2 model it always was.
  NormKind norm = NormKind::layernorm;
  PositionKind positions = PositionKind::learned;
  MlpKind mlp = MlpKind::gelu;
  BiasKind bias = BiasKind::all;
  RopeConfig rope;                // positions == rotary
  int64_t n_kv_head = 0;          // key/value heads (GQA), dividing n_head; 0 means n_head
  int64_t intermediate_size = 0;  // SwiGLU's I (required); GELU: 0 (the MLP is 4C wide)
  bool tied_embeddings = true;    // the LM head is the token embedding; false: its own lm_head

  int64_t head_dim() const { return n_head > 0 ? n_embd / n_head : 0; }
  int64_t kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  // Columns of the fused q/k/v projection's output: (n_head + 2 kv_heads) * head_dim (3C
  // without GQA), the packed (B, T, NH + 2 NKV, HD) layout attention reads.
  int64_t qkv_width() const { return (n_head + 2 * kv_heads()) * head_dim(); }
  // The MLP's hidden width (the activation's output, the down projection's input): 4C or I.
  int64_t mlp_hidden() const { return mlp == MlpKind::gelu ? 4 * n_embd : intermediate_size; }
  // Rows of the MLP's first weight: 4C (GELU) or 2I (SwiGLU: gate rows, then up rows).
  int64_t mlp_width() const { return mlp == MlpKind::gelu ? 4 * n_embd : 2 * intermediate_size; }
  bool qkv_bias() const { return bias != BiasKind::none; }
  bool linear_bias() const { return bias == BiasKind::all; }  // attention output and MLP
  bool norm_bias() const { return norm == NormKind::layernorm; }
  bool learned_positions() const { return positions == PositionKind::learned; }
  bool causal() const { return kind == ModelKind::decoder; }

  // A copy with padded_vocab filled in.
  ModelConfig resolved() const;

  // Throws kiln::Error(invalid_argument) naming the first problem (and its field): a zero or
  // negative size, heads not dividing channels, kv heads not dividing heads, padded_vocab <
  // vocab_size, a vocabulary beyond int32, an encoder without a valid mask id, eps <= 0, SwiGLU
  // without an intermediate size (GELU with one), rotary positions with an odd head dim or bad
  // theta / Llama 3 factors.
  void validate() const;

  // Parameters the model really has: the tied embedding counted once, without the padded rows
  // (GPT-2 124M: 124,439,808; an untied head adds V x C). This is the count PERF.md's MFU uses.
  int64_t num_parameters() const;

  // One line, e.g. "decoder L=12 H=12 C=768 V=50257 (padded 50304) maxT=1024", followed for a
  // model other than GPT-2's parts by them, e.g. " kv=3 rmsnorm rope(theta 100000) swiglu(1536)
  // bias none untied".
  std::string describe() const;

  // Training FLOPs per token by PERF.md's convention: 6 * params + 6 * L * C * T (C = NH * HD,
  // the query width the attention's two matrix products use, whatever the kv heads).
  double flops_per_token(int64_t seq_len) const;

  bool operator==(const ModelConfig&) const = default;
};

// The named presets: gpt2-124m (alias gpt2), gpt2-350m (gpt2-medium), gpt2-774m (gpt2-large),
// gpt2-1558m (gpt2-xl) at T = 1024; gpt3-125m and gpt3-350m (dense attention) at T = 2048; and
// small test sizes: tiny (L2 H4 C64 T64), small (L4 H4 C128 T256), medium (L6 H6 C384 T512).
// `vocab_size` defaults to GPT-2's 50257.
// The Llama family, with their published shapes and vocabularies (`vocab_size` ignored unless
// the preset is a test size): smollm2-135m, smollm2-360m, qwen2.5-0.5b, llama-3.2-1b,
// tinyllama-1.1b, llama-3.1-8b, and the test sizes llama-tiny (L2 H4 KV1 C64 I176, untied,
// Llama 3 scaling, T64) and llama-small (L4 H8 KV2 C128 I344, T256), which take `vocab_size`.
// Throws kiln::Error(invalid_argument) for an unknown name, listing the known ones.
KILN_API ModelConfig model_preset(std::string_view name, int64_t vocab_size = 50257);
KILN_API std::vector<std::string> model_preset_names();

// What a user may set over a preset (train_gpt's command line). 0, empty: the preset's.
struct ModelOverrides {
  int64_t vocab_size = 0;  // 0: the data's vocabulary (+1, the mask id, for an encoder)
  int64_t n_layer = 0, n_head = 0, n_embd = 0;
  int64_t max_seq_len = 0;  // 0: the preset's, grown to the training sequence length
  bool encoder = false;     // BERT-style; the mask id is the last of the vocabulary
  // The parts.
  int64_t n_kv_head = 0;
  int64_t intermediate_size = 0;  // SwiGLU's; 0: the preset's, else Llama's 8C/3 rounded to 64
  std::optional<NormKind> norm;
  std::optional<PositionKind> positions;
  std::optional<MlpKind> mlp;
  std::optional<BiasKind> bias;
  std::optional<bool> tied_embeddings;
  double rope_theta = 0;
  std::optional<RopeScaling> rope_scaling;
  double rope_factor = 0, rope_low_freq_factor = 0, rope_high_freq_factor = 0;
  int64_t rope_original_max_position = 0;
};

// The model a training run starts from: preset `name` for the data's vocabulary `data_vocab`
// with `overrides` applied, its positions at least `seq_len` long (unless given), resolved. A
// GELU MLP is always 4C wide. Throws kiln::Error(invalid_argument) for an unknown preset; the
// result is not validated (TrainConfig::validate and the trainer do that, naming the field).
KILN_API ModelConfig training_model(std::string_view name, int64_t data_vocab, int64_t seq_len,
                                    const ModelOverrides& overrides = {});

// ---- parameters -------------------------------------------------------------------------------

// The parameter tensors of one model. Shapes are those of torch.nn.Linear (out, in) for weights.
// W = qkv_width() = (NH + 2 NKV) HD, F = mlp_width() (4C or 2I), Hm = mlp_hidden() (4C or I).
// A model has the kinds its parts need: no wpe with rotary positions, no *_b of the norms with
// RMSNorm, linear biases per BiasKind, lm_head only when untied.
enum class ParamKind {
  wte,        // (Vp, C) token embedding (tied: also the LM head); rows V..Vp-1 are zero
  wpe,        // (maxT, C) position embedding (learned positions)
  ln1_w,      // (C) the attention's norm
  ln1_b,      // (C) LayerNorm only
  qkv_w,      // (W, C) rows: q (NH HD), k (NKV HD), v (NKV HD); head h owns rows h*HD..h*HD+HD-1
  qkv_b,      // (W)
  attproj_w,  // (C, C)
  attproj_b,  // (C)
  ln2_w,      // (C) the MLP's norm
  ln2_b,      // (C) LayerNorm only
  fc_w,       // (F, C) GELU: c_fc; SwiGLU: gate_proj rows [0, I) then up_proj rows [I, 2I)
  fc_b,       // (F)
  fcproj_w,   // (C, Hm) GELU: c_proj; SwiGLU: down_proj
  fcproj_b,   // (C)
  lnf_w,      // (C)
  lnf_b,      // (C) LayerNorm only
  lm_head,    // (Vp, C) the untied LM head; rows V..Vp-1 are zero
};
KILN_API const char* param_kind_name(ParamKind kind);

struct ParamTensor {
  ParamKind kind;
  int64_t layer;  // -1 for wte, wpe, lnf_*
  int64_t rows;   // rows x cols, row-major; a vector has rows == 1
  int64_t cols;
  int64_t offset;    // in elements from the start of the parameter buffer
  bool decay;        // AdamW weight decay applies: the matrices (wte, wpe, lm_head and the four
                     // weights of each layer), not the biases and norm weights (GPT-2 / nanoGPT)
  std::string name;  // Hugging Face GPT-2's name: "wte.weight", "h.3.attn.c_attn.weight", ...;
                     // with rotary positions Llama's: "model.layers.3.self_attn.qkv_proj.weight"
                     // (q/k/v fused), "model.layers.3.mlp.gate_up_proj.weight" (fused), ...
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

  // The tensor of `kind` in `layer` (layer ignored for wte, wpe, lnf_*, lm_head). Throws
  // kiln::Error(invalid_argument) for a layer out of range or a kind this model lacks.
  const ParamTensor& get(ParamKind kind, int64_t layer = -1) const;
  // Whether this model has tensors of `kind`.
  bool has(ParamKind kind) const;

  // The contiguous ranges [begin, end) (elements) whose gradients become final together, in the
  // order the backward pass finishes them: final norm (with the untied lm_head, laid out after
  // it), layer L-1, ..., layer 0, embeddings (the tied embedding receives its last contribution
  // from the embedding backward).
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
  // index_[(layer + 1) * kKinds + kind]: the tensor's index, -1 where absent; row 0 holds the
  // tensors outside the layers.
  static constexpr int kKinds = static_cast<int>(ParamKind::lm_head) + 1;
  std::vector<int> index_;
};

// GPT-2's initialisation (Llama's too), deterministic for a seed on every platform: weights
// N(0, init_std), the attention and MLP output projections N(0, init_std / sqrt(2 L)), biases 0,
// norm weights 1, the padded embedding / lm_head rows and the alignment gaps 0. Fills `params`
// (layout.total() floats).
KILN_API void init_parameters(const ParamLayout& layout, uint64_t seed, float* params);

}  // namespace kiln
