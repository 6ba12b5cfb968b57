// The model and training configs as JSON (checkpoint metadata): {"model": ..., "train": ...}.
// A config read without an error must be valid and bounded (kiln/limits.hpp): its parameter
// count, description and layout are computed without overflow.
#include <nlohmann/json.hpp>

#include "kiln/limits.hpp"
#include "runtime/model_json.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return 0;
  kiln::ModelConfig model;
  try {
    model = kiln::impl::model_from_json(j.at("model"));
  } catch (const kiln::Error&) {
    return 0;
  } catch (const nlohmann::json::exception&) {
    return 0;
  }
  if (model.num_parameters() <= 0 || model.num_parameters() > kiln::limits::kMaxParameters) {
    __builtin_trap();
  }
  model.describe();
  model.flops_per_token(model.max_seq_len);
  if (model.n_layer <= 64) kiln::ParamLayout layout(model);
  try {
    const kiln::TrainConfig train = kiln::impl::train_from_json(j.at("train"));
    train.validate(model);
    kiln::impl::train_to_json(train);
  } catch (const kiln::Error&) {
  } catch (const nlohmann::json::exception&) {
  }
  kiln::impl::model_to_json(model);
  return 0;
}
