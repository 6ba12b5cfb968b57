// The training schedule on the CPU backend: whole-model gradients against central finite
// differences (fp64 backend), recompute and gradient accumulation equivalences, learning a short
// sequence, the encoder objective, and the argument checks of a step.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/trainer.hpp"
#include "tests/common/support.hpp"
#include "tests/cpu/runtime_support.hpp"

using kiln::ModelConfig;
using kiln::TrainConfig;
using kiln::Trainer;
using namespace kiln::test::runtime;

namespace {

ModelConfig model(int64_t L, int64_t H, int64_t C, int64_t V, int64_t T,
                  kiln::ModelKind kind = kiln::ModelKind::decoder) {
  ModelConfig c;
  c.n_layer = L;
  c.n_head = H;
  c.n_embd = C;
  c.vocab_size = V;
  c.max_seq_len = T;
  c.kind = kind;
  if (kind == kiln::ModelKind::encoder) c.mask_token_id = static_cast<int32_t>(V - 1);
  return c.resolved();
}

// Every real parameter's gradient against central differences of the loss, in double.
void check_gradients(const ModelConfig& m, const TrainConfig& t, const std::vector<int32_t>& in,
                     const std::vector<int32_t>& tg) {
  Trainer trainer(m, t, kiln::make_cpu_backend(kiln::DType::f64, 2), 11);
  // Perturb the LayerNorm and bias parameters away from 1 / 0, so their gradients are generic.
  std::vector<double> p = trainer.parameters_f64();
  auto rng = kiln::test::make_rng(5);
  std::normal_distribution<double> noise(0.0, 0.1);
  for (const kiln::ParamTensor& tensor : trainer.layout().tensors()) {
    if (tensor.decay) continue;
    for (int64_t i = 0; i < tensor.numel(); ++i)
      p[static_cast<std::size_t>(tensor.offset + i)] += noise(rng);
  }
  trainer.set_parameters(p);
  const kiln::StepResult r =
      trainer.step(in, m.kind == kiln::ModelKind::encoder ? std::vector<int32_t>{} : tg);
  REQUIRE(r.stats_read);
  REQUIRE_FALSE(r.skipped);
  const std::vector<double> g = trainer.gradients_f64();
  // lr = 0 and no weight decay: the step left the parameters as they were.
  REQUIRE(trainer.parameters_f64() == p);
  CHECK(trainer.evaluate(in, m.kind == kiln::ModelKind::encoder ? std::vector<int32_t>{} : tg) ==
        Approx(r.loss).epsilon(1e-12));

  check_fd_gradients(trainer, p, g, [&] {
    return trainer.evaluate(in, m.kind == kiln::ModelKind::encoder ? std::vector<int32_t>{} : tg);
  });
}

}  // namespace

TEST_CASE("decoder gradients match central finite differences (fp64 cpu backend)", "[runtime]") {
  const ModelConfig m = model(2, 2, 8, 11, 8);
  const TrainConfig t = train(2, 5);
  auto rng = kiln::test::make_rng(1);
  auto in = random_tokens(10, 11, rng);
  auto tg = random_tokens(10, 11, rng);
  tg[3] = kiln::kIgnoreIndex;  // an ignored position counts for nothing
  check_gradients(m, t, in, tg);
}

TEST_CASE("encoder gradients match central finite differences (fp64 cpu backend)", "[runtime]") {
  const ModelConfig m = model(1, 2, 8, 9, 6, kiln::ModelKind::encoder);
  TrainConfig t = train(2, 6);
  t.mask_fraction = 0.4;
  auto rng = kiln::test::make_rng(2);
  check_gradients(m, t, random_tokens(12, 8, rng), {});
}

TEST_CASE("recomputing GELU and LayerNorm gives the same gradients, bit for bit", "[runtime]") {
  check_recompute_bitwise(model(2, 2, 16, 40, 16), 3);
}

