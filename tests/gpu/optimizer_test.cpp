// The optimizer kernels against kiln::ref (double): AdamW over a list of tensors of awkward
// sizes (empty, 1, one chunk, one chunk plus one, a tail not a multiple of 4), decay per tensor,
// the clip scale read from device memory, the bf16 copy (round to nearest even exactly; stochastic
// rounding reproducible and unbiased), NaN propagation, twice bitwise; the global norm and its
// clip scale, deterministic, chained into AdamW as a training step does.
#include <catch2/catch.hpp>

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/optimizer/optimizer_ref.hpp"
#include "kernels/optimizer/stochastic_round.hpp"
#include "kiln/optimizer.h"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/support.hpp"

namespace {

using kiln::test::DeviceBuffer;
constexpr int64_t K = KILN_MULTI_TENSOR_CHUNK;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

uint16_t rne_bits(float x) {
  const __nv_bfloat16 b = __float2bfloat16(x);
  uint16_t bits;
  std::memcpy(&bits, &b, 2);
  return bits;
}

// One parameter tensor: host state and its device buffers.
struct Tensor {
  int64_t n;
  bool decay, copy;
  std::vector<float> master, m, v, grad;
  DeviceBuffer<float> d_master, d_m, d_v, d_grad;
  DeviceBuffer<uint16_t> d_param;
};

struct Model {
  std::vector<Tensor> tensors;
  DeviceBuffer<kiln_adamw_tensor_t> table;
  int64_t total_chunks = 0;

  // Uploads the host state (fresh each call) and the prepared table.
  void upload() {
    std::vector<kiln_adamw_tensor_t> host;
    for (Tensor& t : tensors) {
      t.d_master = DeviceBuffer<float>(t.master);
      t.d_m = DeviceBuffer<float>(t.m);
      t.d_v = DeviceBuffer<float>(t.v);
      t.d_grad = DeviceBuffer<float>(t.grad);
      t.d_param = DeviceBuffer<uint16_t>(static_cast<size_t>(t.n));
      t.d_param.poison();
      kiln_adamw_tensor_t e{};
      e.master = t.d_master.get();
      e.m = t.d_m.get();
      e.v = t.d_v.get();
      e.grad = t.d_grad.get();
      e.param = t.copy ? t.d_param.get() : nullptr;
      e.n = t.n;
      e.decay = t.decay;
      host.push_back(e);
    }
    total_chunks = kiln::adamw_prepare(host.data(), static_cast<int>(host.size()));
    table = DeviceBuffer<kiln_adamw_tensor_t>(host);
  }
};

Model make_model(const std::vector<int64_t>& sizes, std::uint64_t stream) {
  auto rng = kiln::test::make_rng(stream);
  Model model;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor t;
    t.n = sizes[i];
    t.decay = i % 2 == 0;
    t.copy = i % 3 != 2;
    t.master = kiln::test::random_uniform(t.n, -1.0f, 1.0f, rng);
    t.m = kiln::test::random_uniform(t.n, -0.01f, 0.01f, rng);
    t.v = kiln::test::random_uniform(t.n, 0.0f, 1e-4f, rng);
    t.grad = kiln::test::random_normal(t.n, 0.0f, 0.02f, rng);
    model.tensors.push_back(std::move(t));
  }
  return model;
}

kiln_adamw_config_t config(int64_t step) {
  kiln_adamw_config_t c{};
  c.lr = 1e-3f;
  c.beta1 = 0.9f;
  c.beta2 = 0.95f;
  c.eps = 1e-8f;
  c.weight_decay = 0.1f;
  c.step = step;
  return c;
}

kiln::ref::AdamWConfig ref_config(const kiln_adamw_config_t& c) {
  return {double(c.lr), double(c.beta1), double(c.beta2), double(c.eps), double(c.weight_decay)};
}

struct Downloaded {
  std::vector<float> master, m, v;
  std::vector<uint16_t> param;
};

std::vector<Downloaded> download(const Model& model) {
  std::vector<Downloaded> out;
  for (const Tensor& t : model.tensors)
    out.push_back(
        {t.d_master.download(), t.d_m.download(), t.d_v.download(), t.d_param.download()});
  return out;
}

