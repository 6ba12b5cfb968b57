#include "kiln/model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <system_error>
#include <thread>

#include "errors/check.hpp"
#include "kiln/limits.hpp"
#include "runtime/rng.hpp"

namespace kiln {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::bf16:
      return 2;
    case DType::f32:
      return 4;
    case DType::f64:
      return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::bf16:
      return "bf16";
    case DType::f32:
      return "f32";
    case DType::f64:
      return "f64";
  }
  return "?";
}

const char* model_kind_name(ModelKind kind) {
  return kind == ModelKind::decoder ? "decoder" : "encoder";
}
const char* norm_kind_name(NormKind kind) {
  return kind == NormKind::layernorm ? "layernorm" : "rmsnorm";
}
const char* position_kind_name(PositionKind kind) {
  return kind == PositionKind::learned ? "learned" : "rotary";
}
const char* mlp_kind_name(MlpKind kind) {
  return kind == MlpKind::gelu ? "gelu" : "swiglu";
}
const char* bias_kind_name(BiasKind kind) {
  switch (kind) {
    case BiasKind::all:
      return "all";
    case BiasKind::qkv:
      return "qkv";
    case BiasKind::none:
      return "none";
  }
  return "?";
}
const char* rope_scaling_name(RopeScaling scaling) {
  return scaling == RopeScaling::none ? "none" : "llama3";
}

ModelConfig ModelConfig::resolved() const {
  ModelConfig c = *this;
  if (c.padded_vocab == 0 && c.vocab_size > 0) c.padded_vocab = (c.vocab_size + 127) / 128 * 128;
  return c;
}

void ModelConfig::validate() const {
  KILN_CHECK_ARG(n_layer > 0, "model: n_layer must be > 0 (got ", n_layer, ")");
  KILN_CHECK_ARG(n_head > 0, "model: n_head must be > 0 (got ", n_head, ")");
  KILN_CHECK_ARG(n_embd > 0, "model: n_embd must be > 0 (got ", n_embd, ")");
  KILN_CHECK_ARG(n_embd % n_head == 0, "model: n_head (", n_head, ") must divide n_embd (", n_embd,
                 ")");
  KILN_CHECK_ARG(n_kv_head >= 0, "model: n_kv_head must be >= 0 (0: n_head) (got ", n_kv_head, ")");
  KILN_CHECK_ARG(n_head % kv_heads() == 0, "model: n_kv_head (", kv_heads(),
                 ") must divide n_head (", n_head, ")");
  KILN_CHECK_ARG(vocab_size > 0, "model: vocab_size must be > 0 (got ", vocab_size, ")");
  KILN_CHECK_ARG(vocab_size <= std::numeric_limits<int32_t>::max(), "model: vocab_size ",
                 vocab_size, " does not fit token ids of 32 bits");
  const int64_t vp = resolved().padded_vocab;
  KILN_CHECK_ARG(vp >= vocab_size, "model: padded_vocab (", vp, ") must be >= vocab_size (",
                 vocab_size, ")");
  KILN_CHECK_ARG(vp <= std::numeric_limits<int32_t>::max(), "model: padded_vocab ", vp,
                 " is too large");
  KILN_CHECK_ARG(max_seq_len > 0, "model: max_seq_len must be > 0 (got ", max_seq_len, ")");
  KILN_CHECK_ARG(layernorm_eps > 0 && std::isfinite(layernorm_eps),
                 "model: layernorm_eps must be > 0 (got ", layernorm_eps, ")");
  KILN_CHECK_ARG(init_std > 0 && std::isfinite(init_std), "model: init_std must be > 0 (got ",
                 init_std, ")");
  if (mlp == MlpKind::swiglu) {
    KILN_CHECK_ARG(intermediate_size > 0,
                   "model: intermediate_size must be > 0 for a SwiGLU MLP (got ", intermediate_size,
                   ")");
  } else {
    KILN_CHECK_ARG(intermediate_size == 0,
                   "model: intermediate_size must be 0 for a GELU MLP (4 n_embd wide) (got ",
                   intermediate_size, ")");
  }
  if (positions == PositionKind::rotary) {
    const int64_t hd = head_dim();
    // The rotary kernels pair element i with i + HD/2 and take head dims up to 256.
    KILN_CHECK_ARG(hd % 2 == 0 && hd <= 256,
                   "model: rotary positions need an even head dim <= 256 ",
                   "(n_embd / n_head = ", hd, ")");
    KILN_CHECK_ARG(std::isfinite(rope.theta) && rope.theta > 1,
                   "model: rope.theta must be > 1 (got ", rope.theta, ")");
    if (rope.scaling == RopeScaling::llama3) {
      KILN_CHECK_ARG(std::isfinite(rope.factor) && rope.factor >= 1,
                     "model: rope.factor must be >= 1 (got ", rope.factor, ")");
      KILN_CHECK_ARG(std::isfinite(rope.low_freq_factor) && rope.low_freq_factor > 0,
                     "model: rope.low_freq_factor must be > 0 (got ", rope.low_freq_factor, ")");
      KILN_CHECK_ARG(
          std::isfinite(rope.high_freq_factor) && rope.high_freq_factor > rope.low_freq_factor,
          "model: rope.high_freq_factor (", rope.high_freq_factor,
          ") must be > rope.low_freq_factor (", rope.low_freq_factor, ")");
      KILN_CHECK_ARG(rope.original_max_position > 0,
                     "model: rope.original_max_position must be > 0 (got ",
                     rope.original_max_position, ")");
    }
  }
  if (kind == ModelKind::encoder) {
    KILN_CHECK_ARG(mask_token_id >= 0 && mask_token_id < vocab_size,
                   "model: an encoder needs mask_token_id in [0, vocab_size = ", vocab_size,
                   ") (got ", mask_token_id, ")");
  }
  check_model_limits(*this);
}

