#include "kiln/generate.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "errors/check.hpp"
#include "kiln/trainer.hpp"
#include "runtime/rng.hpp"
#include "runtime/training_plan.hpp"

namespace kiln {

void SamplingConfig::validate() const {
  KILN_CHECK_ARG(std::isfinite(temperature) && temperature >= 0,
                 "sampling: temperature must be >= 0 (got ", temperature, ")");
  KILN_CHECK_ARG(top_k >= 0, "sampling: top_k must be >= 0 (got ", top_k, ")");
  KILN_CHECK_ARG(top_p > 0 && top_p <= 1, "sampling: top_p must lie in (0, 1] (got ", top_p, ")");
}

int32_t sample_token(std::span<const float> logits, const SamplingConfig& config, double u) {
  config.validate();
  const std::size_t V = logits.size();
  KILN_CHECK_ARG(V > 0, "sampling: no logits");
  for (std::size_t i = 0; i < V; ++i) {
    KILN_CHECK(!std::isnan(logits[i]) && logits[i] != INFINITY, Status::data_error,
               "sampling: logit ", i, " is ", logits[i], " (the model's output is not finite)");
  }
  if (config.temperature == 0) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  // Candidates by decreasing logit, ties by increasing id (stable sort of ids).
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  std::size_t keep = V;
  if (config.top_k > 0) keep = std::min<std::size_t>(keep, static_cast<std::size_t>(config.top_k));
  const double top = static_cast<double>(logits[order[0]]) / config.temperature;
  std::vector<double> prob(keep);
  double total = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    prob[i] = std::exp(static_cast<double>(logits[order[i]]) / config.temperature - top);
    total += prob[i];
  }
  if (config.top_p < 1) {
    double cumulative = 0;
    std::size_t n = 0;
    while (n < keep) {
      cumulative += prob[n] / total;
      ++n;
      if (cumulative >= config.top_p) break;
    }
    keep = n;
    total = 0;
    for (std::size_t i = 0; i < keep; ++i)
      total += prob[i];
  }
  const double target = std::clamp(u, 0.0, 1.0) * total;
  double cumulative = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    cumulative += prob[i];
    if (target < cumulative) return order[i];
  }
  return order[keep - 1];
}

// ---- Generator --------------------------------------------------------------------------------

struct Generator::State {
  State(const ModelConfig& model, std::shared_ptr<Backend> be, bool own_params)
      : layout(model.resolved()), backend(std::move(be)) {
    KILN_CHECK_ARG(backend != nullptr, "generator: no backend");
    KILN_CHECK_ARG(layout.config().kind == ModelKind::decoder,
                   "generator: generation needs a decoder model, not an ",
                   model_kind_name(layout.config().kind));
    types = backend->types();
    const ModelConfig& m = layout.config();
    workspace = backend->workspace_bytes(m, 1, m.max_seq_len);
    r = impl::build_generation_plan(plan, m, types, own_params, workspace);
    arena = backend->allocate(plan.total_bytes());
    backend->fill_zero(arena, plan.total_bytes());
  }
  ~State() {
    try {
      backend->synchronize();
    } catch (...) {
      // Reported by the call that failed; the memory is released regardless.
    }
    backend->deallocate(arena);
  }

  void* at(std::size_t region) const { return static_cast<char*>(arena) + plan[region].offset; }
  // Null for a kind the model lacks (a bias it has not).
  const void* param(ParamKind kind, int64_t layer = -1) const {
    if (!layout.has(kind)) return nullptr;
    return static_cast<const char*>(params) +
           layout.get(kind, layer).offset * static_cast<int64_t>(dtype_size(types.compute));
  }
  // The row `row` of a (rows, width) region of compute dtype.
  void* row(std::size_t region, int64_t index, int64_t width) const {
    return static_cast<char*>(at(region)) +
           index * width * static_cast<int64_t>(dtype_size(types.compute));
  }

  std::vector<float> run(std::span<const int32_t> tokens);

  ParamLayout layout;
  std::shared_ptr<Backend> backend;
  BackendTypes types;
  MemoryPlan plan;
  impl::GenerationRegions r;
  std::size_t workspace = 0;
  void* arena = nullptr;
  const void* params = nullptr;
  int64_t past = 0;
};

