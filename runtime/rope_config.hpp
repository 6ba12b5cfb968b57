// Internal: the model's rotary description as the rope kernels' and references' config.
#pragma once

#include "kiln/model.hpp"
#include "kiln/rope.h"

namespace kiln::impl {

inline kiln_rope_config_t rope_config(const RopeConfig& r, int64_t head_dim) {
  kiln_rope_config_t c{};
  c.head_dim = head_dim;
  c.theta = r.theta;
  c.scaling = r.scaling == RopeScaling::llama3 ? KILN_ROPE_SCALING_LLAMA3 : KILN_ROPE_SCALING_NONE;
  c.factor = r.factor;
  c.low_freq_factor = r.low_freq_factor;
  c.high_freq_factor = r.high_freq_factor;
  c.original_max_position = r.original_max_position;
  return c;
}

}  // namespace kiln::impl
