#include "runtime/model_json.hpp"

#include "errors/check.hpp"
#include "runtime/json_strict.hpp"

namespace kiln::impl {

namespace {

// The value of `names` (the enum's values in order) that `value` names; `what` and `prefix`
// make the message of an unknown one, which lists the known ones.
template <typename E, std::size_t N>
E enum_from_name(std::string_view value, const char* what, const char* const (&names)[N],
                 const char* prefix = "") {
  for (std::size_t i = 0; i < N; ++i) {
    if (value == names[i]) return static_cast<E>(i);
  }
  std::string known;
  for (const char* n : names)
    known += std::string(known.empty() ? "" : ", ") + n;
  KILN_CHECK_ARG(false, prefix, "unknown ", what, " '", value, "' (known: ", known, ")");
  return E{};
}

// A key naming one of `names`, or `fallback` when absent.
template <typename E, std::size_t N>
E enum_from_json(const nlohmann::json& j, const char* key, const char* const (&names)[N],
                 E fallback) {
  if (!j.contains(key)) return fallback;
  return enum_from_name<E>(j.at(key).get<std::string>(), key, names, "model: ");
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
  m.n_layer = json_int(j, "n_layer");
  m.n_head = json_int(j, "n_head");
  m.n_embd = json_int(j, "n_embd");
  m.vocab_size = json_int(j, "vocab_size");
  m.padded_vocab = json_int(j, "padded_vocab");
  m.max_seq_len = json_int(j, "max_seq_len");
  const std::string kind = j.at("kind").get<std::string>();
  KILN_CHECK_ARG(kind == "decoder" || kind == "encoder", "unknown model kind '", kind, "'");
  m.kind = kind == "decoder" ? ModelKind::decoder : ModelKind::encoder;
  m.mask_token_id = static_cast<int32_t>(json_int(j, "mask_token_id", -1, INT32_MAX));
  m.layernorm_eps = json_double(j, "layernorm_eps");
  m.init_std = json_double(j, "init_std");
  // The parts, absent from descriptions written before them: GPT-2's.
  m.norm = enum_from_json(j, "norm", kNorms, NormKind::layernorm);
  m.positions = enum_from_json(j, "positions", kPositions, PositionKind::learned);
  m.mlp = enum_from_json(j, "mlp", kMlps, MlpKind::gelu);
  m.bias = enum_from_json(j, "bias", kBiases, BiasKind::all);
  m.n_kv_head = j.contains("n_kv_head") ? json_int(j, "n_kv_head", 0) : 0;
  m.intermediate_size = j.contains("intermediate_size") ? json_int(j, "intermediate_size", 0) : 0;
  m.tied_embeddings = j.contains("tied_embeddings") ? json_bool(j, "tied_embeddings") : true;
  if (j.contains("rope")) {
    const auto& r = j.at("rope");
    const RopeConfig d;
    auto number = [&](const char* key, double fallback) {
      return r.contains(key) ? json_double(r, key) : fallback;
    };
    m.rope.theta = number("theta", d.theta);
    m.rope.scaling = enum_from_json(r, "scaling", kScalings, RopeScaling::none);
    m.rope.factor = number("factor", d.factor);
    m.rope.low_freq_factor = number("low_freq_factor", d.low_freq_factor);
    m.rope.high_freq_factor = number("high_freq_factor", d.high_freq_factor);
    m.rope.original_max_position = r.contains("original_max_position")
                                       ? json_int(r, "original_max_position", 1)
                                       : d.original_max_position;
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
  t.batch = json_int(j, "batch");
  t.seq_len = json_int(j, "seq_len");
  t.grad_accum = json_int(j, "grad_accum");
  t.seed = json_uint64(j, "seed");
  t.mask_fraction = json_double(j, "mask_fraction");
  t.recompute.gelu = json_bool(j, "recompute_gelu");
  t.recompute.layernorm = json_bool(j, "recompute_layernorm");
  const std::string policy = j.at("on_nonfinite").get<std::string>();
  KILN_CHECK_ARG(policy == "stop" || policy == "skip", "unknown on_nonfinite '", policy, "'");
  t.on_nonfinite = policy == "stop" ? NonFinitePolicy::stop : NonFinitePolicy::skip;
  t.cuda_graph = json_bool(j, "cuda_graph");
  // Absent from checkpoints written before data parallelism: the defaults.
  t.zero1 = j.contains("zero1") ? json_bool(j, "zero1") : false;
  t.bucket_bytes =
      j.contains("bucket_bytes") ? json_int(j, "bucket_bytes", 0) : TrainConfig{}.bucket_bytes;
  t.deterministic = j.contains("deterministic") ? json_bool(j, "deterministic") : true;
  const auto& o = j.at("optimizer");
  t.optimizer.lr = json_double(o, "lr");
  t.optimizer.min_lr = json_double(o, "min_lr");
  t.optimizer.warmup_steps = json_int(o, "warmup_steps", 0);
  t.optimizer.decay_steps = json_int(o, "decay_steps", 0);
  t.optimizer.schedule = parse_lr_schedule(o.at("schedule").get<std::string>());
  t.optimizer.beta1 = json_double(o, "beta1");
  t.optimizer.beta2 = json_double(o, "beta2");
  t.optimizer.eps = json_double(o, "eps");
  t.optimizer.weight_decay = json_double(o, "weight_decay");
  t.optimizer.grad_clip = json_double(o, "grad_clip");
  t.optimizer.validate();
  return t;
}

}  // namespace kiln::impl

namespace kiln {

NormKind parse_norm_kind(std::string_view name) {
  return impl::enum_from_name<NormKind>(name, "norm", impl::kNorms);
}
PositionKind parse_position_kind(std::string_view name) {
  return impl::enum_from_name<PositionKind>(name, "positions", impl::kPositions);
}
MlpKind parse_mlp_kind(std::string_view name) {
  return impl::enum_from_name<MlpKind>(name, "mlp", impl::kMlps);
}
BiasKind parse_bias_kind(std::string_view name) {
  return impl::enum_from_name<BiasKind>(name, "bias", impl::kBiases);
}
RopeScaling parse_rope_scaling(std::string_view name) {
  return impl::enum_from_name<RopeScaling>(name, "rope scaling", impl::kScalings);
}

}  // namespace kiln
