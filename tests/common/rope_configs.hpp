// Rotary embedding configurations the rope tests share (tests/cpu/rope_*_test.cpp,
// tests/gpu/rope_test.cpp): plain RoPE, and Llama 3's frequency scaling with its published factors.
#pragma once

#include <cstdint>

#include "kiln/rope.h"

namespace kiln::test {

inline kiln_rope_config_t rope_plain(std::int64_t hd, double theta = 10000) {
  kiln_rope_config_t c{};
  c.head_dim = hd;
  c.theta = theta;
  c.scaling = KILN_ROPE_SCALING_NONE;
  return c;
}

// Llama 3's scaling: factor 32 for Llama 3.2, 8 for Llama 3.1.
inline kiln_rope_config_t rope_llama3(std::int64_t hd, double factor) {
  kiln_rope_config_t c = rope_plain(hd, 500000);
  c.scaling = KILN_ROPE_SCALING_LLAMA3;
  c.factor = factor;
  c.low_freq_factor = 1;
  c.high_freq_factor = 4;
  c.original_max_position = 8192;
  return c;
}

}  // namespace kiln::test
