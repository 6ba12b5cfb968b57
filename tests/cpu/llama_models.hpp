// Shared by the Llama-family CPU tests (runtime_llama_test.cpp, runtime_llama_train_test.cpp): tiny
// models with every part on and parameter noise (train configs and random tokens come from
// runtime_support.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kiln/model.hpp"
#include "kiln/trainer.hpp"
#include "tests/common/support.hpp"
#include "tests/cpu/runtime_support.hpp"

namespace kiln::test::llama {

using kiln::ModelConfig;
using kiln::ParamKind;
using kiln::TrainConfig;
using kiln::Trainer;
using namespace kiln::test::runtime;  // train, random_tokens, vocab_rows, the gradient checks

// Every part on: RMSNorm, rotary with Llama 3 scaling whose three bands all occur at head dim 8
// (wavelengths 6.3 kept, 63 interpolated, 628 and 6283 scaled), SwiGLU, GQA 4:1, untied head.
inline ModelConfig llama(int64_t L = 2, int64_t V = 11, int64_t T = 8) {
  ModelConfig c;
  c.n_layer = L;
  c.n_head = 4;
  c.n_kv_head = 1;
  c.n_embd = 32;
  c.intermediate_size = 24;
  c.vocab_size = V;
  c.max_seq_len = T;
  c.norm = kiln::NormKind::rmsnorm;
  c.positions = kiln::PositionKind::rotary;
  c.mlp = kiln::MlpKind::swiglu;
  c.bias = kiln::BiasKind::none;
  c.tied_embeddings = false;
  c.rope.theta = 10000;
  c.rope.scaling = kiln::RopeScaling::llama3;
  c.rope.factor = 4;
  c.rope.low_freq_factor = 1;
  c.rope.high_freq_factor = 4;
  c.rope.original_max_position = 64;
  return c.resolved();
}

// Qwen2's parts: biases on q, k, v only, tied head, no scaling, GQA 2:1.
inline ModelConfig qwen(int64_t V = 11, int64_t T = 8) {
  ModelConfig c = llama(2, V, T);
  c.n_kv_head = 2;
  c.bias = kiln::BiasKind::qkv;
  c.tied_embeddings = true;
  c.rope.scaling = kiln::RopeScaling::none;
  c.rope.theta = 1e6;
  return c;
}

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return e.message();
  }
  return "";
}

// Adds noise to every real parameter (norm weights and biases too, so their gradients are
// generic); padded rows stay zero.
template <typename V>
void add_noise(const Trainer& trainer, V& p, double stddev, uint64_t stream) {
  const ModelConfig& m = trainer.model();
  auto rng = kiln::test::make_rng(stream);
  std::normal_distribution<double> noise(0.0, stddev);
  for (const kiln::ParamTensor& t : trainer.layout().tensors()) {
    const int64_t n = vocab_rows(t.kind) ? m.vocab_size * m.n_embd : t.numel();
    for (int64_t i = 0; i < n; ++i)
      p[static_cast<std::size_t>(t.offset + i)] += static_cast<typename V::value_type>(noise(rng));
  }
}

}  // namespace kiln::test::llama
