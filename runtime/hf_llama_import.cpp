// Hugging Face Llama / Qwen2 folders into kiln: the config (hf_llama_config.cpp), then the
// weights from model.safetensors or the shards a model.safetensors.index.json names, each tensor
// checked (name, shape, dtype) and copied into its rows of kiln's fused tensors.
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "errors/check.hpp"
#include "kiln/hf_llama.hpp"
#include "kiln/io.hpp"
#include "kiln/safetensors.hpp"
#include "runtime/hf_llama_config.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;

// An index larger than this is not a weight map (Llama 3.1 405B's is 100 KB).
constexpr std::uintmax_t kMaxIndexBytes = std::uintmax_t{64} << 20;

[[noreturn]] void fail(Status status, const fs::path& path, const std::string& what) {
  impl::throw_error(status, "'" + path.string() + "': " + what, nullptr, nullptr, 0);
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

// A shard must be a file beside the index: a name with a separator or a dot-dot could make a
// hostile index read any file the process can.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(std::string("/\\\0", 3)) == std::string::npos;
}

// Buffers HF keeps beside the parameters in some checkpoints; kiln recomputes them.
bool ignored_buffer(const std::string& name) {
  const std::string suffix = "rotary_emb.inv_freq";
  return name.rfind("model.", 0) == 0 && name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Every tensor of the folder, by name, with the file that holds it.
struct Weights {
  std::vector<std::unique_ptr<SafetensorsReader>> files;
  struct Entry {
    const SafetensorsReader* file;
    const SafetensorsTensorInfo* info;
  };
  std::map<std::string, Entry> tensors;
  fs::path where;  // what a missing tensor's message names: the file or the index
};

Weights open_weights(const fs::path& dir) {
  Weights w;
  const fs::path single = dir / "model.safetensors";
  const fs::path index_path = dir / "model.safetensors.index.json";
  // transformers prefers the single file when both are there; so does kiln.
  if (fs::exists(single)) {
    w.where = single;
    w.files.push_back(std::make_unique<SafetensorsReader>(single));
    for (const auto& t : w.files.back()->tensors())
      w.tensors[t.name] = {w.files.back().get(), &t};
    return w;
  }
  if (!fs::exists(index_path)) {
    fail(Status::io_error, dir, "holds neither model.safetensors nor model.safetensors.index.json");
  }
  w.where = index_path;
  std::error_code ec;
  const std::uintmax_t bytes = fs::file_size(index_path, ec);
  if (!ec && bytes > kMaxIndexBytes) {
    fail(Status::data_error, index_path, "is " + std::to_string(bytes) + " bytes, too large");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(index_path));
  } catch (const nlohmann::json::exception& e) {
    fail(Status::data_error, index_path, std::string("is not JSON: ") + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
    fail(Status::data_error, index_path, "has no object 'weight_map'");
  }
  std::map<std::string, std::string> shard_of;
  std::set<std::string> shards;
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string() || !plain_file_name(file.get<std::string>())) {
      fail(Status::data_error, index_path,
           "'weight_map' puts '" + name + "' in " + file.dump() +
               ", which is not a plain file name beside the index");
    }
    shard_of[name] = file.get<std::string>();
    shards.insert(file.get<std::string>());
  }
  for (const std::string& shard : shards) {
    const fs::path path = dir / shard;
    w.files.push_back(std::make_unique<SafetensorsReader>(path));
    for (const auto& t : w.files.back()->tensors()) {
      const auto it = shard_of.find(t.name);
      if (it == shard_of.end() || it->second != shard) {
        fail(Status::data_error, path,
             "holds tensor '" + t.name + "', which the index's 'weight_map' puts " +
                 (it == shard_of.end() ? std::string("nowhere") : "in '" + it->second + "'"));
      }
      w.tensors[t.name] = {w.files.back().get(), &t};
    }
  }
  for (const auto& [name, shard] : shard_of) {
    if (!w.tensors.count(name)) {
      fail(Status::data_error, index_path,
           "'weight_map' puts '" + name + "' in '" + shard + "', which does not hold it");
    }
  }
  return w;
}

class Loader {
 public:
  Loader(const Weights& w, const ModelConfig& m, std::vector<float>* params)
      : w_(w), m_(m), layout_(m), params_(params) {}

