// Data-parallel training on the cpu backend with in-process ranks: N ranks with batch B against one
// rank with batch N x B (fp64, where only the summation order differs), every rank's parameters
// bitwise identical after every step, ZeRO-1 against plain data parallelism (bitwise when no
// clipping couples the shards), gradient accumulation across ranks, bucket sizes, a rejected batch
// on one rank, and checkpoints resumed at the same world size (bit-exact) and at others.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/communicator.hpp"
#include "kiln/trainer.hpp"
#include "tests/common/files.hpp"
#include "tests/common/support.hpp"

using kiln::Communicator;
using kiln::ModelConfig;
using kiln::TrainConfig;
using kiln::Trainer;

namespace {

ModelConfig tiny_model() {
  ModelConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.vocab_size = 37;
  c.max_seq_len = 8;
  return c.resolved();
}

TrainConfig config(int64_t B, int64_t accum = 1, double clip = 1.0) {
  TrainConfig t;
  t.batch = B;
  t.seq_len = 8;
  t.grad_accum = accum;
  t.optimizer.lr = 3e-3;
  t.optimizer.weight_decay = 0.1;
  t.optimizer.grad_clip = clip;
  t.optimizer.warmup_steps = 0;
  t.optimizer.schedule = kiln::LrSchedule::constant;
  return t;
}

// The global batch of every step: `rows` sequences of T + 1 tokens (inputs and next tokens).
struct Data {
  int64_t rows, T;
  std::vector<std::vector<int32_t>> steps;  // per step: rows x (T + 1)
  Data(int64_t rows_, int64_t T_, int n_steps, uint64_t stream) : rows(rows_), T(T_) {
    auto rng = kiln::test::make_rng(stream);
    std::uniform_int_distribution<int32_t> d(0, 36);
    for (int s = 0; s < n_steps; ++s) {
      std::vector<int32_t> v(static_cast<std::size_t>(rows * (T + 1)));
      for (auto& x : v)
        x = d(rng);
      steps.push_back(std::move(v));
    }
  }
  // Rows [first, first + n) of step s as inputs and targets.
  void batch(int s, int64_t first, int64_t n, std::vector<int32_t>& in,
             std::vector<int32_t>& tg) const {
    in.clear();
    tg.clear();
    const auto& v = steps[static_cast<std::size_t>(s)];
    for (int64_t r = first; r < first + n; ++r) {
      for (int64_t t = 0; t < T; ++t) {
        in.push_back(v[static_cast<std::size_t>(r * (T + 1) + t)]);
        tg.push_back(v[static_cast<std::size_t>(r * (T + 1) + t + 1)]);
      }
    }
  }
};

std::shared_ptr<kiln::Backend> backend(kiln::DType dt) {
  return kiln::make_cpu_backend(dt, 1);
}

kiln::CommOptions options() {
  kiln::CommOptions o;
  o.timeout = std::chrono::seconds(30);
  return o;
}

struct Run {
  std::vector<std::vector<std::vector<double>>> params;  // [rank][step] -> parameters after it
  std::vector<std::vector<kiln::StepResult>> results;    // [rank][step]
};

// Trains `steps` steps on `world` in-process ranks, rank r taking rows [r x rows/world, ...) of
// each global batch (micro-batch a of rank r: the a-th block of B rows of its part).
Run train_ranks(int world, const TrainConfig& t, const Data& data, int steps, kiln::DType dt,
                const std::function<void(Trainer&)>& before = {}) {
  Run run;
  run.params.resize(static_cast<std::size_t>(world));
  run.results.resize(static_cast<std::size_t>(world));
  kiln::run_in_process(world, kiln::BackendKind::cpu, options(), [&](Communicator& comm) {
    const std::size_t r = static_cast<std::size_t>(comm.rank());
    Trainer trainer(tiny_model(), t, backend(dt), 7, &comm);
    if (before) before(trainer);
    const int64_t mine = t.batch * t.grad_accum;
    REQUIRE(mine * world == data.rows);
    std::vector<int32_t> in, tg;
    for (int s = 0; s < steps; ++s) {
      data.batch(s, comm.rank() * mine, mine, in, tg);
      run.results[r].push_back(trainer.step(in, tg));
      run.params[r].push_back(trainer.parameters_f64());
    }
  });
  return run;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

void check_identical_ranks(const Run& run) {
  for (std::size_t r = 1; r < run.params.size(); ++r) {
    for (std::size_t s = 0; s < run.params[r].size(); ++s) {
      INFO("rank " << r << " parameters " << s);
      REQUIRE(run.params[r][s] == run.params[0][s]);  // bitwise
    }
    for (std::size_t s = 0; s < run.results[r].size(); ++s) {
      INFO("rank " << r << " step " << s);
      REQUIRE(run.results[r][s].loss == run.results[0][s].loss);
      REQUIRE(run.results[r][s].grad_norm == run.results[0][s].grad_norm);
    }
  }
}

}  // namespace

TEST_CASE("N ranks with batch B train as one rank with batch N x B; ranks stay bitwise equal",
          "[dp]") {
  const int steps = 3;
  for (int world : {2, 3}) {
    INFO("world " << world);
    const Data data(2 * world, 8, steps, 100 + static_cast<uint64_t>(world));
    const Run one = train_ranks(1, config(2 * world), data, steps, kiln::DType::f64);
    const Run many = train_ranks(world, config(2), data, steps, kiln::DType::f64);
    check_identical_ranks(many);
    for (int s = 0; s < steps; ++s) {
      INFO("step " << s);
      // fp64: the per-rank partial sums only reassociate the gradient's sums.
      CHECK(many.results[0][static_cast<std::size_t>(s)].loss ==
            Approx(one.results[0][static_cast<std::size_t>(s)].loss).epsilon(1e-12));
      CHECK(many.results[0][static_cast<std::size_t>(s)].grad_norm ==
            Approx(one.results[0][static_cast<std::size_t>(s)].grad_norm).epsilon(1e-12));
      CHECK(max_abs_diff(many.params[0][static_cast<std::size_t>(s)],
                         one.params[0][static_cast<std::size_t>(s)]) < 1e-11);
    }
    // The steps did train: the parameters moved well beyond the tolerance.
    const Trainer fresh(tiny_model(), config(2), backend(kiln::DType::f64), 7);
    CHECK(max_abs_diff(one.params[0].back(), fresh.parameters_f64()) > 1e-3);
  }
}

TEST_CASE("gradient accumulation on N ranks equals the larger batch", "[dp]") {
  const int steps = 2;
  const Data data(8, 8, steps, 200);
  const Run one = train_ranks(1, config(8), data, steps, kiln::DType::f64);
  const Run accum = train_ranks(2, config(2, 2), data, steps, kiln::DType::f64);
  check_identical_ranks(accum);
  for (int s = 0; s < steps; ++s) {
    INFO("step " << s);
    CHECK(accum.results[0][static_cast<std::size_t>(s)].loss ==
          Approx(one.results[0][static_cast<std::size_t>(s)].loss).epsilon(1e-12));
    CHECK(max_abs_diff(accum.params[0][static_cast<std::size_t>(s)],
                       one.params[0][static_cast<std::size_t>(s)]) < 1e-11);
  }
}

TEST_CASE("ZeRO-1 equals plain data parallelism", "[dp]") {
  const int steps = 3, world = 3;
  const Data data(2 * world, 8, steps, 300);
  for (kiln::DType dt : {kiln::DType::f64, kiln::DType::f32}) {
    INFO(kiln::dtype_name(dt));
    // No clipping: the norm does not feed the update, and the reductions are the same sums in
    // the same order, so the results are bitwise equal.
    TrainConfig plain = config(2, 1, 0.0), zero = plain;
    zero.zero1 = true;
    const Run a = train_ranks(world, plain, data, steps, dt);
    const Run b = train_ranks(world, zero, data, steps, dt);
    check_identical_ranks(b);
    for (int s = 0; s < steps; ++s) {
      INFO("step " << s);
      CHECK(b.params[0][static_cast<std::size_t>(s)] == a.params[0][static_cast<std::size_t>(s)]);
      CHECK(b.results[0][static_cast<std::size_t>(s)].loss ==
            a.results[0][static_cast<std::size_t>(s)].loss);
    }
  }
  // Clipping: the norm is summed over the shards (another association of the same squares).
  TrainConfig plain = config(2, 1, 0.05), zero = plain;
  zero.zero1 = true;
  const Run a = train_ranks(world, plain, data, steps, kiln::DType::f64);
  const Run b = train_ranks(world, zero, data, steps, kiln::DType::f64);
  check_identical_ranks(b);
  for (int s = 0; s < steps; ++s) {
    INFO("step " << s);
    CHECK(a.results[0][static_cast<std::size_t>(s)].grad_norm > 0.05);  // clipping did act
    CHECK(b.results[0][static_cast<std::size_t>(s)].grad_norm ==
          Approx(a.results[0][static_cast<std::size_t>(s)].grad_norm).epsilon(1e-13));
    CHECK(max_abs_diff(b.params[0][static_cast<std::size_t>(s)],
                       a.params[0][static_cast<std::size_t>(s)]) < 1e-12);
  }
}

TEST_CASE("ZeRO-1 shards tile the parameters; each rank keeps only its optimizer state", "[dp]") {
  const int world = 3;
  TrainConfig t = config(1);
  t.zero1 = true;
  std::vector<std::pair<int64_t, int64_t>> shards(world);
  int64_t total = 0;
  std::size_t whole_moments = 0, sharded_moments = 0;
  kiln::run_in_process(world, kiln::BackendKind::cpu, options(), [&](Communicator& comm) {
    Trainer trainer(tiny_model(), t, backend(kiln::DType::f32), 7, &comm);
    shards[static_cast<std::size_t>(comm.rank())] = trainer.shard();
    total = trainer.layout().total();
    if (comm.rank() == 0) sharded_moments = trainer.plan().find("adam_m").bytes;
  });
  whole_moments = kiln::plan_training(tiny_model(), config(1),
                                      kiln::BackendTypes{kiln::DType::f32, kiln::DType::f32,
                                                         kiln::DType::f32, kiln::DType::f32, false},
                                      0)
                      .find("adam_m")
                      .bytes;
  CHECK(shards[0].first == 0);
  for (int r = 1; r < world; ++r)
    CHECK(shards[static_cast<std::size_t>(r)].first ==
          shards[static_cast<std::size_t>(r) - 1].second);
  CHECK(shards.back().second == total);
  CHECK(shards[0].first % kiln::ParamLayout::kAlign == 0);
  CHECK(shards[1].first % kiln::ParamLayout::kAlign == 0);
  CHECK(sharded_moments * world < whole_moments + world * kiln::ParamLayout::kAlign * 4 + 1);
  CHECK(sharded_moments * 2 < whole_moments);
}

TEST_CASE("bucket sizes change when reductions start, not what they compute", "[dp]") {
  const Data data(4, 8, 2, 400);
  TrainConfig t = config(2);
  t.bucket_bytes = 0;  // one bucket per layer
  const Run per_layer = train_ranks(2, t, data, 2, kiln::DType::f32);
  t.bucket_bytes = 1 << 30;  // everything in one bucket, started after the embeddings
  const Run one_bucket = train_ranks(2, t, data, 2, kiln::DType::f32);
  t.bucket_bytes = 6000;  // a few layers per bucket
  const Run some = train_ranks(2, t, data, 2, kiln::DType::f32);
  CHECK(per_layer.params[0] == one_bucket.params[0]);
  CHECK(per_layer.params[0] == some.params[0]);
}

TEST_CASE("a batch rejected on one rank fails the step on every rank, at once", "[dp]") {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::string> errors(2);
  std::mutex m;
  kiln::run_in_process(2, kiln::BackendKind::cpu, options(), [&](Communicator& comm) {
    Trainer trainer(tiny_model(), config(1), backend(kiln::DType::f32), 7, &comm);
    std::vector<int32_t> in(8, 3), tg(8, 4);
    if (comm.rank() == 1) in[5] = 99;  // outside the vocabulary of 37
    try {
      trainer.step(in, tg);
    } catch (const kiln::Error& e) {
      std::lock_guard<std::mutex> lock(m);
      errors[static_cast<std::size_t>(comm.rank())] = e.message();
    }
    // Both ranks are still in step: the next collective works.
    comm.barrier();
  });
  CHECK_THAT(errors[1], Catch::Contains("input token id 99"));
  CHECK_THAT(errors[0], Catch::Contains("another rank rejected its batch"));
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 10.0);
}