// Checks the kernel's step against the double reference with the rule (baseline: the fp32
// reference) and the bf16 copy against round-to-nearest-even of the kernel's own master weights.
void check_step(const Model& model, const std::vector<Downloaded>& got,
                const kiln_adamw_config_t& c, double grad_scale) {
  for (size_t i = 0; i < model.tensors.size(); ++i) {
    const Tensor& t = model.tensors[i];
    INFO("tensor " << i << " n=" << t.n << (t.decay ? " decay" : ""));
    auto p = kiln::test::to_double(t.master), m = kiln::test::to_double(t.m),
         v = kiln::test::to_double(t.v);
    const auto g = kiln::test::to_double(t.grad);
    kiln::ref::adamw_ref(p.data(), m.data(), v.data(), g.data(), t.n, ref_config(c), c.step,
                         grad_scale, t.decay);
    auto bp = t.master, bm = t.m, bv = t.v;
    kiln::ref::adamw_ref<float, float>(bp.data(), bm.data(), bv.data(), t.grad.data(), t.n,
                                       ref_config(c), c.step, grad_scale, t.decay);
    // Absolute terms of about one fp32 ulp at each state's magnitude (master in (-1, 1), m about
    // 1e-2, v about 1e-4): a tensor of a few elements may have an exact baseline while the
    // kernel's fused multiply-adds round once differently.
    kiln::test::check_rule("master", p, kiln::test::to_double(got[i].master),
                           kiln::test::to_double(bp), 1.2e-7);
    kiln::test::check_rule("m", m, kiln::test::to_double(got[i].m), kiln::test::to_double(bm),
                           2e-9);
    kiln::test::check_rule("v", v, kiln::test::to_double(got[i].v), kiln::test::to_double(bv),
                           2e-11);
    int64_t wrong = 0, written = 0;
    for (int64_t k = 0; k < t.n; ++k) {
      if (t.copy) {
        const float x = got[i].master[k];
        const uint16_t want = rne_bits(x);
        wrong += std::isnan(x) ? !((got[i].param[k] & 0x7F80) == 0x7F80 && (got[i].param[k] & 0x7F))
                               : got[i].param[k] != want;
      } else {
        written += got[i].param[k] != 0xFFFF;  // the poison stays: no copy was asked for
      }
    }
    CHECK(wrong == 0);
    CHECK(written == 0);
  }
}

const std::vector<int64_t> kSizes{0, 1, 3, 768, K, K + 1, 3 * K + 5, 2304 * 768 + 2, 50257 * 8};

}  // namespace

TEST_CASE("adamw_step matches the reference over a list of tensors", "[optimizer]") {
  Model model = make_model(kSizes, 601);
  model.upload();
  const auto c = config(7);
  DeviceBuffer<float> scale(std::vector<float>{0.5f});
  kiln::adamw_step(model.table.get(), static_cast<int>(model.tensors.size()), model.total_chunks, c,
                   scale.get(), nullptr);
  const auto first = download(model);
  check_step(model, first, c, 0.5);

  // Twice from the same state: bitwise the same.
  model.upload();
  kiln::adamw_step(model.table.get(), static_cast<int>(model.tensors.size()), model.total_chunks, c,
                   scale.get(), nullptr);
  const auto second = download(model);
  for (size_t i = 0; i < first.size(); ++i) {
    CHECK(kiln::test::bitwise_equal(first[i].master, second[i].master));
    CHECK(kiln::test::bitwise_equal(first[i].m, second[i].m));
    CHECK(kiln::test::bitwise_equal(first[i].v, second[i].v));
    CHECK(kiln::test::bitwise_equal(first[i].param, second[i].param));
  }

  // No scale pointer: scale 1; the first step, where the bias corrections matter most.
  model.upload();
  const auto c1 = config(1);
  kiln::adamw_step(model.table.get(), static_cast<int>(model.tensors.size()), model.total_chunks,
                   c1, nullptr, nullptr);
  check_step(model, download(model), c1, 1.0);
}

TEST_CASE("adamw_step propagates NaN: per element from the gradient, everywhere from the scale",
          "[optimizer]") {
  Model model = make_model({K + 7, 100}, 602);
  model.tensors[0].grad[5] = kNaN;
  model.tensors[0].grad[K + 6] = std::numeric_limits<float>::infinity();
  model.upload();
  const auto c = config(3);
  kiln::adamw_step(model.table.get(), 2, model.total_chunks, c, nullptr, nullptr);
  const auto got = download(model);
  check_step(model, got, c, 1.0);  // non-finite exactly where the reference has them
  CHECK(std::isnan(got[0].master[5]));
  CHECK(std::isfinite(got[0].master[4]));

  model.upload();
  DeviceBuffer<float> nan_scale(std::vector<float>{kNaN});
  kiln::adamw_step(model.table.get(), 2, model.total_chunks, c, nan_scale.get(), nullptr);
  const auto all = download(model);
  int64_t finite = 0;
  for (const auto& d : all)
    for (float x : d.master)
      finite += std::isfinite(x);
  CHECK(finite == 0);
}