  // Copies tensor `name` (of `shape`) into `dst`; numel(shape) floats.
  void take(const std::string& name, const std::vector<int64_t>& shape, float* dst) {
    const Weights::Entry& e = find(name);
    const SafetensorsTensorInfo& info = *e.info;
    if (info.shape != shape) {
      fail(Status::data_error, e.file->path(),
           "tensor '" + name + "' has shape " + shape_string(info.shape) + ", expected " +
               shape_string(shape));
    }
    if (info.dtype != SafeDtype::F32 && info.dtype != SafeDtype::F16 &&
        info.dtype != SafeDtype::BF16 && info.dtype != SafeDtype::F64) {
      fail(Status::data_error, e.file->path(),
           "tensor '" + name + "' has dtype " + std::string(safe_dtype_name(info.dtype)) +
               "; weights must be F32, F16, BF16 or F64");
    }
    e.file->read_float(name, {dst, static_cast<std::size_t>(info.numel())});
    used_.insert(name);
  }

  // Into rows [row, row + rows) of kiln's tensor `kind` of `layer`.
  void take_rows(const std::string& name, ParamKind kind, int64_t layer, int64_t row,
                 int64_t rows) {
    const ParamTensor& t = layout_.get(kind, layer);
    const bool vector = t.rows == 1;
    take(name, vector ? std::vector<int64_t>{rows} : std::vector<int64_t>{rows, t.cols},
         params_->data() + t.offset + row * (vector ? 1 : t.cols));
  }

  void load() {
    const int64_t C = m_.n_embd;
    params_->assign(static_cast<std::size_t>(layout_.total()), 0.0f);
    for (const auto& t : impl::hf_llama_tensors(m_))
      take_rows(t.name, t.kind, t.layer, t.row, t.rows);
    const bool has_head = w_.tensors.count("lm_head.weight") > 0;
    if (!m_.tied_embeddings) {
      if (!has_head) {
        fail(Status::data_error, w_.where,
             "has no tensor 'lm_head.weight' (config.json: tie_word_embeddings false)");
      }
      take_rows("lm_head.weight", ParamKind::lm_head, -1, 0, m_.vocab_size);
    } else if (has_head) {
      // A tied config with its own head: acceptable only when the head is the embedding
      // (some exports write both); a different one would be silently dropped.
      const ParamTensor& wte = layout_.get(ParamKind::wte);
      std::vector<float> head(static_cast<std::size_t>(m_.vocab_size * C));
      take("lm_head.weight", {m_.vocab_size, C}, head.data());
      if (std::memcmp(head.data(), params_->data() + wte.offset, head.size() * sizeof(float))) {
        fail(Status::not_supported, find("lm_head.weight").file->path(),
             "tensor 'lm_head.weight' differs from 'model.embed_tokens.weight' but config.json "
             "says tie_word_embeddings true");
      }
    }
    for (const auto& [name, e] : w_.tensors) {
      if (!used_.count(name) && !ignored_buffer(name)) {
        fail(Status::data_error, e.file->path(),
             "unexpected tensor '" + name + "' (not part of " + m_.describe() + ")");
      }
    }
  }

 private:
  const Weights::Entry& find(const std::string& name) const {
    const auto it = w_.tensors.find(name);
    if (it == w_.tensors.end()) fail(Status::data_error, w_.where, "has no tensor '" + name + "'");
    return it->second;
  }

  const Weights& w_;
  const ModelConfig& m_;
  ParamLayout layout_;
  std::vector<float>* params_;
  std::set<std::string> used_;
};

}  // namespace

ModelConfig import_hf_llama(const fs::path& dir, std::vector<float>* params,
                            const HfImportOptions& options) {
  KILN_CHECK_ARG(params != nullptr, "import_hf_llama: params is null");
  KILN_CHECK_ARG(options.max_seq_len >= 0, "import_hf_llama: max_seq_len must be >= 0 (got ",
                 options.max_seq_len, ")");
  const fs::path config_path = dir / "config.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(config_path));
  } catch (const nlohmann::json::exception& e) {
    fail(Status::data_error, config_path, std::string("is not JSON: ") + e.what());
  }
  ModelConfig model;
  try {
    model = impl::hf_llama_config_from_json(j, config_path, options);
  } catch (const nlohmann::json::exception& e) {
    // A key of the wrong type that a typed read above did not catch.
    fail(Status::data_error, config_path, e.what());
  }
  const Weights weights = open_weights(dir);
  Loader(weights, model, params).load();
  return model;
}

}  // namespace kiln
