// The runtime's configuration side: model presets and validation, the parameter layout and its
// initialisation, the learning-rate schedule, the memory plan and the encoder's masking.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "kiln/model.hpp"
#include "kiln/plan.hpp"
#include "kiln/trainer.hpp"

using kiln::ModelConfig;
using kiln::ParamKind;
using kiln::ParamLayout;

namespace {

ModelConfig tiny(int64_t L = 2, int64_t H = 2, int64_t C = 16, int64_t V = 50, int64_t T = 8) {
  ModelConfig c;
  c.n_layer = L;
  c.n_head = H;
  c.n_embd = C;
  c.vocab_size = V;
  c.max_seq_len = T;
  return c.resolved();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return e.message();
  }
  return "";
}

}  // namespace

TEST_CASE("GPT-2 presets have the published parameter counts", "[runtime]") {
  CHECK(kiln::model_preset("gpt2").num_parameters() == 124439808);
  CHECK(kiln::model_preset("gpt2-124m").padded_vocab == 50304);
  CHECK(kiln::model_preset("gpt2-350m").num_parameters() == 354823168);
  CHECK(kiln::model_preset("gpt2-774m").num_parameters() == 774030080);
  CHECK(kiln::model_preset("gpt2-xl").num_parameters() == 1557611200);
  const ModelConfig g3 = kiln::model_preset("gpt3-125m");
  CHECK(g3.max_seq_len == 2048);
  CHECK(g3.n_embd == 768);
  CHECK(kiln::model_preset("tiny", 257).padded_vocab == 384);
  CHECK_THAT(error_of([] { kiln::model_preset("gpt5"); }),
             Catch::Contains("unknown preset 'gpt5'") && Catch::Contains("gpt2-124m"));
  // bench/README.md's convention: 6 N + 6 L C T.
  const ModelConfig g = kiln::model_preset("gpt2");
  CHECK(g.flops_per_token(1024) == 6.0 * 124439808 + 6.0 * 12 * 768 * 1024);
}

TEST_CASE("model configs are validated with a message naming the problem", "[runtime]") {
  ModelConfig c = tiny();
  CHECK_NOTHROW(c.validate());
  c.n_head = 3;
  CHECK_THAT(error_of([&] { c.validate(); }),
             Catch::Contains("n_head (3) must divide n_embd (16)"));
  c = tiny();
  c.n_layer = 0;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("n_layer must be > 0"));
  c = tiny();
  c.vocab_size = 0;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("vocab_size must be > 0"));
  c = tiny();
  c.padded_vocab = 10;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("padded_vocab (10)"));
  c = tiny();
  c.max_seq_len = -1;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("max_seq_len"));
  c = tiny();
  c.kind = kiln::ModelKind::encoder;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("mask_token_id"));
  c.mask_token_id = 49;
  CHECK_NOTHROW(c.validate());

  kiln::TrainConfig t;
  t.batch = 2;
  t.seq_len = 9;
  CHECK_THAT(error_of([&] { t.validate(tiny()); }),
             Catch::Contains("seq_len 9 exceeds the model's max_seq_len 8"));
  t.seq_len = 0;
  CHECK_THAT(error_of([&] { t.validate(tiny()); }), Catch::Contains("seq_len must be > 0"));
  t.seq_len = 8;
  t.grad_accum = 0;
  CHECK_THAT(error_of([&] { t.validate(tiny()); }), Catch::Contains("grad_accum"));
  t.grad_accum = 1;
  t.optimizer.beta2 = 1.0;
  CHECK_THAT(error_of([&] { t.validate(tiny()); }), Catch::Contains("beta2"));
}

