// Hugging Face Llama / Qwen2 config.json <-> kiln::ModelConfig. Defaults are transformers' own
// (LlamaConfig, Qwen2Config) for the keys that change behaviour; the sizes are required, since a
// config without them describes no real checkpoint.
#include <cmath>
#include <string>

#include "errors/check.hpp"
#include "kiln/limits.hpp"
#include "runtime/hf_llama_config.hpp"
#include "runtime/json_strict.hpp"

namespace kiln::impl {
namespace {

// Typed reads of one object of config.json; every failure names the file and the key (with
// its parent, e.g. "rope_scaling.factor").
class Keys {
 public:
  Keys(const nlohmann::json& j, const std::filesystem::path& path, std::string prefix = {})
      : j_(j), path_(path), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(Status status, const std::string& what) const {
    throw_error(status, "'" + path_.string() + "': " + what, nullptr, nullptr, 0);
  }
  std::string name(const char* key) const { return "'" + prefix_ + key + "'"; }
  // Present and not null (transformers treats null as "the default").
  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  void require(const char* key) const {
    if (!has(key)) fail(Status::data_error, "has no " + name(key));
  }

  int64_t integer(const char* key, int64_t lo, int64_t hi) const {
    require(key);
    try {
      return json_int(j_, key, lo, hi);
    } catch (const Error& e) {
      bad_value(e);
    }
  }
  double number(const char* key) const {
    require(key);
    try {
      return json_double(j_, key);
    } catch (const Error& e) {
      bad_value(e);
    }
  }
  double number(const char* key, double otherwise) const {
    return has(key) ? number(key) : otherwise;
  }
  bool boolean(const char* key, bool otherwise) const {
    if (!has(key)) return otherwise;
    try {
      return json_bool(j_, key);
    } catch (const Error& e) {
      bad_value(e);
    }
  }
  std::string string(const char* key, const std::string& otherwise) const {
    if (!has(key)) return otherwise;
    const nlohmann::json& v = j_.at(key);
    if (!v.is_string())
      fail(Status::data_error, name(key) + " must be a string (got " + v.dump() + ")");
    return v.get<std::string>();
  }
  const nlohmann::json& at(const char* key) const { return j_.at(key); }

 private:
  // json_strict's message names the key itself; say in which object.
  [[noreturn]] void bad_value(const Error& e) const {
    fail(Status::data_error,
         (prefix_.empty() ? "" : "in '" + prefix_.substr(0, prefix_.size() - 1) + "': ") +
             e.message());
  }