TEST_CASE("adamw_step reads its skip verdict on the device", "[optimizer][smoke]") {
  Model model = make_model({K + 5, 768, 3}, 605);
  model.upload();
  auto c = config(4);
  DeviceBuffer<int32_t> skip(std::vector<int32_t>{1});
  c.skip = skip.get();
  kiln::adamw_step(model.table.get(), 3, model.total_chunks, c, nullptr, nullptr);
  const auto skipped = download(model);
  for (size_t i = 0; i < model.tensors.size(); ++i) {
    INFO("tensor " << i);
    CHECK(kiln::test::bitwise_equal(skipped[i].master, model.tensors[i].master));
    CHECK(kiln::test::bitwise_equal(skipped[i].m, model.tensors[i].m));
    CHECK(kiln::test::bitwise_equal(skipped[i].v, model.tensors[i].v));
    int64_t written = 0;
    for (uint16_t b : skipped[i].param)
      written += b != 0xFFFF;  // the poisoned copies stay poisoned
    CHECK(written == 0);
  }
  // A zero verdict is an ordinary step.
  model.upload();
  skip.upload(std::vector<int32_t>{0});
  kiln::adamw_step(model.table.get(), 3, model.total_chunks, c, nullptr, nullptr);
  check_step(model, download(model), c, 1.0);
}

TEST_CASE("adamw_step stochastic rounding: exact hash, reproducible, unbiased", "[optimizer]") {
  // lr = 0 and zero gradients keep the master weights as they are, so the bf16 copy isolates the
  // rounding: x lies 0.3 of the way from one bf16 value to the next.
  const int64_t n = kiln::test::quick_mode() ? (1 << 18) + 3 : (1 << 22) + 3;
  const float lo = 1.0f, ulp = 1.0f / 128.0f, x = lo + 0.3f * ulp;
  Model model;
  for (int i = 0; i < 2; ++i) {
    Tensor t;
    t.n = i == 0 ? n : 5;
    t.decay = false;
    t.copy = true;
    t.master.assign(t.n, i == 0 ? x : -x);
    t.m.assign(t.n, 0.0f);
    t.v.assign(t.n, 0.0f);
    t.grad.assign(t.n, 0.0f);
    model.tensors.push_back(std::move(t));
  }
  auto c = config(12);
  c.lr = 0.0f;
  c.stochastic_rounding = 1;
  c.seed = 0x5eed;
  auto run = [&](const kiln_adamw_config_t& cfg) {
    model.upload();
    kiln::adamw_step(model.table.get(), 2, model.total_chunks, cfg, nullptr, nullptr);
    return download(model);
  };
  const auto a = run(c);
  // Bit for bit what the shared host code computes for (seed, step, tensor, element).
  int64_t mismatches = 0, moved = 0, up = 0;
  for (int i = 0; i < 2; ++i) {
    const uint64_t key = kiln::sr::stream_key(c.seed, uint64_t(c.step), uint64_t(i));
    for (int64_t k = 0; k < model.tensors[i].n; ++k) {
      moved += a[i].master[k] != model.tensors[i].master[k];
      const uint64_t bits = kiln::sr::group_bits(key, uint64_t(k / 4));
      const uint16_t want =
          kiln::sr::round_bf16_bits(a[i].master[k], uint32_t(bits >> (16 * (k % 4))));
      mismatches += a[i].param[k] != want;
      if (i == 0) up += a[i].param[k] == rne_bits(lo + ulp);
    }
  }
  CHECK(moved == 0);
  CHECK(mismatches == 0);
  // Unbiased: the fraction rounded up is 0.3 within 6 standard deviations.
  const double frac = double(up) / double(n);
  const double sigma = std::sqrt(0.3 * 0.7 / double(n));
  INFO("rounded up " << frac);
  CHECK(std::fabs(frac - 0.3) < 6 * sigma);

  const auto again = run(c);
  CHECK(kiln::test::bitwise_equal(a[0].param, again[0].param));
  auto other = c;
  other.seed = 0x5eee;
  const auto b = run(other);
  auto later = c;
  later.step = 13;
  const auto d = run(later);
  int64_t differ_seed = 0, differ_step = 0;
  for (int64_t k = 0; k < n; ++k) {
    differ_seed += a[0].param[k] != b[0].param[k];
    differ_step += a[0].param[k] != d[0].param[k];
  }
  // Independent roundings differ with probability 2 * 0.3 * 0.7 = 0.42.
  CHECK(differ_seed > n / 3);
  CHECK(differ_step > n / 3);
}