TEST_CASE("the parameter layout is aligned, complete and layer-contiguous", "[runtime]") {
  const ModelConfig c = tiny(3, 2, 24, 70, 10);
  const ParamLayout layout(c);
  const int64_t C = 24;
  CHECK(layout.tensors().size() == 2 + 12 * 3 + 2);
  int64_t real = 0, end = 0;
  std::set<std::string> names;
  for (const kiln::ParamTensor& t : layout.tensors()) {
    CHECK(t.offset % ParamLayout::kAlign == 0);
    CHECK(t.offset >= end);  // no overlap, in order
    end = t.offset + t.numel();
    real += t.kind == ParamKind::wte ? c.vocab_size * C : t.numel();
    names.insert(t.name);
  }
  CHECK(names.size() == layout.tensors().size());
  CHECK(names.count("h.2.mlp.c_proj.weight") == 1);
  CHECK(real == c.num_parameters());
  CHECK(layout.total() >= end);
  CHECK(layout.get(ParamKind::qkv_w, 1).rows == 3 * C);
  CHECK(layout.get(ParamKind::fcproj_w, 2).cols == 4 * C);
  CHECK(layout.get(ParamKind::wte).rows == c.padded_vocab);
  CHECK(layout.get(ParamKind::fc_w, 0).decay);
  CHECK_FALSE(layout.get(ParamKind::fc_b, 0).decay);
  CHECK_FALSE(layout.get(ParamKind::lnf_w).decay);
  CHECK_THROWS_AS(layout.get(ParamKind::fc_w, 3), kiln::Error);

  // Buckets in backward order tile the buffer exactly.
  const auto& buckets = layout.buckets();
  REQUIRE(buckets.size() == 3 + 2);
  CHECK(buckets.front().name == "final norm");
  CHECK(buckets.back().name == "embeddings");
  CHECK(buckets.back().begin == 0);
  CHECK(buckets.front().end == layout.total());
  for (std::size_t i = 0; i + 1 < buckets.size(); ++i)
    CHECK(buckets[i + 1].end == buckets[i].begin);
  for (int64_t l = 0; l < 3; ++l) {
    const auto& b = layout.layer_bucket(l);
    CHECK(b.begin == layout.get(ParamKind::ln1_w, l).offset);
    const auto& last = layout.get(ParamKind::fcproj_b, l);
    CHECK(b.end >= last.offset + last.numel());
  }
}

TEST_CASE("initialisation follows GPT-2 and is deterministic for a seed", "[runtime]") {
  const ModelConfig c = tiny(2, 2, 64, 100, 16);
  const ParamLayout layout(c);
  std::vector<float> a(static_cast<std::size_t>(layout.total())), b(a.size()), d(a.size());
  kiln::init_parameters(layout, 7, a.data());
  kiln::init_parameters(layout, 7, b.data());
  kiln::init_parameters(layout, 8, d.data());
  CHECK(a == b);
  CHECK(a != d);
  auto stddev = [&](const kiln::ParamTensor& t, int64_t n) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      s += a[static_cast<std::size_t>(t.offset + i)];
      s2 += static_cast<double>(a[static_cast<std::size_t>(t.offset + i)]) *
            a[static_cast<std::size_t>(t.offset + i)];
    }
    const double mean = s / static_cast<double>(n);
    CHECK(std::abs(mean) < 0.003);
    return std::sqrt(s2 / static_cast<double>(n) - mean * mean);
  };
  const auto& fc = layout.get(ParamKind::fc_w, 0);
  CHECK(stddev(fc, fc.numel()) == Approx(0.02).epsilon(0.05));
  const auto& proj = layout.get(ParamKind::fcproj_w, 1);
  CHECK(stddev(proj, proj.numel()) == Approx(0.02 / std::sqrt(4.0)).epsilon(0.05));
  const auto& wte = layout.get(ParamKind::wte);
  CHECK(stddev(wte, c.vocab_size * c.n_embd) == Approx(0.02).epsilon(0.05));
  for (int64_t i = c.vocab_size * c.n_embd; i < wte.numel(); ++i) {
    REQUIRE(a[static_cast<std::size_t>(wte.offset + i)] == 0.0f);  // padded rows
  }
  const auto& ln = layout.get(ParamKind::ln2_w, 1);
  const auto& lnb = layout.get(ParamKind::ln2_b, 1);
  for (int64_t i = 0; i < ln.numel(); ++i) {
    CHECK(a[static_cast<std::size_t>(ln.offset + i)] == 1.0f);
    CHECK(a[static_cast<std::size_t>(lnb.offset + i)] == 0.0f);
  }
}

TEST_CASE("the learning rate warms up linearly and decays to min_lr", "[runtime]") {
  kiln::OptimizerConfig o;
  o.lr = 1e-3;
  o.min_lr = 1e-4;
  o.warmup_steps = 10;
  o.decay_steps = 110;
  CHECK(kiln::learning_rate(o, 0) == Approx(1e-4));
  CHECK(kiln::learning_rate(o, 9) == Approx(1e-3));
  CHECK(kiln::learning_rate(o, 10) == Approx(1e-3));
  CHECK(kiln::learning_rate(o, 60) == Approx(0.55e-3));  // cosine half way
  CHECK(kiln::learning_rate(o, 110) == Approx(1e-4));
  CHECK(kiln::learning_rate(o, 500) == Approx(1e-4));
  for (int64_t s = 10; s < 110; ++s)
    CHECK(kiln::learning_rate(o, s + 1) <= kiln::learning_rate(o, s));
  o.schedule = kiln::LrSchedule::linear;
  CHECK(kiln::learning_rate(o, 60) == Approx(0.55e-3));
  CHECK(kiln::learning_rate(o, 35) == Approx(1e-3 - 0.25 * 0.9e-3));
  o.schedule = kiln::LrSchedule::constant;
  CHECK(kiln::learning_rate(o, 100) == Approx(1e-3));
  CHECK(kiln::parse_lr_schedule("cosine") == kiln::LrSchedule::cosine);
  CHECK_THROWS_AS(kiln::parse_lr_schedule("step"), kiln::Error);
}

