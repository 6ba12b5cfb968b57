// Shared by the CPU backend's training tests (runtime_train_test.cpp, runtime_llama_train_test.cpp
// and, through llama_models.hpp, the other Llama tests): train configs, random tokens, the
// whole-model gradient check against central finite differences, and recompute equivalence.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/model.hpp"
#include "kiln/trainer.hpp"
#include "tests/common/support.hpp"

namespace kiln::test::runtime {

// Batch B of sequences of T, learning rate lr (0: a step leaves the parameters as they were), no
// weight decay, no clipping.
inline kiln::TrainConfig train(int64_t B, int64_t T, double lr = 0) {
  kiln::TrainConfig t;
  t.batch = B;
  t.seq_len = T;
  t.optimizer.lr = lr;
  t.optimizer.weight_decay = 0;
  t.optimizer.grad_clip = 0;
  return t;
}

inline std::vector<int32_t> random_tokens(std::size_t n, int32_t V, std::mt19937_64& rng) {
  std::uniform_int_distribution<int32_t> d(0, V - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t)
    x = d(rng);
  return t;
}

// Two rows of one random sequence of T + 1 tokens under V (seeded by `stream`): the inputs and
// their next-token targets, for the tests in which a model memorises a sequence.
struct Batch {
  std::vector<int32_t> in, tg;
};
inline Batch repeated_sequence(int32_t V, int64_t T, uint64_t stream) {
  std::vector<int32_t> seq(static_cast<std::size_t>(T + 1));
  auto rng = kiln::test::make_rng(stream);
  std::uniform_int_distribution<int32_t> d(0, V - 1);
  for (auto& x : seq)
    x = d(rng);
  Batch b;
  for (int r = 0; r < 2; ++r) {
    b.in.insert(b.in.end(), seq.begin(), seq.end() - 1);
    b.tg.insert(b.tg.end(), seq.begin() + 1, seq.end());
  }
  return b;
}

// The tensors whose rows past the vocabulary are padding: the embedding and an untied head.
inline bool vocab_rows(kiln::ParamKind k) {
  return k == kiln::ParamKind::wte || k == kiln::ParamKind::lm_head;
}

// Every real parameter's analytic gradient `g` (a step of `trainer` at parameters `p`) against
// central differences of `loss` (h = 1e-5, fp64 backend), the parameters set on `trainer` one
// perturbation at a time; the padded rows receive no gradient. All must be checked.
inline void check_fd_gradients(kiln::Trainer& trainer, std::vector<double> p,
                               const std::vector<double>& g, const std::function<double()>& loss) {
  const kiln::ModelConfig& m = trainer.model();
  const double h = 1e-5;
  int64_t checked = 0;
  double max_err = 0;
  for (const kiln::ParamTensor& tensor : trainer.layout().tensors()) {
    const int64_t n = vocab_rows(tensor.kind) ? m.vocab_size * m.n_embd : tensor.numel();
    for (int64_t i = 0; i < n; ++i) {
      const std::size_t k = static_cast<std::size_t>(tensor.offset + i);
      const double saved = p[k];
      p[k] = saved + h;
      trainer.set_parameters(p);
      const double up = loss();
      p[k] = saved - h;
      trainer.set_parameters(p);
      const double down = loss();
      p[k] = saved;
      const double fd = (up - down) / (2 * h);
      const double err = std::abs(fd - g[k]);
      max_err = std::max(max_err, err);
      INFO(tensor.name << "[" << i << "]: analytic " << g[k] << " finite difference " << fd);
      REQUIRE(err <= 1e-8 + 1e-6 * std::abs(fd));
      ++checked;
    }
    for (int64_t i = n; i < tensor.numel(); ++i)
      REQUIRE(g[static_cast<std::size_t>(tensor.offset + i)] == 0.0);
  }
  INFO("max abs error " << max_err);
  CHECK(checked == m.num_parameters());
}

// Three steps of `m` (B 3, T 16) with and without recomputing the MLP activation and the norms:
// the recomputing plan is smaller, and losses, gradients and parameters are equal bit for bit.
inline void check_recompute_bitwise(const kiln::ModelConfig& m, uint64_t stream) {
  auto rng = kiln::test::make_rng(stream);
  const auto in = random_tokens(3 * 16, static_cast<int32_t>(m.vocab_size), rng);
  const auto tg = random_tokens(3 * 16, static_cast<int32_t>(m.vocab_size), rng);
  kiln::TrainConfig t = train(3, 16, 1e-3);
  kiln::Trainer plain(m, t, kiln::make_cpu_backend(kiln::DType::f32, 2), 4);
  t.recompute.gelu = t.recompute.layernorm = true;
  kiln::Trainer recompute(m, t, kiln::make_cpu_backend(kiln::DType::f32, 2), 4);
  CHECK(recompute.plan().total_bytes() < plain.plan().total_bytes());
  for (int i = 0; i < 3; ++i) {
    const auto a = plain.step(in, tg), b = recompute.step(in, tg);
    CHECK(a.loss == b.loss);
    CHECK(plain.gradients() == recompute.gradients());
  }
  CHECK(plain.parameters() == recompute.parameters());
}

}  // namespace kiln::test::runtime
