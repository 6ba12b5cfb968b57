// What a training program does with a loader besides next(): its state in a checkpoint, that
// state moved to another batch or world size, and batches cut into inputs and targets.
#include <nlohmann/json.hpp>

#include <stdexcept>

#include "kiln/data.hpp"

namespace kiln {

std::string loader_state_to_json(const DataLoaderState& s) {
  return nlohmann::json{{"epoch", s.epoch}, {"step", s.step}, {"fingerprint", s.fingerprint},
                        {"B", s.B},         {"T", s.T},       {"world_size", s.world_size}}
      .dump();
}

DataLoaderState loader_state_from_json(const std::string& text, const std::string& source) {
  try {
    const auto j = nlohmann::json::parse(text);
    // get<uint64_t>() would convert a float (undefined when out of range) or wrap a negative.
    auto count = [&](const char* key) {
      const auto& v = j.at(key);
      if (!v.is_number_unsigned()) {
        throw std::runtime_error(std::string("'") + key + "' is not an integer >= 0");
      }
      return v.get<uint64_t>();
    };
    DataLoaderState s;
    s.epoch = count("epoch");
    s.step = count("step");
    s.fingerprint = count("fingerprint");
    s.B = count("B");
    s.T = count("T");
    s.world_size = count("world_size");
    return s;
  } catch (const std::exception& e) {
    throw Error(
        Status::data_error,
        "checkpoint '" + source + "': the data loader state is unreadable (" + e.what() + ")");
  }
}

DataLoaderState rebase_loader_state(DataLoaderState s, std::int64_t steps_per_epoch, std::int64_t B,
                                    int world_size) {
  const auto b = static_cast<uint64_t>(B);
  const auto w = static_cast<uint64_t>(world_size);
  if (s.B == b && s.world_size == w) return s;
  const uint64_t rows = b * w;
  const uint64_t consumed = s.step * s.B * s.world_size;
  s.step = (consumed + rows - 1) / rows;
  if (s.step >= static_cast<uint64_t>(steps_per_epoch)) {
    ++s.epoch;
    s.step = 0;
  }
  s.B = b;
  s.world_size = w;
  return s;
}

void next_batches(DataLoader& loader, std::int64_t micro_steps, std::vector<std::int32_t>& in,
                  std::vector<std::int32_t>& tg) {
  const std::int64_t B = loader.config().B, T = loader.config().T;
  in.resize(static_cast<std::size_t>(micro_steps * B * T));
  tg.resize(in.size());
  std::size_t k = 0;
  for (std::int64_t a = 0; a < micro_steps; ++a) {
    const std::span<const std::int32_t> rows = loader.next();
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int32_t* row = rows.data() + b * (T + 1);
      for (std::int64_t t = 0; t < T; ++t, ++k) {
        in[k] = row[t];
        tg[k] = row[t + 1];
      }
    }
  }
}

}  // namespace kiln
