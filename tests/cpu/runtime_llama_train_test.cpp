// The Llama family trained on the CPU backend: whole-model gradients of a tiny Llama (GQA 4:1,
// untied head, Llama 3 scaling, SwiGLU, RMSNorm) and of a Qwen-style q/k/v-bias model against
// central finite differences (fp64), recompute equivalence, learning a sequence, data-parallel
// ranks against one rank with the whole batch, and the forward against Hugging Face's Llama
// written from scratch.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/communicator.hpp"
#include "kiln/model.hpp"
#include "kiln/trainer.hpp"
#include "tests/common/support.hpp"
#include "tests/cpu/llama_models.hpp"

using kiln::ModelConfig;
using kiln::ParamKind;
using kiln::ParamLayout;
using kiln::TrainConfig;
using kiln::Trainer;
using namespace kiln::test::llama;

namespace {

void check_gradients(const ModelConfig& m, const TrainConfig& t, const std::vector<int32_t>& in,
                     const std::vector<int32_t>& tg) {
  Trainer trainer(m, t, kiln::make_cpu_backend(kiln::DType::f64, 2), 11);
  std::vector<double> p = trainer.parameters_f64();
  add_noise(trainer, p, 0.1, 5);
  trainer.set_parameters(p);
  const kiln::StepResult r = trainer.step(in, tg);
  REQUIRE_FALSE(r.skipped);
  const std::vector<double> g = trainer.gradients_f64();
  REQUIRE(trainer.parameters_f64() == p);  // lr 0
  check_fd_gradients(trainer, p, g, [&] { return trainer.evaluate(in, tg); });
}

}  // namespace

TEST_CASE("Llama gradients match central finite differences (fp64 cpu backend)",
          "[runtime][llama]") {
  const ModelConfig m = llama(2, 11, 8);
  auto rng = kiln::test::make_rng(21);
  auto in = random_tokens(10, 11, rng);
  auto tg = random_tokens(10, 11, rng);
  tg[4] = kiln::kIgnoreIndex;
  check_gradients(m, train(2, 5), in, tg);
}

TEST_CASE("Qwen-style q/k/v-bias gradients match central finite differences", "[runtime][llama]") {
  const ModelConfig m = qwen(11, 8);
  auto rng = kiln::test::make_rng(22);
  check_gradients(m, train(2, 4), random_tokens(8, 11, rng), random_tokens(8, 11, rng));
}

TEST_CASE("Llama: recomputing SwiGLU and RMSNorm gives the same gradients, bit for bit",
          "[runtime][llama]") {
  check_recompute_bitwise(llama(2, 40, 16), 23);
}

TEST_CASE("a tiny Llama learns a short sequence", "[runtime][llama]") {
  const ModelConfig m = kiln::model_preset("llama-tiny", 20);
  TrainConfig t = train(2, 16, 3e-3);
  t.optimizer.warmup_steps = 5;
  t.optimizer.grad_clip = 1.0;
  Trainer trainer(m, t, kiln::make_cpu_backend(kiln::DType::f32, 2), 1);
  const auto [in, tg] = repeated_sequence(20, 16, 24);
  const double first = trainer.step(in, tg).loss;
  double last = first;
  for (int i = 0; i < 150; ++i)
    last = trainer.step(in, tg).loss;
  INFO("loss " << first << " -> " << last);
  CHECK(first == Approx(std::log(20.0)).epsilon(0.1));
  CHECK(last < 0.1);
}