TEST_CASE("two accumulated micro-batches equal one batch of twice the size", "[runtime]") {
  const ModelConfig m = model(2, 2, 16, 30, 8);
  auto rng = kiln::test::make_rng(4);
  const auto in = random_tokens(4 * 8, 30, rng), tg = random_tokens(4 * 8, 30, rng);
  TrainConfig big = train(4, 8, 1e-3);
  TrainConfig accum = train(2, 8, 1e-3);
  accum.grad_accum = 2;
  Trainer a(m, big, kiln::make_cpu_backend(kiln::DType::f64, 2), 9);
  Trainer b(m, accum, kiln::make_cpu_backend(kiln::DType::f64, 2), 9);
  for (int i = 0; i < 3; ++i) {
    const auto ra = a.step(in, tg), rb = b.step(in, tg);
    CHECK(ra.loss == Approx(rb.loss).epsilon(1e-12));
    CHECK(ra.grad_norm == Approx(rb.grad_norm).epsilon(1e-12));
    CHECK(rb.tokens == 32);
  }
  const auto pa = a.parameters_f64(), pb = b.parameters_f64();
  for (std::size_t i = 0; i < pa.size(); ++i)
    REQUIRE(pa[i] == Approx(pb[i]).margin(1e-12));
}

TEST_CASE("the loss falls and a short sequence is memorised", "[runtime]") {
  const ModelConfig m = model(2, 4, 32, 20, 16);
  TrainConfig t = train(2, 16, 3e-3);
  t.optimizer.warmup_steps = 5;
  t.optimizer.grad_clip = 1.0;
  Trainer trainer(m, t, kiln::make_cpu_backend(kiln::DType::f32, 2), 1);
  // Two rows of a fixed sequence: each target is the next token.
  const auto [in, tg] = repeated_sequence(20, 16, 6);
  const double first = trainer.step(in, tg).loss;
  CHECK(first == Approx(std::log(20.0)).epsilon(0.05));  // about uniform at initialisation
  double last = first;
  for (int i = 0; i < 150; ++i) {
    const kiln::StepResult r = trainer.step(in, tg);
    REQUIRE_FALSE(r.skipped);
    last = r.loss;
  }
  CHECK(last < 0.05);
  // Greedy decoding of the logits reproduces every next token.
  const std::vector<float> logits = trainer.logits(in);
  for (int64_t pos = 0; pos < 16; ++pos) {
    const float* row = logits.data() + pos * 20;
    CHECK(std::max_element(row, row + 20) - row == tg[static_cast<std::size_t>(pos)]);
  }
}

TEST_CASE("training is deterministic: two runs give identical losses and weights", "[runtime]") {
  const ModelConfig m = model(2, 2, 16, 50, 16);
  TrainConfig t = train(2, 16, 1e-3);
  t.grad_accum = 2;
  auto rng = kiln::test::make_rng(7);
  const auto in = random_tokens(64, 50, rng), tg = random_tokens(64, 50, rng);
  Trainer a(m, t, kiln::make_cpu_backend(kiln::DType::f32, 1), 3);
  Trainer b(m, t, kiln::make_cpu_backend(kiln::DType::f32, 3), 3);  // thread count is irrelevant
  for (int i = 0; i < 5; ++i)
    CHECK(a.step(in, tg).loss == b.step(in, tg).loss);
  CHECK(a.parameters() == b.parameters());
}

TEST_CASE("the encoder's loss counts only the masked positions", "[runtime]") {
  const ModelConfig m = model(1, 2, 16, 12, 8, kiln::ModelKind::encoder);
  TrainConfig t = train(2, 8);
  t.mask_fraction = 0.3;
  t.seed = 77;
  Trainer trainer(m, t, kiln::make_cpu_backend(kiln::DType::f64, 2), 2);
  auto rng = kiln::test::make_rng(8);
  const auto in = random_tokens(16, 11, rng);
  const double loss = trainer.evaluate(in, {}, 0);
  // The same by hand: mask as the trainer does, take the logits of the masked input, average the
  // cross-entropy over the masked positions only.
  std::vector<int32_t> masked(16), targets(16);
  const int64_t count = kiln::mask_tokens(in, 11, 0.3, 77, 0, 0, masked, targets);
  REQUIRE(count > 0);
  REQUIRE(count < 16);
  const std::vector<float> logits = trainer.logits(masked);
  double sum = 0;
  for (int64_t i = 0; i < 16; ++i) {
    if (targets[static_cast<std::size_t>(i)] == kiln::kIgnoreIndex) continue;
    const float* row = logits.data() + i * 12;
    double mx = row[0];
    for (int v = 1; v < 12; ++v)
      mx = std::max(mx, static_cast<double>(row[v]));
    double z = 0;
    for (int v = 0; v < 12; ++v)
      z += std::exp(row[v] - mx);
    sum += mx + std::log(z) - row[targets[static_cast<std::size_t>(i)]];
  }
  CHECK(loss == Approx(sum / static_cast<double>(count)).epsilon(1e-6));
  // Every masked position's input is the mask id; its original token is only the target.
  for (int64_t i = 0; i < 16; ++i) {
    const bool is_masked = targets[static_cast<std::size_t>(i)] != kiln::kIgnoreIndex;
    CHECK((masked[static_cast<std::size_t>(i)] == 11) == is_masked);
  }
}

