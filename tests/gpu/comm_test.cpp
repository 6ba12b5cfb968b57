// The communicators on a GPU: the NCCL communicator at world size 1 end to end (every collective,
// the ordering with the caller's stream, the watchdog firing on a collective held past its
// deadline), the in-process communicator with N logical ranks on one device against the host
// in-process result (bitwise), and data-parallel training on the cuda backend with in-process
// ranks (ranks bitwise equal, ZeRO-1 bitwise equal to plain data parallelism, close to one rank
// with the whole batch).
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/communicator.hpp"
#include "kiln/launch.hpp"
#include "kiln/trainer.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/support.hpp"

using kiln::Communicator;
using kiln::DType;
using kiln::ReduceOp;
using kiln::test::DeviceBuffer;
using namespace std::chrono_literals;

namespace {

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(s); }
};

std::vector<float> random_floats(std::size_t n, uint64_t stream) {
  auto rng = kiln::test::make_rng(stream);
  return kiln::test::random_uniform(n, -2.0f, 2.0f, rng);
}

// Blocks `stream` until the returned flag is set (a host function waiting on it).
struct StreamGate {
  std::atomic<bool> open{false};
  static void CUDART_CB wait(void* self) {
    auto* g = static_cast<StreamGate*>(self);
    while (!g->open.load())
      std::this_thread::sleep_for(1ms);
  }
  void close_on(cudaStream_t s) { KILN_CUDA_CHECK(cudaLaunchHostFunc(s, &StreamGate::wait, this)); }
};

}  // namespace

TEST_CASE("NCCL at world size 1: every collective, ordered with the caller's stream",
          "[comm][smoke]") {
  kiln::LaunchInfo solo;  // rank 0 of 1
  auto comm = kiln::make_nccl_communicator(solo, 0);
  CHECK(comm->world_size() == 1);
  CHECK_THAT(comm->description(), Catch::Contains("nccl"));
  Stream stream;
  const std::size_t n = 4099;
  const auto x = random_floats(n, 1);
  DeviceBuffer<float> d(x);
  // A sum or mean over one rank is the identity, in every dtype NCCL reduces.
  comm->all_reduce(d.get(), static_cast<int64_t>(n), DType::f32, ReduceOp::sum, stream.s);
  comm->all_reduce(d.get(), static_cast<int64_t>(n), DType::f32, ReduceOp::mean, stream.s);
  const std::vector<int64_t> bounds{3, static_cast<int64_t>(n) - 5};
  comm->reduce_scatter(d.get(), bounds, DType::f32, ReduceOp::sum, stream.s);
  comm->all_gather(d.get(), static_cast<int64_t>(n), DType::f32, stream.s);
  comm->broadcast(d.get(), static_cast<int64_t>(n), DType::f32, 0, stream.s);
  comm->start_all_reduce(d.get(), static_cast<int64_t>(n), DType::f32, ReduceOp::max, stream.s);
  comm->wait_started(stream.s);
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream.s));
  CHECK(d.download() == x);
  DeviceBuffer<double> d64(std::vector<double>(17, 0.25));
  comm->all_reduce(d64.get(), 17, DType::f64, ReduceOp::sum, stream.s);
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream.s));
  CHECK(d64.download() == std::vector<double>(17, 0.25));
  comm->barrier();
  CHECK(comm->all_reduce_value(2.5, ReduceOp::sum) == 2.5);
  CHECK(comm->all_reduce_value(-1.0, ReduceOp::max) == -1.0);

  // Ordering: a collective issued on a stream whose earlier work is held back by a gate runs
  // after that work, and the caller's later work runs after it.
  StreamGate gate;
  DeviceBuffer<float> e(std::vector<float>(n, 1.0f));
  gate.close_on(stream.s);
  KILN_CUDA_CHECK(cudaMemsetAsync(e.get(), 0, n * sizeof(float), stream.s));
  comm->all_reduce(e.get(), static_cast<int64_t>(n), DType::f32, ReduceOp::sum, stream.s);
  std::vector<float> out(n, -1.0f);
  KILN_CUDA_CHECK(
      cudaMemcpyAsync(out.data(), e.get(), n * sizeof(float), cudaMemcpyDeviceToHost, stream.s));
  std::this_thread::sleep_for(50ms);
  gate.open = true;
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream.s));
  CHECK(out == std::vector<float>(n, 0.0f));
}

