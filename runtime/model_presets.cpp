// The named model presets: GPT-2 / GPT-3 shapes and the Llama family with their published
// shapes (see kiln/model.hpp, model_preset).
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "errors/check.hpp"
#include "kiln/model.hpp"

namespace kiln {

namespace {

struct Preset {
  const char* name;
  const char* alias;
  int64_t L, H, C, T;
};

constexpr Preset kPresets[] = {
    {"gpt2-124m", "gpt2", 12, 12, 768, 1024},
    {"gpt2-350m", "gpt2-medium", 24, 16, 1024, 1024},
    {"gpt2-774m", "gpt2-large", 36, 20, 1280, 1024},
    {"gpt2-1558m", "gpt2-xl", 48, 25, 1600, 1024},
    {"gpt3-125m", "", 12, 12, 768, 2048},
    {"gpt3-350m", "", 24, 16, 1024, 2048},
    {"tiny", "", 2, 4, 64, 64},
    {"small", "", 4, 4, 128, 256},
    {"medium", "", 6, 6, 384, 512},
};

// The Llama family: RMSNorm, rotary positions, SwiGLU, GQA. V 0: the caller's vocabulary (test
// sizes). T is the context the runtime plans for (the generator's cache, the rows a step may
// have), 2048 for the published models whatever their trained context (rotary positions have no
// table to size), so that a generator or a training plan stays small; --max-seq-len raises it.
struct LlamaPreset {
  const char* name;
  int64_t L, H, KV, C, I, V, T;
  bool tied;
  BiasKind bias;
  double theta, eps;
  RopeScaling scaling;
  double factor, low, high;
  int64_t original;
};

constexpr LlamaPreset kLlamaPresets[] = {
    // HuggingFaceTB/SmolLM2-135M, -360M
    {"smollm2-135m", 30, 9, 3, 576, 1536, 49152, 2048, true, BiasKind::none, 100000, 1e-5,
     RopeScaling::none, 1, 1, 4, 8192},
    {"smollm2-360m", 32, 15, 5, 960, 2560, 49152, 2048, true, BiasKind::none, 100000, 1e-5,
     RopeScaling::none, 1, 1, 4, 8192},
    // Qwen/Qwen2.5-0.5B: biases on q, k, v only
    {"qwen2.5-0.5b", 24, 14, 2, 896, 4864, 151936, 2048, true, BiasKind::qkv, 1e6, 1e-6,
     RopeScaling::none, 1, 1, 4, 8192},
    // meta-llama/Llama-3.2-1B
    {"llama-3.2-1b", 16, 32, 8, 2048, 8192, 128256, 2048, true, BiasKind::none, 500000, 1e-5,
     RopeScaling::llama3, 32, 1, 4, 8192},
    // TinyLlama/TinyLlama-1.1B (Llama 2 shape)
    {"tinyllama-1.1b", 22, 32, 4, 2048, 5632, 32000, 2048, false, BiasKind::none, 10000, 1e-5,
     RopeScaling::none, 1, 1, 4, 8192},
    // meta-llama/Llama-3.1-8B
    {"llama-3.1-8b", 32, 32, 8, 4096, 14336, 128256, 2048, false, BiasKind::none, 500000, 1e-5,
     RopeScaling::llama3, 8, 1, 4, 8192},
    // Test sizes: every part on (GQA 4:1, untied head, the three bands of Llama 3's scaling
    // within a head dim of 16: wavelengths below 16 kept, 16..64 interpolated, above 64 scaled).
    {"llama-tiny", 2, 4, 1, 64, 176, 0, 64, false, BiasKind::none, 10000, 1e-5, RopeScaling::llama3,
     4, 1, 4, 64},
    {"llama-small", 4, 8, 2, 128, 344, 0, 256, false, BiasKind::none, 10000, 1e-5,
     RopeScaling::llama3, 4, 1, 4, 256},
};

}  // namespace

ModelConfig model_preset(std::string_view name, int64_t vocab_size) {
  for (const Preset& p : kPresets) {
    if (name == p.name || (*p.alias && name == p.alias)) {
      ModelConfig c;
      c.n_layer = p.L;
      c.n_head = p.H;
      c.n_embd = p.C;
      c.max_seq_len = p.T;
      c.vocab_size = vocab_size;
      return c.resolved();
    }
  }
  for (const LlamaPreset& p : kLlamaPresets) {
    if (name != p.name) continue;
    ModelConfig c;
    c.n_layer = p.L;
    c.n_head = p.H;
    c.n_kv_head = p.KV;
    c.n_embd = p.C;
    c.intermediate_size = p.I;
    c.vocab_size = p.V > 0 ? p.V : vocab_size;
    c.max_seq_len = p.T;
    c.layernorm_eps = p.eps;
    c.norm = NormKind::rmsnorm;
    c.positions = PositionKind::rotary;
    c.mlp = MlpKind::swiglu;
    c.bias = p.bias;
    c.tied_embeddings = p.tied;
    c.rope.theta = p.theta;
    c.rope.scaling = p.scaling;
    c.rope.factor = p.factor;
    c.rope.low_freq_factor = p.low;
    c.rope.high_freq_factor = p.high;
    c.rope.original_max_position = p.original;
    return c.resolved();
  }
  std::string known;
  for (const std::string& n : model_preset_names())
    known += (known.empty() ? "" : ", ") + n;
  KILN_CHECK_ARG(false, "model: unknown preset '", name, "' (known: ", known, ")");
  return {};
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets)
    names.emplace_back(p.name);
  for (const LlamaPreset& p : kLlamaPresets)
    names.emplace_back(p.name);
  return names;
}

