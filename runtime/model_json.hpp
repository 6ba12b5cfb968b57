// Internal: ModelConfig and TrainConfig as JSON (checkpoint metadata). from_json throws
// nlohmann::json exceptions for missing keys or wrong types and kiln::Error for bad values.
#pragma once

#include <nlohmann/json.hpp>

#include "kiln/model.hpp"
#include "kiln/train_config.hpp"

namespace kiln::impl {

nlohmann::json model_to_json(const ModelConfig& m);
ModelConfig model_from_json(const nlohmann::json& j);
nlohmann::json train_to_json(const TrainConfig& t);
TrainConfig train_from_json(const nlohmann::json& j);

}  // namespace kiln::impl