std::vector<float> Generator::State::run(std::span<const int32_t> tokens) {
  const ModelConfig& m = layout.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  KILN_CHECK_ARG(n > 0, "generator: nothing to feed");
  KILN_CHECK_ARG(past + n <= m.max_seq_len, "generator: the context would hold ", past + n,
                 " positions, more than the model's max_seq_len ", m.max_seq_len);
  for (int64_t i = 0; i < n; ++i) {
    KILN_CHECK(tokens[i] >= 0 && tokens[i] < m.vocab_size, Status::data_error,
               "generator: token id ", tokens[i], " at position ", i,
               " is outside the vocabulary [0, ", m.vocab_size, ")");
  }
  Backend& be = *backend;
  if (r.workspace != impl::kNoRegion) {
    be.set_workspace(at(r.workspace), plan[r.workspace].bytes);
  } else {
    be.set_workspace(nullptr, 0);
  }
  const int64_t C = m.n_embd, NH = m.n_head, NKV = m.kv_heads(), HD = m.head_dim(), L = m.n_layer;
  const int64_t W = m.qkv_width(), F = m.mlp_width(), Hm = m.mlp_hidden(), KV = 2 * NKV * HD;
  const double eps = m.layernorm_eps;
  const bool layernorm = m.norm == NormKind::layernorm;
  auto norm = [&](void* y, const void* x, ParamKind w, ParamKind b, int64_t layer) {
    if (layernorm) {
      be.layernorm_fwd(y, at(r.mean), at(r.rstd), x, param(w, layer), param(b, layer), n, C, eps);
    } else {
      be.rmsnorm_fwd(y, at(r.rstd), x, param(w, layer), n, C, eps);
    }
  };
  auto residual_norm = [&](void* res, const void* a, const void* b, ParamKind w, ParamKind bias,
                           int64_t layer) {
    if (layernorm) {
      be.residual_layernorm_fwd(res, at(r.ln), at(r.mean), at(r.rstd), a, b, param(w, layer),
                                param(bias, layer), n, C, eps);
    } else {
      be.residual_rmsnorm_fwd(res, at(r.ln), at(r.rstd), a, b, param(w, layer), n, C, eps);
    }
  };
  be.upload(at(r.tokens), tokens.data(), static_cast<std::size_t>(n) * sizeof(int32_t));
  // Positions past..past+n-1: the position embedding starts at row `past`; rotary positions
  // rotate the new rows' q and k from position `past` instead.
  const void* wpe = m.learned_positions()
                        ? static_cast<const char*>(param(ParamKind::wpe)) +
                              past * C * static_cast<int64_t>(dtype_size(types.compute))
                        : nullptr;
  be.embedding_fwd(at(r.x), static_cast<const int32_t*>(at(r.tokens)), param(ParamKind::wte), wpe,
                   1, n, C, m.vocab_size, m.max_seq_len - past);
  norm(at(r.ln), at(r.x), ParamKind::ln1_w, ParamKind::ln1_b, 0);
  for (int64_t l = 0; l < L; ++l) {
    const std::size_t cache = r.kv_cache[static_cast<std::size_t>(l)];
    be.linear_fwd(at(r.qkv), nullptr, at(r.ln), param(ParamKind::qkv_w, l),
                  param(ParamKind::qkv_b, l), n, C, W);
    if (!m.learned_positions()) be.rope_fwd(at(r.qkv), 1, n, NH, NKV, HD, past, m.rope);
    // The new rows' k and v heads join the cache; their q heads are read where they are.
    be.copy_rows(row(cache, past, KV), KV,
                 static_cast<const char*>(at(r.qkv)) +
                     NH * HD * static_cast<int64_t>(dtype_size(types.compute)),
                 W, n, KV);
    be.attention_cached(at(r.atty), at(r.lse), at(r.qkv), W, at(cache), past, n, NH, NKV, HD);
    be.linear_fwd(at(r.proj_out), nullptr, at(r.atty), param(ParamKind::attproj_w, l),
                  param(ParamKind::attproj_b, l), n, C, C);
    residual_norm(at(r.res), at(r.x), at(r.proj_out), ParamKind::ln2_w, ParamKind::ln2_b, l);
    if (m.mlp == MlpKind::swiglu) {
      be.linear_fwd(at(r.fch), nullptr, at(r.ln), param(ParamKind::fc_w, l),
                    param(ParamKind::fc_b, l), n, C, F);
      be.swiglu_fwd(at(r.fch_gelu), at(r.fch), n, Hm);
    } else {
      be.linear_fwd(at(r.fch_gelu), at(r.fch), at(r.ln), param(ParamKind::fc_w, l),
                    param(ParamKind::fc_b, l), n, C, F);
    }
    be.linear_fwd(at(r.proj_out), nullptr, at(r.fch_gelu), param(ParamKind::fcproj_w, l),
                  param(ParamKind::fcproj_b, l), n, Hm, C);
    const bool last = l + 1 == L;
    residual_norm(at(r.x), at(r.res), at(r.proj_out), last ? ParamKind::lnf_w : ParamKind::ln1_w,
                  last ? ParamKind::lnf_b : ParamKind::ln1_b, last ? -1 : l + 1);
  }
  // Only the last position's logits are needed.
  const ParamKind head = m.tied_embeddings ? ParamKind::wte : ParamKind::lm_head;
  be.linear_fwd(at(r.logits), nullptr, row(r.ln, n - 1, C), param(head), nullptr, 1, C,
                m.padded_vocab);
  std::vector<float> logits(static_cast<std::size_t>(m.vocab_size));
  be.download_f32(logits.data(), at(r.logits), types.compute, m.vocab_size);
  past += n;
  return logits;
}

