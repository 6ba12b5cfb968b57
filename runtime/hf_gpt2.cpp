#include "kiln/hf_gpt2.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <regex>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "errors/check.hpp"
#include "kiln/io.hpp"
#include "kiln/limits.hpp"
#include "kiln/safetensors.hpp"
#include "runtime/json_strict.hpp"

namespace kiln {
namespace {

[[noreturn]] void fail(Status status, const std::filesystem::path& path, const std::string& what) {
  impl::throw_error(status, "'" + path.string() + "': " + what, nullptr, nullptr, 0);
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

// Conv1D: the tensor is stored (in, out) = (cols, rows) of kiln's (rows, cols).
bool is_conv1d(ParamKind k) {
  return k == ParamKind::qkv_w || k == ParamKind::attproj_w || k == ParamKind::fc_w ||
         k == ParamKind::fcproj_w;
}

}  // namespace

ModelConfig import_hf_gpt2(const std::filesystem::path& path, int64_t n_head,
                           std::vector<float>* params) {
  KILN_CHECK_ARG(params != nullptr, "import_hf_gpt2: params is null");
  const SafetensorsReader file(path);
  // Names without the GPT2LMHeadModel prefix; parameter-free buffers and the tied head dropped.
  std::map<std::string, const SafetensorsTensorInfo*> by_name;
  std::string prefix;
  for (const auto& t : file.tensors()) {
    if (t.name.rfind("transformer.", 0) == 0) prefix = "transformer.";
  }
  static const std::regex buffer(R"(h\.\d+\.attn\.(bias|masked_bias))");
  const SafetensorsTensorInfo* lm_head = nullptr;
  for (const auto& t : file.tensors()) {
    if (t.name == "lm_head.weight") {
      lm_head = &t;
      continue;
    }
    std::string name = t.name;
    if (!prefix.empty()) {
      if (name.rfind(prefix, 0) != 0) {
        fail(Status::data_error, path,
             "unexpected tensor '" + t.name + "' beside '" + prefix + "*'");
      }
      name = name.substr(prefix.size());
    }
    if (std::regex_match(name, buffer)) continue;
    by_name[name] = &t;
  }
  auto need = [&](const std::string& name) -> const SafetensorsTensorInfo& {
    const auto it = by_name.find(name);
    if (it == by_name.end()) {
      fail(Status::data_error, path, "has no tensor '" + prefix + name + "' (not a GPT-2 model?)");
    }
    return *it->second;
  };
  const auto& wte = need("wte.weight");
  const auto& wpe = need("wpe.weight");
  if (wte.shape.size() != 2 || wpe.shape.size() != 2 || wte.shape[1] != wpe.shape[1]) {
    fail(Status::data_error, path,
         "wte.weight " + shape_string(wte.shape) + " and wpe.weight " + shape_string(wpe.shape) +
             " are not (V, C) and (maxT, C)");
  }
  ModelConfig model;
  // An lm_head.weight is the tied head only when it holds the embedding's values; another head
  // is a model of its own (untied), never silently replaced by the embedding.
  if (lm_head) {
    if (lm_head->shape != wte.shape) {
      fail(Status::data_error, path,
           "lm_head.weight " + shape_string(lm_head->shape) + " is not shaped as wte.weight " +
               shape_string(wte.shape));
    }
    const std::vector<float> head = file.read_float(lm_head->name);
    const std::vector<float> embedding = file.read_float(wte.name);
    model.tied_embeddings =
        std::memcmp(head.data(), embedding.data(), head.size() * sizeof(float)) == 0;
  }
  model.vocab_size = wte.shape[0];
  model.n_embd = wte.shape[1];
  model.max_seq_len = wpe.shape[0];
  while (by_name.count("h." + std::to_string(model.n_layer) + ".ln_1.weight"))
    ++model.n_layer;
  model.n_head = n_head;
  const std::filesystem::path config_path = path.parent_path() / "config.json";
  if (std::filesystem::exists(config_path)) {
    try {
      const auto j = nlohmann::json::parse(read_file(config_path));
      model.n_head = impl::json_int(j, "n_head", 1, limits::kMaxHeads);
      if (j.contains("layer_norm_epsilon")) {
        model.layernorm_eps = impl::json_double(j, "layer_norm_epsilon");
      }
      if (j.contains("n_layer") && impl::json_int(j, "n_layer") != model.n_layer) {
        fail(Status::data_error, config_path,
             "says n_layer " + std::to_string(impl::json_int(j, "n_layer")) + " but '" +
                 path.string() + "' holds " + std::to_string(model.n_layer) + " layers");
      }
    } catch (const Error& e) {
      if (e.status() == Status::data_error) throw;
      fail(Status::data_error, config_path, "is not a GPT-2 config: " + e.message());
    } catch (const nlohmann::json::exception& e) {
      fail(Status::data_error, config_path, std::string("is not a GPT-2 config: ") + e.what());
    }
  }
  KILN_CHECK_ARG(model.n_head > 0, "'", path.string(),
                 "': the head count is not stored in the weights; put Hugging Face's config.json "
                 "beside the file or pass the head count");
  try {
    model.validate();
  } catch (const Error& e) {
    fail(Status::invalid_argument, path, e.message());
  }
  model = model.resolved();

  const ParamLayout layout(model);
  params->assign(static_cast<std::size_t>(layout.total()), 0.0f);
  std::set<std::string> used;
  std::vector<float> buf;
  for (const ParamTensor& t : layout.tensors()) {
    const auto& info = t.kind == ParamKind::lm_head ? *lm_head : need(t.name);
    used.insert(t.name);
    const bool conv = is_conv1d(t.kind);
    const int64_t rows =
        t.kind == ParamKind::wte || t.kind == ParamKind::lm_head ? model.vocab_size : t.rows;
    const std::vector<int64_t> expect = t.rows == 1 ? std::vector<int64_t>{t.cols}
                                                    : (conv ? std::vector<int64_t>{t.cols, rows}
                                                            : std::vector<int64_t>{rows, t.cols});
    if (info.shape != expect) {
      fail(Status::data_error, path,
           "tensor '" + info.name + "' has shape " + shape_string(info.shape) + ", expected " +
               shape_string(expect));
    }
    if (info.dtype != SafeDtype::F32 && info.dtype != SafeDtype::F16 &&
        info.dtype != SafeDtype::BF16 && info.dtype != SafeDtype::F64) {
      fail(Status::data_error, path,
           "tensor '" + info.name + "' has dtype " + std::string(safe_dtype_name(info.dtype)) +
               "; weights must be F32, F16, BF16 or F64");
    }
    buf.resize(static_cast<std::size_t>(info.numel()));
    file.read_float(info.name, buf);
    float* dst = params->data() + t.offset;
    if (conv) {
      // (in = cols, out = rows) -> (rows, cols).
      for (int64_t i = 0; i < t.cols; ++i) {
        for (int64_t o = 0; o < rows; ++o)
          dst[o * t.cols + i] = buf[static_cast<std::size_t>(i * rows + o)];
      }
    } else {
      std::copy(buf.begin(), buf.end(), dst);
    }
  }
  for (const auto& [name, info] : by_name) {
    if (!used.count(name)) fail(Status::data_error, path, "unexpected tensor '" + info->name + "'");
  }
  return model;
}

void export_hf_gpt2(const std::filesystem::path& path, const ModelConfig& config,
                    std::span<const float> params, bool write_config) {
  const ModelConfig model = config.resolved();
  model.validate();
  KILN_CHECK_ARG(model.kind == ModelKind::decoder,
                 "export_hf_gpt2: only decoders are GPT-2 models (got an encoder)");
  // GPT-2's file has no place for other parts (Llama's export is the Hugging Face issue's).
  const ModelConfig gpt2_parts = [&] {
    ModelConfig g;
    g.n_layer = model.n_layer;
    g.n_head = model.n_head;
    g.n_embd = model.n_embd;
    g.vocab_size = model.vocab_size;
    g.padded_vocab = model.padded_vocab;
    g.max_seq_len = model.max_seq_len;
    g.layernorm_eps = model.layernorm_eps;
    g.init_std = model.init_std;
    g.tied_embeddings = model.tied_embeddings;
    return g.resolved();
  }();
  KILN_CHECK_ARG(model == gpt2_parts, "export_hf_gpt2: only GPT-2's parts have GPT-2's file (got ",
                 model.describe(), ")");
  const ParamLayout layout(model);
  KILN_CHECK_ARG(static_cast<int64_t>(params.size()) == layout.total(), "export_hf_gpt2: needs ",
                 layout.total(), " parameters, got ", params.size());
  std::vector<std::vector<float>> transposed;
  transposed.reserve(layout.tensors().size());
  std::vector<SafetensorsEntry> entries;
  for (const ParamTensor& t : layout.tensors()) {
    const float* src = params.data() + t.offset;
    SafetensorsEntry e;
    e.name = t.name;
    e.dtype = SafeDtype::F32;
    if (t.kind == ParamKind::wte || t.kind == ParamKind::lm_head) {
      // The real rows only: padding is kiln's business.
      e.shape = {model.vocab_size, t.cols};
      e.data = {src, static_cast<std::size_t>(model.vocab_size * t.cols)};
    } else if (is_conv1d(t.kind)) {
      std::vector<float>& out = transposed.emplace_back(static_cast<std::size_t>(t.numel()));
      for (int64_t o = 0; o < t.rows; ++o) {
        for (int64_t i = 0; i < t.cols; ++i)
          out[static_cast<std::size_t>(i * t.rows + o)] = src[o * t.cols + i];
      }
      e.shape = {t.cols, t.rows};
      e.data = out;
    } else {
      e.shape = t.rows == 1 ? std::vector<int64_t>{t.cols} : std::vector<int64_t>{t.rows, t.cols};
      e.data = {src, static_cast<std::size_t>(t.numel())};
    }
    entries.push_back(std::move(e));
  }
  write_safetensors(path, entries, {{"format", "pt"}});
  if (write_config) {
    const nlohmann::json j{{"architectures", {"GPT2LMHeadModel"}},
                           {"model_type", "gpt2"},
                           {"activation_function", "gelu_new"},
                           {"n_layer", model.n_layer},
                           {"n_head", model.n_head},
                           {"n_embd", model.n_embd},
                           {"n_positions", model.max_seq_len},
                           {"n_ctx", model.max_seq_len},
                           {"vocab_size", model.vocab_size},
                           {"layer_norm_epsilon", model.layernorm_eps},
                           {"initializer_range", model.init_std},
                           {"tie_word_embeddings", model.tied_embeddings}};
    write_file_atomically(path.parent_path() / "config.json", j.dump(2) + "\n");
  }
}

}  // namespace kiln