TEST_CASE("bad steps are refused with a clear error before anything runs", "[runtime]") {
  const ModelConfig m = model(1, 2, 8, 10, 8);
  Trainer trainer(m, train(2, 4, 1e-2), kiln::make_cpu_backend(kiln::DType::f32, 1), 1);
  const auto before = trainer.parameters();
  std::vector<int32_t> in(8, 1), tg(8, 2);
  auto message = [&](const std::function<void()>& f) {
    try {
      f();
    } catch (const kiln::Error& e) {
      return std::make_pair(e.status(), e.message());
    }
    return std::make_pair(kiln::Status::ok, std::string());
  };
  in[5] = 10;
  auto [s1, m1] = message([&] { trainer.step(in, tg); });
  CHECK(s1 == kiln::Status::data_error);
  CHECK_THAT(m1, Catch::Contains("input token id 10 at position 5") &&
                     Catch::Contains("outside the vocabulary [0, 10)"));
  in[5] = -3;
  CHECK(message([&] { trainer.step(in, tg); }).first == kiln::Status::data_error);
  in[5] = 1;
  tg[0] = 12;
  CHECK_THAT(message([&] { trainer.step(in, tg); }).second, Catch::Contains("target token id 12"));
  tg.assign(8, kiln::kIgnoreIndex);
  CHECK_THAT(message([&] { trainer.step(in, tg); }).second, Catch::Contains("ignore index"));
  tg.assign(7, 2);
  CHECK(message([&] { trainer.step(in, tg); }).first == kiln::Status::invalid_argument);
  in.resize(9);
  CHECK_THAT(message([&] { trainer.step(in, tg); }).second,
             Catch::Contains("step needs 8 input ids"));
  CHECK(trainer.step_count() == 0);
  CHECK(trainer.parameters() == before);

  // Bad configurations never reach the backend.
  CHECK_THROWS_AS(Trainer(model(1, 3, 8, 10, 8), train(2, 4), kiln::make_cpu_backend()),
                  kiln::Error);
  CHECK_THROWS_AS(Trainer(m, train(2, 9), kiln::make_cpu_backend()), kiln::Error);
  CHECK_THROWS_AS(Trainer(m, train(0, 4), kiln::make_cpu_backend()), kiln::Error);
  TrainConfig graph = train(2, 4);
  graph.cuda_graph = true;
  CHECK_THAT(message([&] { Trainer(m, graph, kiln::make_cpu_backend()); }).second,
             Catch::Contains("cuda_graph needs"));
  CHECK_THROWS_AS(Trainer(m, train(2, 4), nullptr), kiln::Error);
}

TEST_CASE("a non-finite loss skips the step, or stops training under policy stop", "[runtime]") {
  const ModelConfig m = model(1, 2, 8, 10, 8);
  TrainConfig t = train(2, 4, 1e-2);
  Trainer trainer(m, t, kiln::make_cpu_backend(kiln::DType::f32, 1), 1);
  std::vector<int32_t> in(8, 1), tg(8, 2);
  auto p = trainer.parameters();
  p[static_cast<std::size_t>(trainer.layout().get(kiln::ParamKind::lnf_b).offset)] = NAN;
  trainer.set_parameters(p);
  const kiln::StepResult r = trainer.step(in, tg);
  CHECK(r.skipped);
  CHECK_FALSE(std::isfinite(r.loss));
  const auto after = trainer.parameters();
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (std::isnan(p[i])) continue;
    REQUIRE(after[i] == p[i]);  // untouched
  }
  t.on_nonfinite = kiln::NonFinitePolicy::stop;
  Trainer stopping(m, t, kiln::make_cpu_backend(kiln::DType::f32, 1), 1);
  stopping.set_parameters(p);
  try {
    stopping.step(in, tg);
    FAIL("no error");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::data_error);
    CHECK_THAT(e.message(), Catch::Contains("non-finite loss") && Catch::Contains("stops"));
  }
}

