// kiln's Llama-family model out as a Hugging Face folder: the fused q/k/v and gate/up tensors
// split back into HF's projections (row ranges of kiln's buffer, so nothing is copied before the
// writer converts), one model.safetensors or shards with their index, config.json and
// generation_config.json.
#include <cstdio>
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

// HF's tensors in HF's order (embedding, layers, norm, head), each a row range of kiln's.
std::vector<SafetensorsEntry> hf_entries(const ModelConfig& m, const ParamLayout& layout,
                                         std::span<const float> params, SafeDtype dtype) {
  std::vector<SafetensorsEntry> out;
  auto rows = [&](std::string name, ParamKind kind, int64_t layer, int64_t row, int64_t n) {
    const ParamTensor& t = layout.get(kind, layer);
    const bool vector = t.rows == 1;
    const int64_t width = vector ? 1 : t.cols;
    SafetensorsEntry e;
    e.name = std::move(name);
    e.dtype = dtype;
    e.shape = vector ? std::vector<int64_t>{n} : std::vector<int64_t>{n, t.cols};
    e.data = params.subspan(static_cast<std::size_t>(t.offset + row * width),
                            static_cast<std::size_t>(n * width));
    out.push_back(std::move(e));
  };
  for (auto& t : impl::hf_llama_tensors(m))
    rows(std::move(t.name), t.kind, t.layer, t.row, t.rows);
  if (!m.tied_embeddings) rows("lm_head.weight", ParamKind::lm_head, -1, 0, m.vocab_size);
  return out;
}

int64_t entry_bytes(const SafetensorsEntry& e) {
  return static_cast<int64_t>(e.data.size() * safe_dtype_size(e.dtype));
}

std::string shard_name(std::size_t k, std::size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k, n);
  return buf;
}

}  // namespace

void export_hf_llama(const fs::path& dir, const ModelConfig& config, std::span<const float> params,
                     const HfExportOptions& options) {
  // Everything is checked before the first byte is written.
  const nlohmann::json config_json = impl::hf_llama_config_to_json(config, options);
  const ModelConfig m = config.resolved();
  KILN_CHECK_ARG(options.dtype == SafeDtype::F32 || options.dtype == SafeDtype::BF16 ||
                     options.dtype == SafeDtype::F16,
                 "export_hf_llama: dtype must be F32, BF16 or F16 (got ",
                 safe_dtype_name(options.dtype), ")");
  KILN_CHECK_ARG(options.max_shard_bytes >= 0, "export_hf_llama: max_shard_bytes must be >= 0");
  const ParamLayout layout(m);
  KILN_CHECK_ARG(static_cast<int64_t>(params.size()) == layout.total(), "export_hf_llama: needs ",
                 layout.total(), " parameters, got ", params.size());
  const std::vector<SafetensorsEntry> entries = hf_entries(m, layout, params, options.dtype);

  // Shards: consecutive tensors, a new shard when the next tensor would pass the limit (a tensor
  // larger than the limit gets a shard of its own, as transformers does).
  std::vector<std::vector<SafetensorsEntry>> shards(1);
  int64_t in_shard = 0, total = 0;
  for (const SafetensorsEntry& e : entries) {
    const int64_t b = entry_bytes(e);
    if (options.max_shard_bytes > 0 && !shards.back().empty() &&
        in_shard + b > options.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(e);
    in_shard += b;
    total += b;
  }
  KILN_CHECK_ARG(shards.size() == 1 || !fs::exists(dir / "model.safetensors"), "export_hf_llama: '",
                 (dir / "model.safetensors").string(),
                 "' exists; loaders would read it instead of the shards (remove it or export "
                 "into an empty folder)");

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    impl::throw_error(Status::io_error,
                      "export_hf_llama: cannot create '" + dir.string() + "': " + ec.message(),
                      nullptr, nullptr, 0);
  }
  // safetensors' loader in transformers wants the "pt" format tag.
  const std::map<std::string, std::string> metadata{{"format", "pt"}};
  if (shards.size() == 1) {
    write_safetensors(dir / "model.safetensors", shards[0], metadata);
  } else {
    nlohmann::json weight_map = nlohmann::json::object();
    for (std::size_t k = 0; k < shards.size(); ++k) {
      const std::string name = shard_name(k + 1, shards.size());
      write_safetensors(dir / name, shards[k], metadata);
      for (const SafetensorsEntry& e : shards[k])
        weight_map[e.name] = name;
    }
    const nlohmann::json index = {{"metadata", {{"total_size", total}}},
                                  {"weight_map", weight_map}};
    write_file_atomically(dir / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  write_file_atomically(dir / "config.json", config_json.dump(2) + "\n");
  write_file_atomically(dir / "generation_config.json",
                        impl::hf_generation_config_json(options).dump(2) + "\n");
}

}  // namespace kiln