TEST_CASE("Llama data parallelism: 2 ranks equal 1 rank with the whole batch", "[runtime][llama]") {
  const ModelConfig m = llama(2, 37, 8);
  TrainConfig t = train(2, 8, 3e-3);
  t.optimizer.weight_decay = 0.1;
  t.optimizer.grad_clip = 1.0;
  t.optimizer.warmup_steps = 0;
  auto rng = kiln::test::make_rng(28);
  std::vector<std::vector<int32_t>> ins, tgs;
  for (int s = 0; s < 3; ++s) {
    ins.push_back(random_tokens(32, 37, rng));
    tgs.push_back(random_tokens(32, 37, rng));
  }
  TrainConfig whole = t;
  whole.batch = 4;
  Trainer one(m, whole, kiln::make_cpu_backend(kiln::DType::f64, 1), 7);
  std::vector<std::vector<double>> expected;
  for (int s = 0; s < 3; ++s) {
    one.step(ins[s], tgs[s]);
    expected.push_back(one.parameters_f64());
  }
  for (bool zero1 : {false, true}) {
    t.zero1 = zero1;
    std::vector<std::vector<std::vector<double>>> params(2);
    kiln::CommOptions o;
    o.timeout = std::chrono::seconds(30);
    kiln::run_in_process(2, kiln::BackendKind::cpu, o, [&](kiln::Communicator& comm) {
      Trainer trainer(m, t, kiln::make_cpu_backend(kiln::DType::f64, 1), 7, &comm);
      const std::size_t rows = 16, r = static_cast<std::size_t>(comm.rank());
      for (int s = 0; s < 3; ++s) {
        const std::vector<int32_t> in(ins[s].begin() + r * rows, ins[s].begin() + (r + 1) * rows);
        const std::vector<int32_t> tg(tgs[s].begin() + r * rows, tgs[s].begin() + (r + 1) * rows);
        trainer.step(in, tg);
        params[r].push_back(trainer.parameters_f64());
      }
    });
    for (int s = 0; s < 3; ++s) {
      INFO("zero1 " << zero1 << " step " << s);
      REQUIRE(params[1][s] == params[0][s]);  // bitwise across ranks
      double diff = 0;
      for (std::size_t i = 0; i < expected[s].size(); ++i)
        diff = std::max(diff, std::abs(expected[s][i] - params[0][s][i]));
      CHECK(diff < 1e-12);
    }
  }
}