int64_t ModelConfig::num_parameters() const {
  const int64_t C = n_embd, L = n_layer, W = qkv_width(), F = mlp_width(), Hm = mlp_hidden();
  const int64_t norm_params = norm_bias() ? 2 * C : C;
  const int64_t per_layer = 2 * norm_params + W * C + (qkv_bias() ? W : 0) + C * C +
                            (linear_bias() ? C : 0) + F * C + (linear_bias() ? F : 0) + C * Hm +
                            (linear_bias() ? C : 0);
  return vocab_size * C * (tied_embeddings ? 1 : 2) + (learned_positions() ? max_seq_len * C : 0) +
         L * per_layer + norm_params;
}

std::string ModelConfig::describe() const {
  const ModelConfig r = resolved();
  std::ostringstream os;
  os << model_kind_name(kind) << " L=" << n_layer << " H=" << n_head << " C=" << n_embd
     << " V=" << vocab_size;
  if (r.padded_vocab != vocab_size) os << " (padded " << r.padded_vocab << ")";
  os << " maxT=" << max_seq_len;
  if (kind == ModelKind::encoder) os << " mask=" << mask_token_id;
  // GPT-2's parts go unsaid, so that its line reads as it always did.
  if (kv_heads() != n_head) os << " kv=" << kv_heads();
  if (norm != NormKind::layernorm) os << " " << norm_kind_name(norm);
  if (positions == PositionKind::rotary) {
    os << " rope(theta " << rope.theta;
    if (rope.scaling == RopeScaling::llama3) {
      os << ", llama3 x" << rope.factor << " [" << rope.low_freq_factor << ", "
         << rope.high_freq_factor << "] of " << rope.original_max_position;
    }
    os << ")";
  }
  if (mlp == MlpKind::swiglu) os << " swiglu(" << intermediate_size << ")";
  if (bias != BiasKind::all) os << " bias " << bias_kind_name(bias);
  if (!tied_embeddings) os << " untied";
  return os.str();
}

double ModelConfig::flops_per_token(int64_t seq_len) const {
  return 6.0 * static_cast<double>(num_parameters()) + 6.0 * static_cast<double>(n_layer) *
                                                           static_cast<double>(n_embd) *
                                                           static_cast<double>(seq_len);
}

const char* param_kind_name(ParamKind kind) {
  switch (kind) {
    case ParamKind::wte:
      return "wte";
    case ParamKind::wpe:
      return "wpe";
    case ParamKind::ln1_w:
      return "ln1_w";
    case ParamKind::ln1_b:
      return "ln1_b";
    case ParamKind::qkv_w:
      return "qkv_w";
    case ParamKind::qkv_b:
      return "qkv_b";
    case ParamKind::attproj_w:
      return "attproj_w";
    case ParamKind::attproj_b:
      return "attproj_b";
    case ParamKind::ln2_w:
      return "ln2_w";
    case ParamKind::ln2_b:
      return "ln2_b";
    case ParamKind::fc_w:
      return "fc_w";
    case ParamKind::fc_b:
      return "fc_b";
    case ParamKind::fcproj_w:
      return "fcproj_w";
    case ParamKind::fcproj_b:
      return "fcproj_b";
    case ParamKind::lnf_w:
      return "lnf_w";
    case ParamKind::lnf_b:
      return "lnf_b";
    case ParamKind::lm_head:
      return "lm_head";
  }
  return "?";
}

// ---- ParamLayout ------------------------------------------------------------------------------