TEST_CASE("global_norm: the reference's norm and clip scale, deterministically", "[optimizer]") {
  auto rng = kiln::test::make_rng(603);
  std::vector<int64_t> sizes{0, 1, 5, K, K + 1, 100000, 3 * K + 3};
  if (!kiln::test::quick_mode()) sizes.push_back(30'000'001);  // about 1800 chunks
  std::vector<std::vector<float>> data;
  std::vector<DeviceBuffer<float>> buffers;
  std::vector<kiln_norm_tensor_t> host;
  for (int64_t n : sizes) {
    data.push_back(kiln::test::random_normal(n, 0.0f, 0.01f, rng));
    buffers.emplace_back(data.back());
    host.push_back({buffers.back().get(), n, 0});
  }
  const int count = static_cast<int>(host.size());
  const int64_t total = kiln::global_norm_prepare(host.data(), count);
  DeviceBuffer<kiln_norm_tensor_t> table(host);
  DeviceBuffer<unsigned char> ws(kiln::global_norm_workspace_size(total));
  DeviceBuffer<float> out(2);

  std::vector<const float*> ptrs;
  for (const auto& d : data)
    ptrs.push_back(d.data());
  const double ref = kiln::ref::global_norm_ref(ptrs.data(), sizes.data(), count);
  float base_sum = 0;  // fp32, one element after another
  for (const auto& d : data)
    for (float x : d)
      base_sum += x * x;
  const double base = std::sqrt(double(base_sum));

  for (const float max_norm : {0.0f, 1.0f, 1e6f}) {
    INFO("max_norm " << max_norm);
    out.poison();
    kiln::global_norm(out.get(), table.get(), count, total, max_norm, ws.get(), ws.size(), nullptr);
    const auto got = out.download();
    kiln::test::check_rule("norm", {ref}, {double(got[0])}, {base}, 1e-6 * ref);
    CHECK(double(got[1]) == Approx(kiln::ref::clip_scale_ref(ref, max_norm)).epsilon(1e-5));
    if (max_norm == 1.0f) CHECK(got[1] < 1.0f);  // the norm is far above 1
    out.poison();
    kiln::global_norm(out.get(), table.get(), count, total, max_norm, ws.get(), ws.size(), nullptr);
    CHECK(kiln::test::bitwise_equal(got, out.download()));
  }

  // A NaN anywhere makes the norm and the scale NaN.
  data[5][777] = kNaN;
  buffers[5].upload(data[5]);
  kiln::global_norm(out.get(), table.get(), count, total, 1.0f, ws.get(), ws.size(), nullptr);
  const auto nan = out.download();
  CHECK(std::isnan(nan[0]));
  CHECK(std::isnan(nan[1]));
}

TEST_CASE("global_norm then adamw_step: the clip scale never leaves the device",
          "[optimizer][smoke]") {
  Model model = make_model({K + 3, 4096, 33}, 604);
  // Large gradients so the clip bites.
  for (Tensor& t : model.tensors)
    for (float& g : t.grad)
      g *= 100.0f;
  model.upload();
  std::vector<kiln_norm_tensor_t> host;
  std::vector<const float*> ptrs;
  std::vector<int64_t> sizes;
  for (const Tensor& t : model.tensors) {
    host.push_back({t.d_grad.get(), t.n, 0});
    ptrs.push_back(t.grad.data());
    sizes.push_back(t.n);
  }
  const int64_t total = kiln::global_norm_prepare(host.data(), 3);
  DeviceBuffer<kiln_norm_tensor_t> table(host);
  DeviceBuffer<unsigned char> ws(kiln::global_norm_workspace_size(total));
  DeviceBuffer<float> out(2);
  const float max_norm = 1.0f;
  kiln::global_norm(out.get(), table.get(), 3, total, max_norm, ws.get(), ws.size(), nullptr);
  const auto c = config(5);
  kiln::adamw_step(model.table.get(), 3, model.total_chunks, c, out.get() + 1, nullptr);
  const double scale =
      kiln::ref::clip_scale_ref(kiln::ref::global_norm_ref(ptrs.data(), sizes.data(), 3), max_norm);
  REQUIRE(scale < 0.5);
  const float used = out.download()[1];
  CHECK(double(used) == Approx(scale).epsilon(1e-5));
  check_step(model, download(model), c, double(used));
}