namespace {

// The parts given over the preset's.
void apply_parts(const ModelOverrides& o, ModelConfig& m) {
  if (o.n_kv_head) m.n_kv_head = o.n_kv_head;
  if (o.norm) m.norm = *o.norm;
  if (o.positions) m.positions = *o.positions;
  if (o.mlp) m.mlp = *o.mlp;
  if (o.intermediate_size) m.intermediate_size = o.intermediate_size;
  // A GELU MLP is 4C wide; SwiGLU without a size takes Llama's usual 8C/3 rounded up to 64.
  if (m.mlp == MlpKind::gelu) m.intermediate_size = 0;
  if (m.mlp == MlpKind::swiglu && m.intermediate_size == 0) {
    m.intermediate_size = (8 * m.n_embd / 3 + 63) / 64 * 64;
  }
  if (o.bias) m.bias = *o.bias;
  if (o.tied_embeddings) m.tied_embeddings = *o.tied_embeddings;
  if (o.rope_theta) m.rope.theta = o.rope_theta;
  if (o.rope_scaling) m.rope.scaling = *o.rope_scaling;
  if (o.rope_factor) m.rope.factor = o.rope_factor;
  if (o.rope_low_freq_factor) m.rope.low_freq_factor = o.rope_low_freq_factor;
  if (o.rope_high_freq_factor) m.rope.high_freq_factor = o.rope_high_freq_factor;
  if (o.rope_original_max_position) m.rope.original_max_position = o.rope_original_max_position;
}

}  // namespace

ModelConfig training_model(std::string_view name, int64_t data_vocab, int64_t seq_len,
                           const ModelOverrides& o) {
  const int64_t vocab = o.vocab_size > 0 ? o.vocab_size : data_vocab + (o.encoder ? 1 : 0);
  ModelConfig model = model_preset(name, vocab);
  // A Llama-family preset brings its published vocabulary; an explicit one wins.
  if (o.vocab_size) model.vocab_size = o.vocab_size;
  if (o.n_layer) model.n_layer = o.n_layer;
  if (o.n_head) model.n_head = o.n_head;
  if (o.n_embd) model.n_embd = o.n_embd;
  apply_parts(o, model);
  // A preset's positions grow to the requested sequence length unless given explicitly.
  model.max_seq_len = o.max_seq_len ? o.max_seq_len : std::max(model.max_seq_len, seq_len);
  model.padded_vocab = 0;
  if (o.encoder) {
    model.kind = ModelKind::encoder;
    model.mask_token_id = static_cast<int32_t>(vocab - 1);
  }
  return model.resolved();
}

}  // namespace kiln