ParamLayout::ParamLayout(const ModelConfig& config) : config_(config.resolved()) {
  config_.validate();
  const ModelConfig& m = config_;
  const int64_t C = m.n_embd, W = m.qkv_width(), F = m.mlp_width(), Hm = m.mlp_hidden();
  index_.assign(static_cast<std::size_t>((m.n_layer + 1) * kKinds), -1);
  int64_t offset = 0;
  auto add = [&](ParamKind kind, int64_t layer, int64_t rows, int64_t cols, bool decay,
                 std::string name) {
    index_[static_cast<std::size_t>((layer + 1) * kKinds + static_cast<int>(kind))] =
        static_cast<int>(tensors_.size());
    tensors_.push_back({kind, layer, rows, cols, offset, decay, std::move(name)});
    offset += (rows * cols + kAlign - 1) / kAlign * kAlign;
  };
  // Hugging Face's names: GPT-2's for a learned-position model, Llama's (with the fused q/k/v and
  // gate/up projections named for what they hold) for a rotary one.
  const bool llama = m.positions == PositionKind::rotary;
  add(ParamKind::wte, -1, m.padded_vocab, C, true,
      llama ? "model.embed_tokens.weight" : "wte.weight");
  if (m.learned_positions()) add(ParamKind::wpe, -1, m.max_seq_len, C, true, "wpe.weight");
  buckets_.push_back({0, offset, "embeddings"});
  for (int64_t l = 0; l < m.n_layer; ++l) {
    const int64_t begin = offset;
    const std::string h = (llama ? "model.layers." : "h.") + std::to_string(l) + ".";
    const char* ln1 = llama ? "input_layernorm." : "ln_1.";
    const char* ln2 = llama ? "post_attention_layernorm." : "ln_2.";
    const std::string qkv = h + (llama ? "self_attn.qkv_proj." : "attn.c_attn.");
    const std::string proj = h + (llama ? "self_attn.o_proj." : "attn.c_proj.");
    const std::string fc = h + (m.mlp == MlpKind::swiglu ? "mlp.gate_up_proj."
                                : llama                  ? "mlp.up_proj."
                                                         : "mlp.c_fc.");
    const std::string down = h + (llama ? "mlp.down_proj." : "mlp.c_proj.");
    add(ParamKind::ln1_w, l, 1, C, false, h + ln1 + "weight");
    if (m.norm_bias()) add(ParamKind::ln1_b, l, 1, C, false, h + ln1 + "bias");
    add(ParamKind::qkv_w, l, W, C, true, qkv + "weight");
    if (m.qkv_bias()) add(ParamKind::qkv_b, l, 1, W, false, qkv + "bias");
    add(ParamKind::attproj_w, l, C, C, true, proj + "weight");
    if (m.linear_bias()) add(ParamKind::attproj_b, l, 1, C, false, proj + "bias");
    add(ParamKind::ln2_w, l, 1, C, false, h + ln2 + "weight");
    if (m.norm_bias()) add(ParamKind::ln2_b, l, 1, C, false, h + ln2 + "bias");
    add(ParamKind::fc_w, l, F, C, true, fc + "weight");
    if (m.linear_bias()) add(ParamKind::fc_b, l, 1, F, false, fc + "bias");
    add(ParamKind::fcproj_w, l, C, Hm, true, down + "weight");
    if (m.linear_bias()) add(ParamKind::fcproj_b, l, 1, C, false, down + "bias");
    buckets_.push_back({begin, offset, "layer " + std::to_string(l)});
  }
  const int64_t lnf_begin = offset;
  add(ParamKind::lnf_w, -1, 1, C, false, llama ? "model.norm.weight" : "ln_f.weight");
  if (m.norm_bias())
    add(ParamKind::lnf_b, -1, 1, C, false, llama ? "model.norm.bias" : "ln_f.bias");
  // The untied head's gradient is complete before the final norm's: one bucket holds both.
  if (!m.tied_embeddings) add(ParamKind::lm_head, -1, m.padded_vocab, C, true, "lm_head.weight");
  buckets_.push_back({lnf_begin, offset, "final norm"});
  total_ = offset;
  // Backward order: final norm, layers from last to first, embeddings.
  std::vector<Bucket> ordered;
  ordered.push_back(buckets_.back());
  for (int64_t l = m.n_layer; l >= 1; --l)
    ordered.push_back(buckets_[static_cast<std::size_t>(l)]);
  ordered.push_back(buckets_.front());
  buckets_ = std::move(ordered);
}

namespace {
bool global_kind(ParamKind kind) {
  return kind == ParamKind::wte || kind == ParamKind::wpe || kind == ParamKind::lnf_w ||
         kind == ParamKind::lnf_b || kind == ParamKind::lm_head;
}
}  // namespace

