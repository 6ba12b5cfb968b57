// Generation: the KV-cache path against the full forward pass, seeded sampling, and bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <vector>

#include "kiln/generate.hpp"
#include "kiln/trainer.hpp"
#include "tests/common/support.hpp"

namespace {

kiln::ModelConfig model(int64_t V = 23, int64_t T = 12) {
  kiln::ModelConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.vocab_size = V;
  c.max_seq_len = T;
  return c.resolved();
}

kiln::TrainConfig one_row(int64_t T) {
  kiln::TrainConfig t;
  t.batch = 1;
  t.seq_len = T;
  return t;
}

// A trainer whose weights are random enough that every logit differs.
std::unique_ptr<kiln::Trainer> trainer_with_noise(const kiln::ModelConfig& m, int64_t T,
                                                  std::shared_ptr<kiln::Backend> be) {
  auto t = std::make_unique<kiln::Trainer>(m, one_row(T), std::move(be), 21);
  auto p = t->parameters();
  auto rng = kiln::test::make_rng(9);
  std::normal_distribution<float> noise(0.0f, 0.2f);
  for (const kiln::ParamTensor& tensor : t->layout().tensors()) {
    const int64_t n =
        tensor.kind == kiln::ParamKind::wte ? m.vocab_size * m.n_embd : tensor.numel();
    for (int64_t i = 0; i < n; ++i)
      p[static_cast<std::size_t>(tensor.offset + i)] += noise(rng);
  }
  t->set_parameters(p);
  return t;
}

}  // namespace

TEST_CASE("KV-cache decoding equals the full forward pass at every position", "[runtime]") {
  const kiln::ModelConfig m = model();
  const int64_t T = 12;
  auto trainer = trainer_with_noise(m, T, kiln::make_cpu_backend(kiln::DType::f32, 2));
  auto rng = kiln::test::make_rng(10);
  std::uniform_int_distribution<int32_t> d(0, 22);
  std::vector<int32_t> seq(T);
  for (auto& x : seq)
    x = d(rng);
  const std::vector<float> full = trainer->logits(seq);  // (T, V), no cache

  kiln::Generator gen(*trainer);
  // One token at a time.
  for (int64_t pos = 0; pos < T; ++pos) {
    const std::vector<float> step = gen.feed(std::span<const int32_t>(&seq[pos], 1));
    REQUIRE(gen.context_length() == pos + 1);
    for (int64_t v = 0; v < m.vocab_size; ++v) {
      INFO("position " << pos << " token " << v);
      REQUIRE(step[v] == Approx(full[pos * m.vocab_size + v]).epsilon(1e-5).margin(1e-6));
    }
  }
  // A prompt of 5 at once, then the rest one by one: the same.
  gen.reset();
  std::vector<float> last = gen.feed(std::span<const int32_t>(seq.data(), 5));
  for (int64_t v = 0; v < m.vocab_size; ++v)
    CHECK(last[v] == Approx(full[4 * m.vocab_size + v]).epsilon(1e-5).margin(1e-6));
  last = gen.feed(std::span<const int32_t>(seq.data() + 5, 7));
  for (int64_t v = 0; v < m.vocab_size; ++v)
    CHECK(last[v] == Approx(full[11 * m.vocab_size + v]).epsilon(1e-5).margin(1e-6));

  // A standalone generator built from the weights gives the same as the borrowing one.
  kiln::Generator own(m, kiln::make_cpu_backend(kiln::DType::f32, 1), trainer->parameters());
  const std::vector<float> again = own.feed(seq);
  for (int64_t v = 0; v < m.vocab_size; ++v)
    CHECK(again[v] == last[v]);
}