TEST_CASE("the memory plan holds every buffer once, aligned, and recompute shrinks it",
          "[runtime]") {
  const ModelConfig c = tiny(4, 4, 64, 300, 64);
  kiln::TrainConfig t;
  t.batch = 4;
  t.seq_len = 64;
  const kiln::BackendTypes cuda_like{kiln::DType::bf16, kiln::DType::f32, kiln::DType::f32,
                                     kiln::DType::f32, true};
  const kiln::MemoryPlan plan = kiln::plan_training(c, t, cuda_like, 1000);
  const ParamLayout layout(c);
  std::size_t end = 0;
  for (const kiln::Region& r : plan.regions()) {
    CHECK(r.offset % kiln::MemoryPlan::kAlign == 0);
    CHECK(r.offset >= end);
    end = r.offset + r.bytes;
  }
  CHECK(plan.total_bytes() == end);
  CHECK(plan.find("params").bytes == static_cast<std::size_t>(layout.total()) * 2);
  CHECK(plan.find("master").bytes == static_cast<std::size_t>(layout.total()) * 4);
  CHECK(plan.find("adam_v").bytes == static_cast<std::size_t>(layout.total()) * 4);
  CHECK(plan.find("logits").numel == 4 * 64 * c.padded_vocab);
  CHECK(plan.find("workspace").bytes == 1000);
  CHECK_THROWS_AS(plan.find("nothing"), kiln::Error);
  const auto groups = plan.bytes_by_group();
  std::size_t sum = 0;
  for (std::size_t g : groups)
    sum += g;
  CHECK(sum <= plan.total_bytes());

  kiln::TrainConfig rt = t;
  rt.recompute.gelu = true;
  const kiln::MemoryPlan gelu = kiln::plan_training(c, rt, cuda_like, 1000);
  rt.recompute.layernorm = true;
  const kiln::MemoryPlan both = kiln::plan_training(c, rt, cuda_like, 1000);
  const auto act = static_cast<std::size_t>(kiln::MemoryGroup::activations);
  // GELU: L per-layer (BT, 4C) buffers become one; LayerNorm: 2L (BT, C) become one.
  const std::size_t btc2 = 4 * 64 * 64 * 2;
  CHECK(plan.bytes_by_group()[act] - gelu.bytes_by_group()[act] == 3 * 4 * btc2);
  CHECK(gelu.bytes_by_group()[act] - both.bytes_by_group()[act] ==
        7 * btc2 - 2 * 4 * 64 * 4 /* two recompute stat buffers */);
  CHECK(kiln::format_bytes(3u << 20) == "3.0 MiB");
}

TEST_CASE("encoder masking is deterministic, keeps targets only where masked", "[runtime]") {
  std::vector<int32_t> in(400);
  for (std::size_t i = 0; i < in.size(); ++i)
    in[i] = static_cast<int32_t>(i % 37);
  std::vector<int32_t> masked(in.size()), targets(in.size()), masked2(in.size()),
      targets2(in.size());
  const int64_t n = kiln::mask_tokens(in, 99, 0.25, 5, 3, 1, masked, targets);
  const int64_t n2 = kiln::mask_tokens(in, 99, 0.25, 5, 3, 1, masked2, targets2);
  CHECK(n == n2);
  CHECK(masked == masked2);
  CHECK(n > 60);
  CHECK(n < 140);
  int64_t count = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (targets[i] == kiln::kIgnoreIndex) {
      CHECK(masked[i] == in[i]);
    } else {
      CHECK(masked[i] == 99);
      CHECK(targets[i] == in[i]);
      ++count;
    }
  }
  CHECK(count == n);
  kiln::mask_tokens(in, 99, 0.25, 5, 4, 1, masked2, targets2);  // another step: other draws
  CHECK(masked != masked2);
  // Even a tiny fraction masks at least one position.
  std::vector<int32_t> small{1, 2, 3}, sm(3), st(3);
  CHECK(kiln::mask_tokens(small, 0, 1e-9, 1, 0, 0, sm, st) == 1);
}