  const nlohmann::json& j_;
  const std::filesystem::path& path_;
  std::string prefix_;
};

// rope_scaling (transformers 4) or rope_parameters (transformers 5): the rope type and, for
// llama3, its four numbers. theta is read by the caller (it sits beside rope_scaling in 4).
void read_rope_type(const Keys& rope, RopeConfig* out) {
  // "type" is the older spelling of "rope_type".
  const std::string type =
      rope.has("rope_type") ? rope.string("rope_type", "") : rope.string("type", "default");
  if (type == "default") return;
  if (type != "llama3") {
    rope.fail(Status::not_supported,
              rope.name(rope.has("rope_type") ? "rope_type" : "type") + " '" + type +
                  "' is not a rotary scaling kiln implements (default, llama3)");
  }
  out->scaling = RopeScaling::llama3;
  out->factor = rope.number("factor");
  out->low_freq_factor = rope.number("low_freq_factor");
  out->high_freq_factor = rope.number("high_freq_factor");
  out->original_max_position =
      rope.integer("original_max_position_embeddings", 1, limits::kMaxSeqLen);
}

}  // namespace

ModelConfig hf_llama_config_from_json(const nlohmann::json& j, const std::filesystem::path& path,
                                      const HfImportOptions& options) {
  if (!j.is_object()) {
    throw_error(Status::data_error, "'" + path.string() + "': is not a JSON object", nullptr,
                nullptr, 0);
  }
  const Keys k(j, path);
  const std::string type = k.string("model_type", "");
  if (type.empty()) k.fail(Status::data_error, "has no 'model_type'");
  if (type != "llama" && type != "qwen2") {
    k.fail(
        Status::not_supported,
        "'model_type' '" + type + "' is not a model kiln reads from Hugging Face (llama, qwen2)");
  }
  const bool qwen2 = type == "qwen2";
  const std::string arch = qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  if (k.has("architectures")) {
    const nlohmann::json& a = k.at("architectures");
    if (!a.is_array()) k.fail(Status::data_error, "'architectures' must be a list of strings");
    for (const auto& name : a) {
      if (!name.is_string() || name.get<std::string>() != arch) {
        k.fail(Status::not_supported, "'architectures' names " + name.dump() + "; a " + type +
                                          " folder kiln reads holds " + arch);
      }
    }
  }

  ModelConfig m;
  m.kind = ModelKind::decoder;
  m.norm = NormKind::rmsnorm;
  m.positions = PositionKind::rotary;
  m.mlp = MlpKind::swiglu;
  m.n_embd = k.integer("hidden_size", 1, limits::kMaxChannels);
  m.intermediate_size = k.integer("intermediate_size", 1, limits::kMaxIntermediate);
  m.n_layer = k.integer("num_hidden_layers", 1, limits::kMaxLayers);
  m.n_head = k.integer("num_attention_heads", 1, limits::kMaxHeads);
  m.n_kv_head = k.has("num_key_value_heads")
                    ? k.integer("num_key_value_heads", 1, limits::kMaxHeads)
                    : m.n_head;
  if (m.n_embd % m.n_head != 0) {
    k.fail(Status::not_supported, "'num_attention_heads' (" + std::to_string(m.n_head) +
                                      ") does not divide 'hidden_size' (" +
                                      std::to_string(m.n_embd) +
                                      "): kiln's heads are hidden_size / num_attention_heads wide");
  }
  if (m.n_head % m.n_kv_head != 0) {
    k.fail(Status::data_error, "'num_key_value_heads' (" + std::to_string(m.n_kv_head) +
                                   ") does not divide 'num_attention_heads' (" +
                                   std::to_string(m.n_head) + ")");
  }
  if (k.has("head_dim")) {
    const int64_t hd = k.integer("head_dim", 1, limits::kMaxChannels);
    if (hd != m.n_embd / m.n_head) {
      k.fail(Status::not_supported,
             "'head_dim' " + std::to_string(hd) + " is not hidden_size / num_attention_heads = " +
                 std::to_string(m.n_embd / m.n_head) + " (kiln's attention is C wide)");
    }
  }
  m.vocab_size = k.integer("vocab_size", 1, limits::kMaxVocab);
  m.max_seq_len = options.max_seq_len > 0
                      ? options.max_seq_len
                      : k.integer("max_position_embeddings", 1, limits::kMaxSeqLen);
  m.layernorm_eps = k.number("rms_norm_eps", 1e-6);
  if (k.has("initializer_range")) m.init_std = k.number("initializer_range");

  // Rotary positions: transformers 5 keeps everything in rope_parameters, 4 in rope_theta and
  // rope_scaling.
  if (k.has("rope_parameters")) {
    if (!k.at("rope_parameters").is_object())
      k.fail(Status::data_error, "'rope_parameters' must be an object");
    const Keys rope(k.at("rope_parameters"), path, "rope_parameters.");
    m.rope.theta = rope.number("rope_theta", k.number("rope_theta", 10000));
    read_rope_type(rope, &m.rope);
  } else {
    m.rope.theta = k.number("rope_theta", 10000);
    if (k.has("rope_scaling")) {
      if (!k.at("rope_scaling").is_object())
        k.fail(Status::data_error, "'rope_scaling' must be null or an object");
      read_rope_type(Keys(k.at("rope_scaling"), path, "rope_scaling."), &m.rope);
    }
  }

  m.tied_embeddings = k.boolean("tie_word_embeddings", false);
  // Qwen2 always has q/k/v biases (and no others); Llama's attention_bias would add o_proj's.
  m.bias = qwen2 ? BiasKind::qkv : BiasKind::none;
  if (!qwen2 && k.boolean("attention_bias", false)) {
    k.fail(Status::not_supported,
           "'attention_bias' true: Llama's attention biases include o_proj's, which kiln's "
           "q/k/v-only biases (Qwen2's) do not");
  }
  if (!qwen2 && k.boolean("mlp_bias", false)) {
    k.fail(Status::not_supported, "'mlp_bias' true: kiln's SwiGLU MLP has no biases");
  }
  const std::string act = k.string("hidden_act", "silu");
  if (act != "silu") {
    k.fail(Status::not_supported,
           "'hidden_act' '" + act + "': kiln's gated MLP is SwiGLU (silu) only");
  }
  if (qwen2 && k.boolean("use_sliding_window", false)) {
    k.fail(Status::not_supported, "'use_sliding_window' true: kiln's attention is dense");
  }
  if (k.number("attention_dropout", 0) != 0) {
    k.fail(Status::not_supported, "'attention_dropout' is not 0: kiln has no dropout");
  }
  try {
    m.validate();
  } catch (const Error& e) {
    k.fail(Status::invalid_argument, e.message());
  }
  return m.resolved();
}

nlohmann::json hf_llama_config_to_json(const ModelConfig& model, const HfExportOptions& options) {
  const ModelConfig m = model.resolved();
  m.validate();
  KILN_CHECK_ARG(m.kind == ModelKind::decoder,
                 "export_hf_llama: only a decoder is a causal LM (got an encoder)");
  KILN_CHECK_ARG(m.norm == NormKind::rmsnorm,
                 "export_hf_llama: Hugging Face's Llama has RMSNorm, not LayerNorm");
  KILN_CHECK_ARG(m.positions == PositionKind::rotary,
                 "export_hf_llama: Hugging Face's Llama has rotary positions, not learned ones");
  KILN_CHECK_ARG(m.mlp == MlpKind::swiglu,
                 "export_hf_llama: Hugging Face's Llama has a SwiGLU MLP, not GELU");
  KILN_CHECK_ARG(m.bias != BiasKind::all,
                 "export_hf_llama: biases on every linear layer have no Llama or Qwen2 "
                 "config (bias none: Llama; q/k/v only: Qwen2)");
  const bool qwen2 = m.bias == BiasKind::qkv;
  const char* dtype = options.dtype == SafeDtype::BF16  ? "bfloat16"
                      : options.dtype == SafeDtype::F16 ? "float16"
                                                        : "float32";
  nlohmann::json rope_scaling = nullptr;
  if (m.rope.scaling == RopeScaling::llama3) {
    rope_scaling = {{"rope_type", "llama3"},
                    {"factor", m.rope.factor},
                    {"low_freq_factor", m.rope.low_freq_factor},
                    {"high_freq_factor", m.rope.high_freq_factor},
                    {"original_max_position_embeddings", m.rope.original_max_position}};
  }
  nlohmann::json j = {
      {"architectures", {qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", qwen2 ? "qwen2" : "llama"},
      {"hidden_size", m.n_embd},
      {"intermediate_size", m.intermediate_size},
      {"num_hidden_layers", m.n_layer},
      {"num_attention_heads", m.n_head},
      {"num_key_value_heads", m.kv_heads()},
      {"head_dim", m.head_dim()},
      {"vocab_size", m.vocab_size},
      {"max_position_embeddings", m.max_seq_len},
      {"rms_norm_eps", m.layernorm_eps},
      {"rope_theta", m.rope.theta},
      {"rope_scaling", rope_scaling},
      {"tie_word_embeddings", m.tied_embeddings},
      {"hidden_act", "silu"},
      {"attention_dropout", 0.0},
      {"initializer_range", m.init_std},
      {"use_cache", true},
      {"torch_dtype", dtype},
  };
  if (qwen2) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = m.n_layer;
  } else {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
    j["pretraining_tp"] = 1;
  }
  if (options.bos_token_id >= 0) j["bos_token_id"] = options.bos_token_id;
  if (options.eos_token_id >= 0) j["eos_token_id"] = options.eos_token_id;
  return j;
}

nlohmann::json hf_generation_config_json(const HfExportOptions& options) {
  nlohmann::json j = {{"_from_model_config", true}};
  if (options.bos_token_id >= 0) j["bos_token_id"] = options.bos_token_id;
  if (options.eos_token_id >= 0) j["eos_token_id"] = options.eos_token_id;
  return j;
}

std::vector<HfTensorRows> hf_llama_tensors(const ModelConfig& m) {
  const int64_t C = m.n_embd, HD = m.head_dim(), Q = m.n_head * HD, KV = m.kv_heads() * HD;
  const int64_t I = m.intermediate_size;
  std::vector<HfTensorRows> out;
  auto add = [&](std::string name, ParamKind kind, int64_t layer, int64_t row, int64_t rows) {
    out.push_back({std::move(name), kind, layer, row, rows});
  };
  // The real vocabulary only: the padded rows are kiln's business.
  add("model.embed_tokens.weight", ParamKind::wte, -1, 0, m.vocab_size);
  for (int64_t l = 0; l < m.n_layer; ++l) {
    const std::string h = "model.layers." + std::to_string(l) + ".";
    add(h + "input_layernorm.weight", ParamKind::ln1_w, l, 0, C);
    add(h + "self_attn.q_proj.weight", ParamKind::qkv_w, l, 0, Q);
    add(h + "self_attn.k_proj.weight", ParamKind::qkv_w, l, Q, KV);
    add(h + "self_attn.v_proj.weight", ParamKind::qkv_w, l, Q + KV, KV);
    if (m.qkv_bias()) {
      add(h + "self_attn.q_proj.bias", ParamKind::qkv_b, l, 0, Q);
      add(h + "self_attn.k_proj.bias", ParamKind::qkv_b, l, Q, KV);
      add(h + "self_attn.v_proj.bias", ParamKind::qkv_b, l, Q + KV, KV);
    }
    add(h + "self_attn.o_proj.weight", ParamKind::attproj_w, l, 0, C);
    add(h + "post_attention_layernorm.weight", ParamKind::ln2_w, l, 0, C);
    add(h + "mlp.gate_proj.weight", ParamKind::fc_w, l, 0, I);
    add(h + "mlp.up_proj.weight", ParamKind::fc_w, l, I, I);
    add(h + "mlp.down_proj.weight", ParamKind::fcproj_w, l, 0, C);
  }
  add("model.norm.weight", ParamKind::lnf_w, -1, 0, C);
  return out;
}

}  // namespace kiln::impl