TEST_CASE("the NCCL watchdog aborts a collective held past its deadline and reports it", "[comm]") {
  kiln::CommOptions options;
  options.timeout = 300ms;
  std::mutex m;
  std::vector<kiln::CommFailure> failures;
  options.on_failure = [&](const kiln::CommFailure& f) {
    std::lock_guard<std::mutex> lock(m);
    failures.push_back(f);
  };
  auto comm = kiln::make_nccl_communicator(kiln::LaunchInfo{}, 0, options);
  Stream stream;
  DeviceBuffer<float> d(std::vector<float>(64, 1.0f));
  comm->barrier();  // #1
  // The caller's stream is held: the all-reduce (#2) cannot start, let alone finish, in time.
  // The gate opens after a while in any case: NCCL's abort may wait for the work it aborts.
  StreamGate gate;
  gate.close_on(stream.s);
  const auto start = std::chrono::steady_clock::now();
  comm->start_all_reduce(d.get(), 64, DType::f32, ReduceOp::sum, stream.s);
  std::thread opener([&] {
    std::this_thread::sleep_for(1500ms);
    gate.open = true;
  });
  double reported = -1;
  for (int i = 0; i < 1000 && reported < 0; ++i) {
    {
      std::lock_guard<std::mutex> lock(m);
      if (!failures.empty()) {
        reported = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  opener.join();
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream.s));
  INFO("reported after " << reported << " s");
  CHECK(reported >= 0.25);
  CHECK(reported < 8.0);
  {
    std::lock_guard<std::mutex> lock(m);
    REQUIRE(failures.size() == 1);
    const kiln::CommFailure& f = failures[0];
    CHECK(f.rank == 0);
    CHECK(f.status == kiln::Status::timeout);
    CHECK(f.operation == "all_reduce");
    CHECK(f.sequence == 2);
    CHECK_THAT(f.message, Catch::Contains("all_reduce #2") && Catch::Contains("rank 0"));
  }
  // Every later call reports the failure instead of using the aborted communicator.
  try {
    comm->all_reduce(d.get(), 64, DType::f32, ReduceOp::sum, stream.s);
    FAIL("no error");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::timeout);
    CHECK_THAT(e.message(), Catch::Contains("all_reduce #2"));
  }
}

TEST_CASE("in-process ranks on one GPU give the host communicator's results, bitwise", "[comm]") {
  const int world = 3;
  const std::size_t n = 5003;
  std::vector<std::vector<float>> x(world);
  for (int r = 0; r < world; ++r)
    x[static_cast<std::size_t>(r)] = random_floats(n, 10 + static_cast<uint64_t>(r));
  const std::vector<int64_t> bounds{1, 1000, 1000, 4999};

  // The host reference: the same collectives on host buffers.
  auto host = x;
  kiln::run_in_process(world, kiln::BackendKind::cpu, {}, [&](Communicator& c) {
    float* p = host[static_cast<std::size_t>(c.rank())].data();
    c.all_reduce(p, 2000, DType::f32, ReduceOp::mean, nullptr);
    c.reduce_scatter(p, bounds, DType::f32, ReduceOp::sum, nullptr);
    c.all_gather(p, 1001, DType::f32, nullptr);
    c.broadcast(p + 4000, 1003, DType::f32, 1, nullptr);
  });

  std::vector<std::vector<float>> device(world);
  kiln::run_in_process(world, kiln::BackendKind::cuda, {}, [&](Communicator& c) {
    KILN_CUDA_CHECK(cudaSetDevice(0));
    Stream stream;
    const std::size_t r = static_cast<std::size_t>(c.rank());
    DeviceBuffer<float> d(x[r]);
    // The start_* variant with its wait, then the ordered ones.
    c.start_all_reduce(d.get(), 2000, DType::f32, ReduceOp::mean, stream.s);
    c.wait_started(stream.s);
    c.reduce_scatter(d.get(), bounds, DType::f32, ReduceOp::sum, stream.s);
    c.all_gather(d.get(), 1001, DType::f32, stream.s);
    c.broadcast(d.get() + 4000, 1003, DType::f32, 1, stream.s);
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    device[r] = d.download();
  });
  // Both in-process implementations leave a rank's elements outside its reduce_scatter range
  // untouched (the contract leaves them unspecified), so the whole buffers compare.
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r);
    const auto& h = host[static_cast<std::size_t>(r)];
    const auto& g = device[static_cast<std::size_t>(r)];
    REQUIRE(g.size() == h.size());
    CHECK(std::memcmp(g.data(), h.data(), n * sizeof(float)) == 0);
  }
  // The collectives did act: rank 0's gathered block 2 is rank 2's reduced range.
  CHECK(device[0][2500] == device[2][2500]);
  CHECK(device[0][2500] != x[0][2500]);
}