bool ParamLayout::has(ParamKind kind) const {
  const int64_t layer = global_kind(kind) ? -1 : 0;
  return index_[static_cast<std::size_t>((layer + 1) * kKinds + static_cast<int>(kind))] >= 0;
}

const ParamTensor& ParamLayout::get(ParamKind kind, int64_t layer) const {
  if (global_kind(kind)) {
    layer = -1;
  } else {
    KILN_CHECK_ARG(layer >= 0 && layer < config_.n_layer, "ParamLayout: layer ", layer,
                   " out of range [0, ", config_.n_layer, ")");
  }
  const int index = index_[static_cast<std::size_t>((layer + 1) * kKinds + static_cast<int>(kind))];
  KILN_CHECK_ARG(index >= 0, "ParamLayout: this model (", config_.describe(), ") has no ",
                 param_kind_name(kind), " tensor");
  return tensors_[static_cast<std::size_t>(index)];
}

const ParamLayout::Bucket& ParamLayout::layer_bucket(int64_t layer) const {
  KILN_CHECK_ARG(layer >= 0 && layer < config_.n_layer, "ParamLayout: layer ", layer,
                 " out of range");
  return buckets_[static_cast<std::size_t>(config_.n_layer - layer)];
}

const ParamLayout::Bucket& ParamLayout::final_norm_bucket() const {
  return buckets_.front();
}

const ParamLayout::Bucket& ParamLayout::embedding_bucket() const {
  return buckets_.back();
}

void init_parameters(const ParamLayout& layout, uint64_t seed, float* params) {
  const ModelConfig& c = layout.config();
  std::fill(params, params + layout.total(), 0.0f);
  const double residual_std = c.init_std / std::sqrt(2.0 * static_cast<double>(c.n_layer));
  // The random tensors as (tensor, std, elements) jobs; each tensor draws its own stream, so
  // adding a layer does not reshuffle the others, and every value is a pure function of (seed,
  // tensor, index): the threads below split the work without changing a bit.
  struct Job {
    float* p;
    uint64_t stream;
    double std;
    int64_t n;
  };
  std::vector<Job> jobs;
  uint64_t stream = 0;
  for (const ParamTensor& t : layout.tensors()) {
    ++stream;
    float* p = params + t.offset;
    switch (t.kind) {
      case ParamKind::ln1_w:
      case ParamKind::ln2_w:
      case ParamKind::lnf_w:  // LayerNorm and RMSNorm weights alike
        std::fill(p, p + t.numel(), 1.0f);
        break;
      case ParamKind::ln1_b:
      case ParamKind::ln2_b:
      case ParamKind::lnf_b:
      case ParamKind::qkv_b:
      case ParamKind::attproj_b:
      case ParamKind::fc_b:
      case ParamKind::fcproj_b:
        break;
      default: {
        const bool residual = t.kind == ParamKind::attproj_w || t.kind == ParamKind::fcproj_w;
        // The padded rows of the embedding and the head stay zero: they produce logits nobody
        // reads.
        const bool vocab_rows = t.kind == ParamKind::wte || t.kind == ParamKind::lm_head;
        const int64_t n = vocab_rows ? c.vocab_size * c.n_embd : t.numel();
        jobs.push_back({p, stream, residual ? residual_std : c.init_std, n});
      }
    }
  }
  int64_t total = 0;
  for (const Job& j : jobs)
    total += (j.n + 1) / 2;  // pairs
  const int threads = static_cast<int>(std::clamp<int64_t>(
      std::min<int64_t>(std::thread::hardware_concurrency(), total / (1 << 16)), 1, 64));
  auto work = [&](int64_t first, int64_t last) {  // pairs [first, last) of the concatenation
    int64_t base = 0;
    for (const Job& j : jobs) {
      const int64_t pairs = (j.n + 1) / 2;
      const int64_t b = std::max(first, base) - base, e = std::min(last, base + pairs) - base;
      for (int64_t q = b; q < e; ++q) {
        double even, odd;
        impl::normal_pair_at(seed, j.stream, static_cast<uint64_t>(q), &even, &odd);
        j.p[2 * q] = static_cast<float>(j.std * even);
        if (2 * q + 1 < j.n) j.p[2 * q + 1] = static_cast<float>(j.std * odd);
      }
      base += pairs;
    }
  };
  std::vector<std::thread> pool;
  int started = 1;
  try {
    for (; started < threads; ++started)
      pool.emplace_back(work, total * started / threads, total * (started + 1) / threads);
  } catch (const std::system_error&) {
    // The system refused a thread: this one also takes the ranges nobody started.
  }
  work(0, total / threads);
  work(total * started / threads, total);
  for (std::thread& t : pool)
    t.join();
}

}  // namespace kiln
