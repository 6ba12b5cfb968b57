// A Hugging Face Llama / Qwen2 config.json (kiln/hf_llama.hpp). A config read without an error
// must describe a valid model within kiln's limits, and survive the trip through the exporter's
// config.json unchanged.
#include <nlohmann/json.hpp>

#include "kiln/limits.hpp"
#include "runtime/hf_llama_config.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  kiln::ModelConfig model;
  try {
    model = kiln::impl::hf_llama_config_from_json(j, "config.json");
  } catch (const kiln::Error&) {
    return 0;
  } catch (const nlohmann::json::exception&) {
    return 0;
  }
  if (model.num_parameters() <= 0 || model.num_parameters() > kiln::limits::kMaxParameters) {
    __builtin_trap();
  }
  model.validate();
  const nlohmann::json out = kiln::impl::hf_llama_config_to_json(model, {});
  kiln::ModelConfig again = kiln::impl::hf_llama_config_from_json(out, "again.json");
  // The exporter writes the rope factors only for llama3 scaling; the rest is the same model.
  if (model.rope.scaling == kiln::RopeScaling::none) again.rope = model.rope;
  if (!(again == model)) __builtin_trap();
  return 0;
}