namespace {

// Hugging Face's LlamaForCausalLM forward (Qwen2's with q/k/v biases), written from scratch in
// double over the flat parameters: the independent spec the schedule's forward is checked
// against (the gradient tests only show the backward agrees with the forward).
std::vector<double> llama_logits_spec(const ModelConfig& m, const ParamLayout& layout,
                                      const std::vector<double>& p,
                                      const std::vector<int32_t>& tokens) {
  const int64_t T = static_cast<int64_t>(tokens.size()), C = m.n_embd, NH = m.n_head;
  const int64_t NKV = m.kv_heads(), HD = m.head_dim(), I = m.intermediate_size;
  const double eps = m.layernorm_eps;
  auto W = [&](ParamKind k, int64_t l = -1) { return p.data() + layout.get(k, l).offset; };
  auto rmsnorm = [&](const std::vector<double>& x, const double* g) {
    std::vector<double> y(x.size());
    for (int64_t t = 0; t < T; ++t) {
      double ss = 0;
      for (int64_t c = 0; c < C; ++c)
        ss += x[t * C + c] * x[t * C + c];
      const double r = 1 / std::sqrt(ss / static_cast<double>(C) + eps);
      for (int64_t c = 0; c < C; ++c)
        y[t * C + c] = x[t * C + c] * r * g[c];
    }
    return y;
  };
  // out (T, N) = x (T, K) @ w (N, K)^T + b
  auto linear = [&](const std::vector<double>& x, const double* w, const double* b, int64_t K,
                    int64_t N) {
    std::vector<double> y(static_cast<std::size_t>(T * N));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t n = 0; n < N; ++n) {
        double s = b ? b[n] : 0.0;
        for (int64_t k = 0; k < K; ++k)
          s += x[t * K + k] * w[n * K + k];
        y[t * N + n] = s;
      }
    }
    return y;
  };
  // Hugging Face's rotary frequencies (_compute_default / _compute_llama3_parameters).
  std::vector<double> inv(static_cast<std::size_t>(HD / 2));
  for (int64_t i = 0; i < HD / 2; ++i) {
    double f = std::pow(m.rope.theta, -2.0 * static_cast<double>(i) / static_cast<double>(HD));
    if (m.rope.scaling == kiln::RopeScaling::llama3) {
      const double orig = static_cast<double>(m.rope.original_max_position);
      const double lo = m.rope.low_freq_factor, hi = m.rope.high_freq_factor;
      const double wavelen = 2 * M_PI / f;
      if (wavelen > orig / lo) {
        f /= m.rope.factor;
      } else if (wavelen >= orig / hi) {
        const double smooth = (orig / wavelen - lo) / (hi - lo);
        f = (1 - smooth) * f / m.rope.factor + smooth * f;
      }
    }
    inv[static_cast<std::size_t>(i)] = f;
  }
  std::vector<double> x(static_cast<std::size_t>(T * C));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c)
      x[t * C + c] = W(ParamKind::wte)[tokens[static_cast<std::size_t>(t)] * C + c];
  const int64_t width = (NH + 2 * NKV) * HD;
  for (int64_t l = 0; l < m.n_layer; ++l) {
    const auto qkv = linear(rmsnorm(x, W(ParamKind::ln1_w, l)), W(ParamKind::qkv_w, l),
                            m.qkv_bias() ? W(ParamKind::qkv_b, l) : nullptr, C, width);
    // q (head h) at h * HD, k (head g) at (NH + g) * HD, v at (NH + NKV + g) * HD of a row.
    auto rotated = [&](int64_t t, int64_t head, int64_t d) {
      const double* v = qkv.data() + t * width + head * HD;
      const int64_t i = d % (HD / 2);
      const double a = static_cast<double>(t) * inv[static_cast<std::size_t>(i)];
      return d < HD / 2 ? v[i] * std::cos(a) - v[i + HD / 2] * std::sin(a)
                        : v[i + HD / 2] * std::cos(a) + v[i] * std::sin(a);
    };
    std::vector<double> att(static_cast<std::size_t>(T * C));
    for (int64_t h = 0; h < NH; ++h) {
      const int64_t g = h / (NH / NKV);
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> s(static_cast<std::size_t>(i + 1));
        double mx = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          double d = 0;
          for (int64_t e = 0; e < HD; ++e)
            d += rotated(i, h, e) * rotated(j, NH + g, e);
          s[static_cast<std::size_t>(j)] = d / std::sqrt(static_cast<double>(HD));
          mx = std::max(mx, s[static_cast<std::size_t>(j)]);
        }
        double z = 0;
        for (double& v : s)
          z += (v = std::exp(v - mx));
        for (int64_t e = 0; e < HD; ++e) {
          double o = 0;
          for (int64_t j = 0; j <= i; ++j)
            o += s[static_cast<std::size_t>(j)] / z * qkv[j * width + (NH + NKV + g) * HD + e];
          att[i * C + h * HD + e] = o;
        }
      }
    }
    const auto o = linear(att, W(ParamKind::attproj_w, l), nullptr, C, C);
    for (std::size_t k = 0; k < x.size(); ++k)
      x[k] += o[k];
    const auto gu =
        linear(rmsnorm(x, W(ParamKind::ln2_w, l)), W(ParamKind::fc_w, l), nullptr, C, 2 * I);
    std::vector<double> act(static_cast<std::size_t>(T * I));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < I; ++i) {
        const double gate = gu[t * 2 * I + i], up = gu[t * 2 * I + I + i];
        act[t * I + i] = gate / (1 + std::exp(-gate)) * up;
      }
    }
    const auto down = linear(act, W(ParamKind::fcproj_w, l), nullptr, I, C);
    for (std::size_t k = 0; k < x.size(); ++k)
      x[k] += down[k];
  }
  const double* head = W(m.tied_embeddings ? ParamKind::wte : ParamKind::lm_head);
  return linear(rmsnorm(x, W(ParamKind::lnf_w)), head, nullptr, C, m.vocab_size);
}

}  // namespace

TEST_CASE("the Llama forward equals Hugging Face's Llama written from scratch (fp64)",
          "[runtime][llama]") {
  for (const ModelConfig& m : {llama(2, 13, 8), qwen(13, 8)}) {
    const int64_t T = 7;
    Trainer trainer(m, train(1, T), kiln::make_cpu_backend(kiln::DType::f64, 2), 31);
    std::vector<double> p = trainer.parameters_f64();
    add_noise(trainer, p, 0.3, 32);
    trainer.set_parameters(p);
    auto rng = kiln::test::make_rng(33);
    const std::vector<int32_t> tokens = random_tokens(T, 13, rng);
    const std::vector<float> got = trainer.logits(tokens);  // (T, V), rounded to float
    const std::vector<double> want = llama_logits_spec(m, trainer.layout(), p, tokens);
    double scale = 0;
    for (double v : want)
      scale = std::max(scale, std::abs(v));
    REQUIRE(scale > 0.1);  // logits that are not trivially small
    for (std::size_t k = 0; k < want.size(); ++k) {
      INFO(m.describe() << " logit " << k);
      REQUIRE(static_cast<double>(got[k]) == Approx(want[k]).margin(1e-5 * scale));
    }
  }
}