TEST_CASE("checkpoints resume bit-exactly at the same world size and at any other", "[dp]") {
  kiln::test::TempDir dir;
  const int steps = 4, mid = 2;
  const Data data(6, 8, steps, 500);
  TrainConfig zero = config(3);
  zero.zero1 = true;
  // Uninterrupted: 2 ranks, ZeRO-1, f32 (the checkpoint's precision).
  const Run straight = train_ranks(2, zero, data, steps, kiln::DType::f32);

  // The same run, saved after `mid` steps (sharded: index + 2 shard files) and resumed.
  const auto ckpt = dir / "run.ckpt";
  std::vector<std::vector<double>> saved(1);
  kiln::run_in_process(2, kiln::BackendKind::cpu, options(), [&](Communicator& comm) {
    Trainer trainer(tiny_model(), zero, backend(kiln::DType::f32), 7, &comm);
    std::vector<int32_t> in, tg;
    for (int s = 0; s < mid; ++s) {
      data.batch(s, comm.rank() * 3, 3, in, tg);
      trainer.step(in, tg);
    }
    trainer.save_checkpoint(ckpt, "loader state");
    if (comm.rank() == 0) saved[0] = trainer.parameters_f64();
  });
  const auto files = dir.list();
  CHECK(files.size() == 3);  // the index and one shard per rank
  CHECK(std::count_if(files.begin(), files.end(), [](const std::string& f) {
          return f.find("run.ckpt.step00000002.rank") == 0;
        }) == 2);

  auto resume = [&](int world, TrainConfig t) {
    Run run;
    run.params.resize(static_cast<std::size_t>(world));
    run.results.resize(static_cast<std::size_t>(world));
    t.batch = 6 / world;
    kiln::run_in_process(world, kiln::BackendKind::cpu, options(), [&](Communicator& comm) {
      const std::size_t r = static_cast<std::size_t>(comm.rank());
      Trainer trainer(tiny_model(), t, backend(kiln::DType::f32), 99, &comm);
      const kiln::CheckpointInfo info = trainer.load_checkpoint(ckpt);
      REQUIRE(info.step == mid);
      REQUIRE(info.data_state == "loader state");
      REQUIRE(trainer.step_count() == mid);
      run.params[r].push_back(trainer.parameters_f64());
      std::vector<int32_t> in, tg;
      for (int s = mid; s < steps; ++s) {
        data.batch(s, comm.rank() * t.batch, t.batch, in, tg);
        run.results[r].push_back(trainer.step(in, tg));
        run.params[r].push_back(trainer.parameters_f64());
      }
    });
    return run;
  };

  SECTION("same world size: bit-exact") {
    const Run r = resume(2, zero);
    check_identical_ranks(r);
    CHECK(r.params[0][0] == saved[0]);
    for (int s = mid; s < steps; ++s)
      CHECK(r.params[0][static_cast<std::size_t>(s - mid + 1)] ==
            straight.params[0][static_cast<std::size_t>(s)]);
  }
  SECTION("other world sizes, sharded or not") {
    TrainConfig plain = config(3);
    for (auto [world, t] :
         {std::pair{3, zero}, std::pair{1, plain}, std::pair{2, plain}, std::pair{6, zero}}) {
      INFO("world " << world << (t.zero1 ? " ZeRO-1" : " plain"));
      const Run r = resume(world, t);
      check_identical_ranks(r);
      // Loading moves values only: the weights are exactly those saved.
      CHECK(r.params[0][0] == saved[0]);
      // The same global batches: the same training up to f32 summation order.
      for (int s = mid; s < steps; ++s) {
        CHECK(max_abs_diff(r.params[0][static_cast<std::size_t>(s - mid + 1)],
                           straight.params[0][static_cast<std::size_t>(s)]) < 2e-5);
      }
    }
  }
  SECTION("a whole checkpoint resumes into shards, and a new save replaces the old files") {
    // Save the sharded state as a whole one (one rank), then resume it with ZeRO-1 on 3 ranks.
    const auto whole = dir / "whole.ckpt";
    {
      Trainer one(tiny_model(), config(6), backend(kiln::DType::f32), 1);
      one.load_checkpoint(ckpt);
      one.save_checkpoint(whole, "loader state");
    }
    std::vector<int> same(3, 0);
    kiln::run_in_process(3, kiln::BackendKind::cpu, options(), [&](Communicator& comm) {
      Trainer trainer(tiny_model(), zero, backend(kiln::DType::f32), 5, &comm);
      trainer.load_checkpoint(whole);
      same[static_cast<std::size_t>(comm.rank())] = trainer.parameters_f64() == saved[0];
      // Saving at the old path from 3 ranks: new shard files, the 2 old ones removed.
      trainer.save_checkpoint(ckpt, "later");
    });
    CHECK(same == std::vector<int>{1, 1, 1});
    const auto now = dir.list();
    CHECK(std::count_if(now.begin(), now.end(),
                        [](const std::string& f) { return f.find("run.ckpt.step") == 0; }) == 3);
    CHECK(std::count_if(now.begin(), now.end(), [](const std::string& f) {
            return f.find("rank00000-of-00003") != std::string::npos;
          }) == 1);
    std::vector<float> master;
    const kiln::CheckpointInfo info = kiln::read_checkpoint(ckpt, &master);
    CHECK(info.data_state == "later");
    for (std::size_t i = 0; i < master.size(); ++i)
      REQUIRE(static_cast<double>(master[i]) == saved[0][i]);
  }
}

