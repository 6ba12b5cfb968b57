#include "runtime/model_json.hpp"

#include "kernels/common/check.hpp"

namespace kiln::impl {

nlohmann::json model_to_json(const ModelConfig& m) {
  const ModelConfig r = m.resolved();
  return {{"n_layer", r.n_layer},
          {"n_head", r.n_head},
          {"n_embd", r.n_embd},
          {"vocab_size", r.vocab_size},
          {"padded_vocab", r.padded_vocab},
          {"max_seq_len", r.max_seq_len},
          {"kind", model_kind_name(r.kind)},
          {"mask_token_id", r.mask_token_id},
          {"layernorm_eps", r.layernorm_eps},
          {"init_std", r.init_std}};
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