TEST_CASE("the cuda backend without a device is a no_device error, not a crash", "[runtime]") {
  int count = 0;
  if (kiln_device_count(&count) == KILN_STATUS_OK && count > 0) {
    SUCCEED("a device is present: the GPU tests cover the cuda backend");
    return;
  }
  try {
    kiln::make_backend(kiln::BackendKind::cuda, 0);
    FAIL("no error");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::no_device);
    CHECK_THAT(e.message(), Catch::StartsWith("no CUDA device"));
  }
}

namespace {

// A communicator of two identical ranks: averaging equal values is the identity, so training is
// unchanged, and the calls show where the schedule hands gradients over.
class RecordingCommunicator final : public kiln::Communicator {
 public:
  struct Call {
    const void* data;
    int64_t count;
    kiln::DType dtype;
    bool started;  // start_all_reduce: overlapped with the rest of the backward
  };
  std::vector<Call> calls;
  int waits = 0;
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  std::string description() const override { return "recording"; }
  void all_reduce(void* data, int64_t count, kiln::DType dtype, kiln::ReduceOp op, void*) override {
    CHECK(op == kiln::ReduceOp::mean);
    calls.push_back({data, count, dtype, false});
  }
  void start_all_reduce(void* data, int64_t count, kiln::DType dtype, kiln::ReduceOp op,
                        void*) override {
    CHECK(op == kiln::ReduceOp::mean);
    calls.push_back({data, count, dtype, true});
  }
  void wait_started(void*) override { ++waits; }
  void reduce_scatter(void*, std::span<const int64_t>, kiln::DType, kiln::ReduceOp,
                      void*) override {
    FAIL("reduce_scatter without ZeRO-1");
  }
  void all_gather(void*, int64_t, kiln::DType, void*) override {
    FAIL("all_gather without ZeRO-1");
  }
  void broadcast(void*, int64_t, kiln::DType, int, void*) override { FAIL("broadcast"); }
  void barrier() override {}
  // The other rank contributes the same value.
  double all_reduce_value(double value, kiln::ReduceOp op) override {
    return op == kiln::ReduceOp::sum ? 2 * value : value;
  }
};

}  // namespace

TEST_CASE("gradients reach the communicator bucket by bucket, once per step", "[runtime]") {
  const ModelConfig m = model(3, 2, 16, 30, 8);
  TrainConfig t = train(2, 8, 1e-3);
  t.grad_accum = 3;
  t.bucket_bytes = 0;  // one bucket per layer
  RecordingCommunicator comm;
  Trainer a(m, t, kiln::make_cpu_backend(kiln::DType::f32, 1), 2, &comm);
  Trainer b(m, t, kiln::make_cpu_backend(kiln::DType::f32, 1), 2);
  auto rng = kiln::test::make_rng(12);
  const auto in = random_tokens(48, 30, rng), tg = random_tokens(48, 30, rng);
  for (int step = 0; step < 2; ++step) {
    comm.calls.clear();
    CHECK(a.step(in, tg).loss == b.step(in, tg).loss);
    // Only the last micro-step reduces: one call per bucket in backward order, started without
    // waiting, then the loss; one wait for them all.
    const auto& buckets = a.layout().buckets();
    REQUIRE(comm.calls.size() == buckets.size() + 1);
    std::vector<float> g = a.gradients();
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      CHECK(comm.calls[i].count == buckets[i].end - buckets[i].begin);
      CHECK(comm.calls[i].dtype == kiln::DType::f32);
      CHECK(comm.calls[i].started);
      const auto* base = static_cast<const char*>(comm.calls[0].data) - buckets[0].begin * 4;
      CHECK(static_cast<const char*>(comm.calls[i].data) - base == buckets[i].begin * 4);
    }
    CHECK(comm.calls.back().count == 1);
    CHECK(comm.calls.back().dtype == kiln::DType::f64);
    CHECK_FALSE(comm.calls.back().started);
    CHECK(comm.waits == step + 1);
  }
  CHECK(a.parameters() == b.parameters());
}
