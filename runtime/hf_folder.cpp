// Whole Hugging Face folders for the demos: the folder's own tokenizer with the BOS / EOS choices
// of its tokenizer_config.json, and an export that carries the source folder's tokenizer along.
#include <string>

#include <nlohmann/json.hpp>

#include "errors/check.hpp"
#include "kiln/hf_llama.hpp"
#include "kiln/io.hpp"
#include "runtime/hf_llama_config.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const fs::path& path, const std::string& what) {
  // Appended piece by piece: GCC 12 warns (-Wrestrict, falsely) on the chained operator+.
  std::string message = "'";
  message += path.string();
  message += "': ";
  message += what;
  impl::throw_error(Status::data_error, message, nullptr, nullptr, 0);
}

nlohmann::json read_json(const fs::path& path) {
  try {
    nlohmann::json j = nlohmann::json::parse(read_file(path));
    if (!j.is_object()) fail(path, "is not a JSON object");
    return j;
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("is not JSON: ") + e.what());
  }
}

// A token of tokenizer_config.json: "text", {"content": "text", ...} or null / absent ("").
std::string token_content(const nlohmann::json& j, const char* key, const fs::path& path) {
  if (!j.contains(key) || j[key].is_null()) return "";
  const nlohmann::json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  fail(path, std::string("'") + key + "' must be a string or {\"content\": string} (got " +
                 v.dump() + ")");
}

}  // namespace

std::unique_ptr<HfTokenizer> load_hf_tokenizer(const fs::path& dir, int add_bos) {
  KILN_CHECK_ARG(add_bos >= -1 && add_bos <= 1, "load_hf_tokenizer: add_bos must be -1, 0 or 1");
  if (!fs::exists(dir / "tokenizer.json")) return nullptr;
  HfTokenizerOptions options;
  const fs::path config_path = dir / "tokenizer_config.json";
  if (fs::exists(config_path)) {
    const nlohmann::json j = read_json(config_path);
    if (j.contains("add_bos_token") && !j["add_bos_token"].is_null()) {
      if (!j["add_bos_token"].is_boolean())
        fail(config_path, "'add_bos_token' must be true or false");
      options.add_bos = j["add_bos_token"].get<bool>();
    }
    options.bos = token_content(j, "bos_token", config_path);
    options.eot = token_content(j, "eos_token", config_path);
  }
  if (add_bos >= 0) options.add_bos = add_bos == 1;
  return std::make_unique<HfTokenizer>(dir / "tokenizer.json", options);
}

HfFolder load_hf_folder(const fs::path& dir, int64_t max_seq_len, int add_bos) {
  KILN_CHECK_ARG(max_seq_len >= 0, "load_hf_folder: max_seq_len must be >= 0");
  HfFolder f;
  HfImportOptions options;
  options.max_seq_len = max_seq_len;
  f.model = import_hf_llama(dir, &f.params, options);
  // Rotary positions: the context changes no weight, only what the runtime plans for.
  if (max_seq_len == 0 && f.model.max_seq_len > kHfDefaultContext)
    f.model.max_seq_len = kHfDefaultContext;
  f.tokenizer = load_hf_tokenizer(dir, add_bos);
  return f;
}

void check_hf_llama_export(const ModelConfig& model, const fs::path& dir,
                           const fs::path& source_dir) {
  impl::hf_llama_config_to_json(model, {});
  std::error_code ec;
  KILN_CHECK_ARG(dir.empty() || source_dir.empty() || !fs::equivalent(dir, source_dir, ec),
                 "export: '", dir.string(), "' is the source folder; export into another one");
}

void export_hf_folder(const fs::path& dir, const ModelConfig& model, std::span<const float> params,
                      const fs::path& source_dir, HfExportOptions options) {
  check_hf_llama_export(model, dir, source_dir);
  if (!source_dir.empty()) {
    const fs::path config_path = source_dir / "config.json";
    if (fs::exists(config_path)) {
      const nlohmann::json j = read_json(config_path);
      auto id = [&](const char* key, int64_t* out) {
        if (*out < 0 && j.contains(key) && j[key].is_number_integer() && j[key].get<int64_t>() >= 0)
          *out = j[key].get<int64_t>();
      };
      id("bos_token_id", &options.bos_token_id);
      id("eos_token_id", &options.eos_token_id);
    }
  }
  export_hf_llama(dir, model, params, options);
  if (source_dir.empty()) return;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    if (fs::exists(source_dir / name))
      write_file_atomically(dir / name, read_file(source_dir / name));
  }
}

}  // namespace kiln