Generator::Generator(const Trainer& trainer)
    : s_(std::make_unique<State>(trainer.model(), trainer.backend_ptr(), false)) {
  s_->params = trainer.compute_parameters();
}

Generator::Generator(const ModelConfig& model, std::shared_ptr<Backend> backend,
                     std::span<const float> params)
    : s_(std::make_unique<State>(model, std::move(backend), true)) {
  KILN_CHECK_ARG(static_cast<int64_t>(params.size()) == s_->layout.total(), "generator: needs ",
                 s_->layout.total(), " parameters for ", s_->layout.config().describe(), ", got ",
                 params.size());
  void* p = s_->at(s_->r.params);
  s_->backend->upload_f32(p, s_->types.compute, params.data(), s_->layout.total());
  s_->params = p;
}

Generator::~Generator() = default;

const ModelConfig& Generator::model() const {
  return s_->layout.config();
}
const MemoryPlan& Generator::plan() const {
  return s_->plan;
}
Backend& Generator::backend() const {
  return *s_->backend;
}
void Generator::reset() {
  s_->past = 0;
}
int64_t Generator::context_length() const {
  return s_->past;
}

std::vector<float> Generator::feed(std::span<const int32_t> tokens) {
  return s_->run(tokens);
}

std::vector<int32_t> Generator::generate(std::span<const int32_t> prompt, int64_t max_new_tokens,
                                         const SamplingConfig& config,
                                         const std::function<bool(int32_t)>& on_token) {
  config.validate();
  KILN_CHECK_ARG(!prompt.empty(), "generator: the prompt is empty");
  KILN_CHECK_ARG(max_new_tokens >= 0, "generator: max_new_tokens must be >= 0");
  const int64_t max_t = s_->layout.config().max_seq_len;
  std::vector<int32_t> context(prompt.begin(), prompt.end());
  if (static_cast<int64_t>(context.size()) > max_t - 1) {
    context.erase(context.begin(), context.end() - (max_t - 1));
  }
  reset();
  std::vector<float> logits = feed(context);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < max_new_tokens; ++i) {
    const double u = impl::uniform01(impl::hash3(config.seed, 0x5a17, static_cast<uint64_t>(i)));
    const int32_t token = sample_token(logits, config, u);
    out.push_back(token);
    context.push_back(token);
    if (on_token && !on_token(token)) break;
    if (i + 1 == max_new_tokens) break;
    if (context_length() + 1 > max_t) {
      // Full: restart from the most recent half of the context.
      context.erase(context.begin(), context.end() - std::max<int64_t>(1, max_t / 2));
      reset();
      logits = feed(context);
    } else {
      logits = feed(std::span<const int32_t>(&token, 1));
    }
  }
  return out;
}

}  // namespace kiln
