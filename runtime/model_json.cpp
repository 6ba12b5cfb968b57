#include "runtime/model_json.hpp"

#include "kernels/common/check.hpp"

namespace kiln::impl {

namespace {

// A key naming one of `names` (the enum's values in order), or `fallback` when absent.
template <typename E, std::size_t N>
E enum_from_json(const nlohmann::json& j, const char* key, const char* const (&names)[N],
                 E fallback) {
  if (!j.contains(key)) return fallback;
  const std::string value = j.at(key).get<std::string>();
  for (std::size_t i = 0; i < N; ++i) {
    if (value == names[i]) return static_cast<E>(i);
  }
  std::string known;
  for (const char* n : names)
    known += std::string(known.empty() ? "" : ", ") + n;
  KILN_CHECK_ARG(false, "model: unknown ", key, " '", value, "' (known: ", known, ")");
  return fallback;
}

constexpr const char* kNorms[] = {"layernorm", "rmsnorm"};
constexpr const char* kPositions[] = {"learned", "rotary"};
constexpr const char* kMlps[] = {"gelu", "swiglu"};
constexpr const char* kBiases[] = {"all", "qkv", "none"};
constexpr const char* kScalings[] = {"none", "llama3"};

}  // namespace

nlohmann::json model_to_json(const ModelConfig& m) {
  const ModelConfig r = m.resolved();
  // The parts are always written; a reader meeting a description without them (written before
  // they existed) takes GPT-2's, the defaults.
  return {{"n_layer", r.n_layer},
          {"n_head", r.n_head},
          {"n_embd", r.n_embd},
          {"vocab_size", r.vocab_size},
          {"padded_vocab", r.padded_vocab},
          {"max_seq_len", r.max_seq_len},
          {"kind", model_kind_name(r.kind)},
          {"mask_token_id", r.mask_token_id},
          {"layernorm_eps", r.layernorm_eps},
          {"init_std", r.init_std},
          {"norm", norm_kind_name(r.norm)},
          {"positions", position_kind_name(r.positions)},
          {"mlp", mlp_kind_name(r.mlp)},
          {"bias", bias_kind_name(r.bias)},
          {"n_kv_head", r.n_kv_head},
          {"intermediate_size", r.intermediate_size},
          {"tied_embeddings", r.tied_embeddings},
          {"rope",
           {{"theta", r.rope.theta},
            {"scaling", rope_scaling_name(r.rope.scaling)},
            {"factor", r.rope.factor},
            {"low_freq_factor", r.rope.low_freq_factor},
            {"high_freq_factor", r.rope.high_freq_factor},
            {"original_max_position", r.rope.original_max_position}}}};
}

ModelConfig model_from_json(const nlohmann::json& j) {
  ModelConfig m;
  m.n_layer = j.at("n_layer").get<int64_t>();
  m.n_head = j.at("n_head").get<int64_t>();
  m.n_embd = j.at("n_embd").get<int64_t>();
  m.vocab_size = j.at("vocab_size").get<int64_t>();
  m.padded_vocab = j.at("padded_vocab").get<int64_t>();
  m.max_seq_len = j.at("max_seq_len").get<int64_t>();
  const std::string kind = j.at("kind").get<std::string>();
  KILN_CHECK_ARG(kind == "decoder" || kind == "encoder", "unknown model kind '", kind, "'");
  m.kind = kind == "decoder" ? ModelKind::decoder : ModelKind::encoder;
  m.mask_token_id = j.at("mask_token_id").get<int32_t>();
  m.layernorm_eps = j.at("layernorm_eps").get<double>();
  m.init_std = j.at("init_std").get<double>();
  m.norm = enum_from_json(j, "norm", kNorms, NormKind::layernorm);
  m.positions = enum_from_json(j, "positions", kPositions, PositionKind::learned);
  m.mlp = enum_from_json(j, "mlp", kMlps, MlpKind::gelu);
  m.bias = enum_from_json(j, "bias", kBiases, BiasKind::all);
  m.n_kv_head = j.value("n_kv_head", int64_t{0});
  m.intermediate_size = j.value("intermediate_size", int64_t{0});
  m.tied_embeddings = j.value("tied_embeddings", true);
  if (j.contains("rope")) {
    const auto& r = j.at("rope");
    const RopeConfig d;
    m.rope.theta = r.value("theta", d.theta);
    m.rope.scaling = enum_from_json(r, "scaling", kScalings, RopeScaling::none);
    m.rope.factor = r.value("factor", d.factor);
    m.rope.low_freq_factor = r.value("low_freq_factor", d.low_freq_factor);
    m.rope.high_freq_factor = r.value("high_freq_factor", d.high_freq_factor);
    m.rope.original_max_position = r.value("original_max_position", d.original_max_position);
  }
  m.validate();
  return m;
}

nlohmann::json train_to_json(const TrainConfig& t) {
  const OptimizerConfig& o = t.optimizer;
  return {{"batch", t.batch},
          {"seq_len", t.seq_len},
          {"grad_accum", t.grad_accum},
          {"seed", t.seed},
          {"mask_fraction", t.mask_fraction},
          {"recompute_gelu", t.recompute.gelu},
          {"recompute_layernorm", t.recompute.layernorm},
          {"on_nonfinite", t.on_nonfinite == NonFinitePolicy::stop ? "stop" : "skip"},
          {"cuda_graph", t.cuda_graph},
          {"deterministic", t.deterministic},
          {"zero1", t.zero1},
          {"bucket_bytes", t.bucket_bytes},
          {"optimizer",
           {{"lr", o.lr},
            {"min_lr", o.min_lr},
            {"warmup_steps", o.warmup_steps},
            {"decay_steps", o.decay_steps},
            {"schedule", lr_schedule_name(o.schedule)},
            {"beta1", o.beta1},
            {"beta2", o.beta2},
            {"eps", o.eps},
            {"weight_decay", o.weight_decay},
            {"grad_clip", o.grad_clip}}}};
}

TrainConfig train_from_json(const nlohmann::json& j) {
  TrainConfig t;
  t.batch = j.at("batch").get<int64_t>();
  t.seq_len = j.at("seq_len").get<int64_t>();
  t.grad_accum = j.at("grad_accum").get<int64_t>();
  t.seed = j.at("seed").get<uint64_t>();
  t.mask_fraction = j.at("mask_fraction").get<double>();
  t.recompute.gelu = j.at("recompute_gelu").get<bool>();
  t.recompute.layernorm = j.at("recompute_layernorm").get<bool>();
  t.on_nonfinite = j.at("on_nonfinite").get<std::string>() == "stop" ? NonFinitePolicy::stop
                                                                     : NonFinitePolicy::skip;
  t.cuda_graph = j.at("cuda_graph").get<bool>();
  // Absent from checkpoints written before data parallelism: the defaults.
  t.zero1 = j.value("zero1", false);
  t.bucket_bytes = j.value("bucket_bytes", TrainConfig{}.bucket_bytes);
  t.deterministic = j.value("deterministic", true);
  const auto& o = j.at("optimizer");
  t.optimizer.lr = o.at("lr").get<double>();
  t.optimizer.min_lr = o.at("min_lr").get<double>();
  t.optimizer.warmup_steps = o.at("warmup_steps").get<int64_t>();
  t.optimizer.decay_steps = o.at("decay_steps").get<int64_t>();
  t.optimizer.schedule = parse_lr_schedule(o.at("schedule").get<std::string>());
  t.optimizer.beta1 = o.at("beta1").get<double>();
  t.optimizer.beta2 = o.at("beta2").get<double>();
  t.optimizer.eps = o.at("eps").get<double>();
  t.optimizer.weight_decay = o.at("weight_decay").get<double>();
  t.optimizer.grad_clip = o.at("grad_clip").get<double>();
  t.optimizer.validate();
  return t;
}

}  // namespace kiln::impl
