#include "kiln/model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <system_error>
#include <thread>

#include "kernels/common/check.hpp"
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
  if (kind == ModelKind::encoder) {
    KILN_CHECK_ARG(mask_token_id >= 0 && mask_token_id < vocab_size,
                   "model: an encoder needs mask_token_id in [0, vocab_size = ", vocab_size,
                   ") (got ", mask_token_id, ")");
  }
  check_model_limits(*this);
}

int64_t ModelConfig::num_parameters() const {
  const int64_t C = n_embd, L = n_layer;
  const int64_t per_layer =
      2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) + (4 * C * C + C);
  return vocab_size * C + max_seq_len * C + L * per_layer + 2 * C;
}

std::string ModelConfig::describe() const {
  const ModelConfig r = resolved();
  std::ostringstream os;
  os << model_kind_name(kind) << " L=" << n_layer << " H=" << n_head << " C=" << n_embd
     << " V=" << vocab_size;
  if (r.padded_vocab != vocab_size) os << " (padded " << r.padded_vocab << ")";
  os << " maxT=" << max_seq_len;
  if (kind == ModelKind::encoder) os << " mask=" << mask_token_id;
  return os.str();
}

double ModelConfig::flops_per_token(int64_t seq_len) const {
  return 6.0 * static_cast<double>(num_parameters()) + 6.0 * static_cast<double>(n_layer) *
                                                           static_cast<double>(n_embd) *
                                                           static_cast<double>(seq_len);
}

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
  std::string known;
  for (const Preset& p : kPresets)
    known += std::string(known.empty() ? "" : ", ") + p.name;
  KILN_CHECK_ARG(false, "model: unknown preset '", name, "' (known: ", known, ")");
  return {};
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets)
    names.emplace_back(p.name);
  return names;
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
  }
  return "?";
}

// ---- ParamLayout ------------------------------------------------------------------------------

ParamLayout::ParamLayout(const ModelConfig& config) : config_(config.resolved()) {
  config_.validate();
  const int64_t C = config_.n_embd;
  int64_t offset = 0;
  auto add = [&](ParamKind kind, int64_t layer, int64_t rows, int64_t cols, bool decay,
                 std::string name) {
    tensors_.push_back({kind, layer, rows, cols, offset, decay, std::move(name)});
    offset += (rows * cols + kAlign - 1) / kAlign * kAlign;
  };
  add(ParamKind::wte, -1, config_.padded_vocab, C, true, "wte.weight");
  add(ParamKind::wpe, -1, config_.max_seq_len, C, true, "wpe.weight");
  buckets_.push_back({0, offset, "embeddings"});
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const int64_t begin = offset;
    const std::string h = "h." + std::to_string(l) + ".";
    add(ParamKind::ln1_w, l, 1, C, false, h + "ln_1.weight");
    add(ParamKind::ln1_b, l, 1, C, false, h + "ln_1.bias");
    add(ParamKind::qkv_w, l, 3 * C, C, true, h + "attn.c_attn.weight");
    add(ParamKind::qkv_b, l, 1, 3 * C, false, h + "attn.c_attn.bias");
    add(ParamKind::attproj_w, l, C, C, true, h + "attn.c_proj.weight");
    add(ParamKind::attproj_b, l, 1, C, false, h + "attn.c_proj.bias");
    add(ParamKind::ln2_w, l, 1, C, false, h + "ln_2.weight");
    add(ParamKind::ln2_b, l, 1, C, false, h + "ln_2.bias");
    add(ParamKind::fc_w, l, 4 * C, C, true, h + "mlp.c_fc.weight");
    add(ParamKind::fc_b, l, 1, 4 * C, false, h + "mlp.c_fc.bias");
    add(ParamKind::fcproj_w, l, C, 4 * C, true, h + "mlp.c_proj.weight");
    add(ParamKind::fcproj_b, l, 1, C, false, h + "mlp.c_proj.bias");
    buckets_.push_back({begin, offset, "layer " + std::to_string(l)});
  }
  const int64_t lnf_begin = offset;
  add(ParamKind::lnf_w, -1, 1, C, false, "ln_f.weight");
  add(ParamKind::lnf_b, -1, 1, C, false, "ln_f.bias");
  buckets_.push_back({lnf_begin, offset, "final norm"});
  total_ = offset;
  per_layer_ = 12;
  // Backward order: final norm, layers from last to first, embeddings.
  std::vector<Bucket> ordered;
  ordered.push_back(buckets_.back());
  for (int64_t l = config_.n_layer; l >= 1; --l)
    ordered.push_back(buckets_[l]);
  ordered.push_back(buckets_.front());
  buckets_ = std::move(ordered);
}

const ParamTensor& ParamLayout::get(ParamKind kind, int64_t layer) const {
  switch (kind) {
    case ParamKind::wte:
      return tensors_[0];
    case ParamKind::wpe:
      return tensors_[1];
    case ParamKind::lnf_w:
      return tensors_[tensors_.size() - 2];
    case ParamKind::lnf_b:
      return tensors_.back();
    default:
      break;
  }
  KILN_CHECK_ARG(layer >= 0 && layer < config_.n_layer, "ParamLayout: layer ", layer,
                 " out of range [0, ", config_.n_layer, ")");
  const int64_t index = 2 + layer * per_layer_ +
                        (static_cast<int64_t>(kind) - static_cast<int64_t>(ParamKind::ln1_w));
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
      case ParamKind::lnf_w:
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
        // The padded rows of the tied embedding stay zero: they produce logits nobody reads.
        const int64_t n = t.kind == ParamKind::wte ? c.vocab_size * c.n_embd : t.numel();
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