TEST_CASE("generation is deterministic for a seed and slides past max_seq_len", "[runtime]") {
  const kiln::ModelConfig m = model();
  auto trainer = trainer_with_noise(m, 12, kiln::make_cpu_backend(kiln::DType::f32, 1));
  kiln::Generator gen(*trainer);
  kiln::SamplingConfig s;
  s.temperature = 1.0;
  s.top_k = 10;
  s.seed = 3;
  const std::vector<int32_t> prompt{1, 2, 3};
  const auto a = gen.generate(prompt, 30, s);  // 3 + 30 > 12 positions: the window slides
  const auto b = gen.generate(prompt, 30, s);
  CHECK(a.size() == 30);
  CHECK(a == b);
  s.seed = 4;
  CHECK(gen.generate(prompt, 30, s) != a);
  for (int32_t t : a)
    CHECK((t >= 0 && t < 23));
  // Greedy decoding follows the argmax of the logits.
  s.temperature = 0;
  const auto g = gen.generate(prompt, 1, s);
  kiln::Generator check(*trainer);
  const auto logits = check.feed(prompt);
  CHECK(g[0] == std::max_element(logits.begin(), logits.end()) - logits.begin());
  // The callback can stop generation.
  int seen = 0;
  const auto stopped = gen.generate(prompt, 30, s, [&](int32_t) { return ++seen < 4; });
  CHECK(stopped.size() == 4);
}

TEST_CASE("sampling honours temperature, top-k and top-p", "[runtime]") {
  const std::vector<float> logits{0.0f, 2.0f, 1.0f, -1.0f, 2.0f};
  kiln::SamplingConfig s;
  s.temperature = 0;
  CHECK(kiln::sample_token(logits, s, 0.9) == 1);  // ties: the lower id
  s.temperature = 1;
  s.top_k = 1;
  CHECK(kiln::sample_token(logits, s, 0.99) == 1);
  s.top_k = 0;
  s.top_p = 0.01;
  CHECK(kiln::sample_token(logits, s, 0.99) == 1);
  s.top_p = 1;
  // Frequencies over a fine grid of draws match softmax(logits).
  std::map<int32_t, int> hist;
  const int n = 20000;
  for (int i = 0; i < n; ++i)
    hist[kiln::sample_token(logits, s, (i + 0.5) / n)]++;
  double z = 0;
  for (float l : logits)
    z += std::exp(l);
  for (int32_t v = 0; v < 5; ++v) {
    CHECK(hist[v] / static_cast<double>(n) == Approx(std::exp(logits[v]) / z).margin(2e-3));
  }
  // top_k = 3 keeps ids 1, 4, 2 only.
  s.top_k = 3;
  for (int i = 0; i < 100; ++i) {
    const int32_t t = kiln::sample_token(logits, s, i / 100.0);
    CHECK((t == 1 || t == 4 || t == 2));
  }
  s.top_k = 0;
  s.top_p = 0.0;
  CHECK_THROWS_AS(kiln::sample_token(logits, s, 0.5), kiln::Error);
  s.top_p = 1;
  s.temperature = -1;
  CHECK_THROWS_AS(kiln::sample_token(logits, s, 0.5), kiln::Error);
  s.temperature = 1;
  const std::vector<float> bad{0.0f, NAN};
  CHECK_THROWS_AS(kiln::sample_token(bad, s, 0.5), kiln::Error);
}

TEST_CASE("the generator refuses bad tokens, overflow and encoders", "[runtime]") {
  const kiln::ModelConfig m = model(23, 8);
  auto trainer = trainer_with_noise(m, 8, kiln::make_cpu_backend(kiln::DType::f32, 1));
  kiln::Generator gen(*trainer);
  const std::vector<int32_t> bad{1, 23};
  try {
    gen.feed(bad);
    FAIL("no error");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::data_error);
    CHECK_THAT(e.message(), Catch::Contains("token id 23 at position 1"));
  }
  CHECK(gen.context_length() == 0);
  const std::vector<int32_t> nine(9, 1);
  CHECK_THROWS_AS(gen.feed(nine), kiln::Error);
  CHECK_THROWS_AS(gen.feed({}), kiln::Error);
  CHECK_THROWS_AS(gen.generate({}, 3, {}), kiln::Error);
  CHECK_THROWS_AS(kiln::Generator(m, kiln::make_cpu_backend(), std::vector<float>(5)), kiln::Error);
  kiln::ModelConfig enc = m;
  enc.kind = kiln::ModelKind::encoder;
  enc.mask_token_id = 22;
  CHECK_THROWS_AS(
      kiln::Generator(enc, kiln::make_cpu_backend(),
                      std::vector<float>(static_cast<std::size_t>(kiln::ParamLayout(enc).total()))),
      kiln::Error);
}