TEST_CASE("a sharded checkpoint with a missing or foreign shard is refused on every rank", "[dp]") {
  kiln::test::TempDir dir;
  const auto ckpt = dir / "z.ckpt";
  TrainConfig zero = config(1);
  zero.zero1 = true;
  kiln::run_in_process(2, kiln::BackendKind::cpu, options(), [&](Communicator& comm) {
    Trainer trainer(tiny_model(), zero, backend(kiln::DType::f32), 7, &comm);
    trainer.save_checkpoint(ckpt);
  });
  std::string shard1;
  for (const auto& f : dir.list())
    if (f.find("rank00001") != std::string::npos) shard1 = f;
  REQUIRE(!shard1.empty());
  std::filesystem::rename(dir / shard1, dir / "moved");
  std::vector<std::string> errors(2);
  std::mutex m;
  kiln::run_in_process(2, kiln::BackendKind::cpu, options(), [&](Communicator& comm) {
    Trainer trainer(tiny_model(), zero, backend(kiln::DType::f32), 7, &comm);
    try {
      trainer.load_checkpoint(ckpt);
    } catch (const kiln::Error& e) {
      std::lock_guard<std::mutex> lock(m);
      errors[static_cast<std::size_t>(comm.rank())] = e.message();
    }
  });
  // Rank 1 needs the missing shard; rank 0 does not, but learns that loading failed.
  CHECK_THAT(errors[1], Catch::Contains(shard1));
  CHECK_THAT(errors[0], Catch::Contains("failed on rank 1"));
  // Loading a shard file directly is refused with a hint.
  std::filesystem::rename(dir / "moved", dir / shard1);
  Trainer one(tiny_model(), config(1), backend(kiln::DType::f32), 7);
  try {
    one.load_checkpoint(dir / shard1);
    FAIL("no error");
  } catch (const kiln::Error& e) {
    CHECK_THAT(e.message(), Catch::Contains("load the index file"));
  }
}