namespace {

kiln::ModelConfig small_model() {
  kiln::ModelConfig c;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 128;
  c.vocab_size = 211;
  c.max_seq_len = 64;
  return c.resolved();
}

kiln::TrainConfig small_train(int64_t B, bool zero1, double clip) {
  kiln::TrainConfig t;
  t.batch = B;
  t.seq_len = 64;
  t.optimizer.lr = 1e-3;
  t.optimizer.grad_clip = clip;
  t.optimizer.warmup_steps = 0;
  t.optimizer.schedule = kiln::LrSchedule::constant;
  t.zero1 = zero1;
  t.bucket_bytes = 64 << 10;  // a few buckets, so that the overlap path runs
  return t;
}

// Trains `steps` steps on `world` in-process ranks of the cuda backend; returns every rank's
// master weights after the last step.
std::vector<std::vector<float>> train_on_gpu(int world, const kiln::TrainConfig& t,
                                             const std::vector<std::vector<int32_t>>& batches,
                                             int steps) {
  std::vector<std::vector<float>> out(static_cast<std::size_t>(world));
  kiln::run_in_process(world, kiln::BackendKind::cuda, {}, [&](Communicator& c) {
    auto backend = kiln::make_backend(kiln::BackendKind::cuda, 0);
    kiln::Trainer trainer(small_model(), t, backend, 3, &c);
    const std::size_t per = static_cast<std::size_t>(t.batch * t.seq_len);
    for (int s = 0; s < steps; ++s) {
      const auto& all = batches[static_cast<std::size_t>(s)];
      std::vector<int32_t> in(all.begin() + static_cast<std::ptrdiff_t>(c.rank() * per),
                              all.begin() + static_cast<std::ptrdiff_t>((c.rank() + 1) * per));
      std::vector<int32_t> tg(in.size());
      for (std::size_t i = 0; i < in.size(); ++i)
        tg[i] = (in[i] * 7 + 3) % 211;
      trainer.step(in, tg);
    }
    out[static_cast<std::size_t>(c.rank())] = trainer.parameters();  // collective under ZeRO-1
  });
  return out;
}

}  // namespace

TEST_CASE("data parallelism on the cuda backend with in-process ranks", "[comm]") {
  const int world = 2, steps = 3;
  auto rng = kiln::test::make_rng(40);
  std::uniform_int_distribution<int32_t> tok(0, 210);
  std::vector<std::vector<int32_t>> batches(steps);
  for (auto& b : batches) {
    b.resize(4 * 64);
    for (auto& x : b)
      x = tok(rng);
  }
  const auto plain = train_on_gpu(world, small_train(2, false, 0.0), batches, steps);
  const auto zero = train_on_gpu(world, small_train(2, true, 0.0), batches, steps);
  const auto one = train_on_gpu(1, small_train(4, false, 0.0), batches, steps);
  // Every rank holds the same weights, bitwise.
  CHECK(plain[1] == plain[0]);
  CHECK(zero[1] == zero[0]);
  // ZeRO-1 without clipping performs the same sums and the same element-wise updates.
  CHECK(zero[0] == plain[0]);
  // One rank with the whole batch: the same training up to the order of the gradient sums.
  double worst = 0, sum = 0;
  for (std::size_t i = 0; i < one[0].size(); ++i) {
    const double d = std::abs(static_cast<double>(one[0][i]) - plain[0][i]);
    worst = std::max(worst, d);
    sum += d;
  }
  const double mean = sum / static_cast<double>(one[0].size());
  INFO("max |difference| " << worst << ", mean " << mean);
  // Three AdamW steps of lr 1e-3 move a weight by about 3e-3 at most: bf16 rounding that differs
  // with the batch split may flip the sign of a near-zero gradient's update, never more; on
  // average the runs agree to a small fraction of one step.
  CHECK(worst <= 3 * 2e-3 + 1e-6);
  CHECK(mean < 2e-4);
  const auto fresh = [&] {
    std::vector<float> p;
    kiln::run_in_process(1, kiln::BackendKind::cuda, {}, [&](Communicator& c) {
      kiln::Trainer t(small_model(), small_train(4, false, 0.0),
                      kiln::make_backend(kiln::BackendKind::cuda, 0), 3, &c);
      p = t.parameters();
    });
    return p;
  }();
  // The training moved the weights (the comparison above is not of two untouched copies).
  double moved = 0;
  for (std::size_t i = 0; i < fresh.size(); ++i)
    moved = std::max(moved, static_cast<double>(std::abs(fresh[i] - plain[0][i])));
  CHECK(moved > 1e-3);
}
