// Attention kernels against the double reference, with FlashAttention's tolerance rule: every
// path (forced) must be within 2x the error of a plain bf16 computation (bf16 inputs, fp32
// arithmetic, P rounded to bf16 before the P V product, dS rounded before its products, bf16
// outputs) plus a quarter of a bf16 ulp of the tensor's peak. Outputs are poisoned with NaN before
// every call; shapes are ragged (not multiples of any tile), with GQA, Tq != Tk (rows that see no
// key), packed QKV strides, and the deterministic backward repeated bitwise.
#include <catch2/catch.hpp>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kernels/attention/attention.hpp"
#include "kernels/attention/attention_ref.hpp"
#include "kiln/attention.h"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/paths.hpp"

using kiln::test::DeviceBuffer;
using bf16 = __nv_bfloat16;

namespace {

struct Shape {
  int64_t B, Tq, Tk, NHq, NHkv, HD;
  bool causal;
  std::string str() const {
    std::ostringstream os;
    os << "B " << B << " Tq " << Tq << " Tk " << Tk << " NHq " << NHq << " NHkv " << NHkv << " HD "
       << HD << (causal ? " causal" : " bidirectional");
    return os.str();
  }
  double scale() const { return 1.0 / std::sqrt(static_cast<double>(HD)); }
  size_t q_elems() const { return static_cast<size_t>(B * Tq * NHq * HD); }
  size_t kv_elems() const { return static_cast<size_t>(B * Tk * NHkv * HD); }
  size_t lse_elems() const { return static_cast<size_t>(B * NHq * Tq); }
};

// Whether this device runs cuDNN's fused attention on kiln's graphs for sure: Hopper, where cuDNN
// 9.19 documents every shape the tests use (head dims up to 256, both backward algorithms).
bool cudnn_must_serve() {
  int device = 0, major = 0;
  return cudaGetDevice(&device) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
         major == 9;
}

// The paths this device can run, forced one by one. Every kiln path that exists for the device
// must serve head dims 64 and 128; cuDNN must serve everything on Hopper (elsewhere a refusal is
// reported, not failed).
std::vector<kiln_attention_impl_t> paths(const Shape& s, bool backward,
                                         bool deterministic = false) {
  std::vector<kiln_attention_impl_t> out;
  for (const auto impl :
       {KILN_ATTENTION_IMPL_SM80, KILN_ATTENTION_IMPL_SM90, KILN_ATTENTION_IMPL_CUDNN}) {
    kiln_attention_desc_t d;
    REQUIRE(kiln_attention_desc_init(&d, s.B, s.Tq, s.Tk, s.NHq, s.NHkv, s.HD, s.causal) ==
            KILN_STATUS_OK);
    d.impl = impl;
    d.deterministic = deterministic ? 1 : 0;
    kiln_attention_impl_t got;
    const kiln_status_t st = kiln_attention_resolve_impl(&d, backward ? 1 : 0, &got);
    INFO(s.str() << " [" << kiln_attention_impl_name(impl) << "]: " << kiln_last_error());
    if (st == KILN_STATUS_OK) {
      out.push_back(impl);
      continue;
    }
    CHECK(st == KILN_STATUS_NOT_SUPPORTED);  // the only acceptable refusal
    if (impl != KILN_ATTENTION_IMPL_CUDNN && (s.HD == 64 || s.HD == 128) &&
        kiln::test::hopper_paths_required())
      FAIL_CHECK("kiln's own path refused head dim " << s.HD
                                                     << " on compute capability 9.0 with "
                                                        "the sm_90a build");
    if (impl == KILN_ATTENTION_IMPL_CUDNN) {
      if (cudnn_must_serve()) FAIL_CHECK("cuDNN refused a shape it serves on Hopper");
      WARN("cuDNN refused " << s.str() << ": " << kiln_last_error());
    }
  }
  REQUIRE(!out.empty());
  return out;
}

// Logical (B, T, NH, HD) tensors held as floats of bf16 values, and their placement in device
// memory through strides (contiguous, or inside a packed QKV buffer).
struct Inputs {
  std::vector<float> q, k, v, dout;  // logical, contiguous, bf16-representable
};

Inputs make_inputs(const Shape& s, uint64_t stream) {
  auto rng = kiln::test::make_rng(stream);
  Inputs in;
  in.q = kiln::test::round_to_bf16(kiln::test::random_normal(s.q_elems(), 0.f, 1.f, rng));
  in.k = kiln::test::round_to_bf16(kiln::test::random_normal(s.kv_elems(), 0.f, 1.f, rng));
  in.v = kiln::test::round_to_bf16(kiln::test::random_normal(s.kv_elems(), 0.f, 1.f, rng));
  in.dout = kiln::test::round_to_bf16(kiln::test::random_normal(s.q_elems(), 0.f, 1.f, rng));
  return in;
}

// Copies logical (B, T, NH, HD) `x` into `buf` at `base` with strides `st`.
void scatter(std::vector<bf16>& buf, size_t base, const kiln_attention_strides_t& st,
             const std::vector<float>& x, int64_t B, int64_t T, int64_t NH, int64_t HD) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t d = 0; d < HD; ++d)
          buf[base + b * st.batch + t * st.token + h * st.head + d] =
              __float2bfloat16(x[((b * T + t) * NH + h) * HD + d]);
}
std::vector<double> gather(const std::vector<bf16>& buf, size_t base,
                           const kiln_attention_strides_t& st, int64_t B, int64_t T, int64_t NH,
                           int64_t HD) {
  std::vector<double> x(static_cast<size_t>(B * T * NH * HD));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t d = 0; d < HD; ++d)
          x[((b * T + t) * NH + h) * HD + d] =
              __bfloat162float(buf[base + b * st.batch + t * st.token + h * st.head + d]);
  return x;
}

std::vector<double> dbl(const std::vector<float>& x) {
  return std::vector<double>(x.begin(), x.end());
}

double peak(const std::vector<double>& x) {
  double m = 0;
  for (const double v : x)
    if (std::isfinite(v)) m = std::max(m, std::fabs(v));
  return m;
}

// A quarter of a bf16 ulp at the tensor's peak.
double atol_for(const std::vector<double>& ref) {
  return peak(ref) / 1024.0 + 1e-6;
}

struct FwdResult {
  std::vector<double> out, lse;
};

// Runs tasks 0 .. n - 1 on every core (the references below are the tests' host-side cost).
void parallel_for(int64_t n, const std::function<void(int64_t)>& task) {
  const int64_t threads = std::min<int64_t>(n, std::max(1u, std::thread::hardware_concurrency()));
  std::atomic<int64_t> next{0};
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (int64_t i = next++; i < n; i = next++)
        task(i);
    });
  for (auto& t : pool)
    t.join();
}

// The double reference, split into independent calls of the same reference run on every core:
// one per (batch, query head, block of query rows). A block of rows [r0, r1) sees the keys its
// rows see: with the causal mask (bottom-right) only the first Tk - Tq + r1, which keeps each
// row's mask offset Tk - Tq + r0 + j exactly; each output row is computed as in one call.
FwdResult reference_fwd(const Shape& s, const Inputs& in) {
  FwdResult r{std::vector<double>(s.q_elems()), std::vector<double>(s.lse_elems())};
  const auto q = dbl(in.q), k = dbl(in.k), v = dbl(in.v);
  const auto layout = kiln::ref::AttentionLayout::contiguous(s.Tq, s.Tk, s.NHq, s.NHkv, s.HD);
  const int64_t rep = s.NHq / s.NHkv;
  // Row blocks: about 64 tasks per (batch, head) pair at most, and none whose rows see no key.
  std::vector<int64_t> cuts{0};
  const int64_t rows = std::max<int64_t>(64, (s.Tq + 63) / 64);
  for (int64_t r1 = rows; r1 < s.Tq; r1 += rows)
    if (!s.causal || s.Tk - s.Tq + r1 >= 1) cuts.push_back(r1);
  cuts.push_back(s.Tq);
  const int64_t blocks = static_cast<int64_t>(cuts.size()) - 1;
  parallel_for(s.B * s.NHq * blocks, [&](int64_t task) {
    const int64_t blk = task % blocks, h = task / blocks % s.NHq, b = task / blocks / s.NHq;
    const int64_t r0 = cuts[blk], r1 = cuts[blk + 1];
    const int64_t tk = s.causal ? std::min(s.Tk, std::max<int64_t>(s.Tk - s.Tq + r1, 0)) : s.Tk;
    const int64_t qo = b * layout.q.batch + r0 * layout.q.token + h * s.HD;
    const int64_t ko = b * layout.k.batch + (h / rep) * s.HD;
    kiln::ref::attention_fwd_ref(r.out.data() + qo, r.lse.data() + (b * s.NHq + h) * s.Tq + r0,
                                 q.data() + qo, k.data() + ko, v.data() + ko, 1, r1 - r0, tk, 1, 1,
                                 s.HD, s.scale(), s.causal, layout);
  });
  return r;
}

struct Grads {
  std::vector<double> dq, dk, dv;
};

Grads reference_bwd(const Shape& s, const Inputs& in) {
  Grads g{std::vector<double>(s.q_elems()), std::vector<double>(s.kv_elems()),
          std::vector<double>(s.kv_elems())};
  const auto q = dbl(in.q), k = dbl(in.k), v = dbl(in.v), dout = dbl(in.dout);
  // One call per (batch, K/V head) on every core: dK and dV sum over that head's query heads.
  const auto layout = kiln::ref::AttentionLayout::contiguous(s.Tq, s.Tk, s.NHq, s.NHkv, s.HD);
  const int64_t rep = s.NHq / s.NHkv;
  parallel_for(s.B * s.NHkv, [&](int64_t task) {
    const int64_t b = task / s.NHkv, h = task % s.NHkv;
    const int64_t qo = b * layout.q.batch + h * rep * s.HD, ko = b * layout.k.batch + h * s.HD;
    kiln::ref::attention_bwd_ref(g.dq.data() + qo, g.dk.data() + ko, g.dv.data() + ko,
                                 dout.data() + qo, q.data() + qo, k.data() + ko, v.data() + ko, 1,
                                 s.Tq, s.Tk, rep, 1, s.HD, s.scale(), s.causal, layout);
  });
  return g;
}

float bf(float x) {
  return __bfloat162float(__float2bfloat16(x));
}

// The plain same-precision computation (forward and backward), row by row in fp32.
struct Baseline {
  FwdResult fwd;
  Grads grads;
};

Baseline baseline(const Shape& s, const Inputs& in, bool with_backward) {
  Baseline r;
  r.fwd.out.assign(s.q_elems(), 0.0);
  r.fwd.lse.assign(s.lse_elems(), 0.0);
  std::vector<float> dk(s.kv_elems(), 0.f), dv(s.kv_elems(), 0.f);
  if (with_backward) r.grads.dq.assign(s.q_elems(), 0.0);
  const int64_t group = s.NHq / s.NHkv;
  const float scale = static_cast<float>(s.scale());
  // One task per (batch, K/V head) on every core; within it the query heads and rows go in the
  // serial order, so dK and dV add up in the same order (the same bits) as one loop would.
  parallel_for(s.B * s.NHkv, [&](int64_t task) {
    const int64_t b = task / s.NHkv, hk = task % s.NHkv;
    std::vector<float> p(static_cast<size_t>(s.Tk)), acc(static_cast<size_t>(s.HD));
    for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
      for (int64_t i = 0; i < s.Tq; ++i) {
        const int64_t last = kiln::ref::attention_last_key(i, s.Tq, s.Tk, s.causal);
        const float* qi = &in.q[((b * s.Tq + i) * s.NHq + h) * s.HD];
        const size_t oi = static_cast<size_t>(((b * s.Tq + i) * s.NHq + h) * s.HD);
        const size_t li = static_cast<size_t>((b * s.NHq + h) * s.Tq + i);
        if (last < 0) {
          r.fwd.lse[li] = -std::numeric_limits<double>::infinity();
          continue;  // out and dq stay 0
        }
        float mx = -INFINITY;
        for (int64_t j = 0; j <= last; ++j) {
          const float* kj = &in.k[((b * s.Tk + j) * s.NHkv + hk) * s.HD];
          float dot = 0.f;
          for (int64_t d = 0; d < s.HD; ++d)
            dot += qi[d] * kj[d];
          p[j] = dot * scale;
          mx = std::max(mx, p[j]);
        }
        float sum = 0.f;
        for (int64_t j = 0; j <= last; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        const float lse = mx + std::log(sum);
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t j = 0; j <= last; ++j) {
          const float* vj = &in.v[((b * s.Tk + j) * s.NHkv + hk) * s.HD];
          const float pj = bf(p[j]);
          for (int64_t d = 0; d < s.HD; ++d)
            acc[d] += pj * vj[d];
        }
        std::vector<float> o(static_cast<size_t>(s.HD));
        for (int64_t d = 0; d < s.HD; ++d) {
          o[d] = bf(acc[d] / sum);
          r.fwd.out[oi + d] = o[d];
        }
        r.fwd.lse[li] = lse;
        if (!with_backward) continue;
        const float* doi = &in.dout[oi];
        float D = 0.f;
        for (int64_t d = 0; d < s.HD; ++d)
          D += doi[d] * o[d];
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t j = 0; j <= last; ++j) {
          const float* kj = &in.k[((b * s.Tk + j) * s.NHkv + hk) * s.HD];
          const float* vj = &in.v[((b * s.Tk + j) * s.NHkv + hk) * s.HD];
          float dp = 0.f;
          for (int64_t d = 0; d < s.HD; ++d)
            dp += doi[d] * vj[d];
          const float pj = p[j] / sum;
          const float ds = bf(pj * (dp - D));
          const float pb = bf(pj);
          float* dkj = &dk[((b * s.Tk + j) * s.NHkv + hk) * s.HD];
          float* dvj = &dv[((b * s.Tk + j) * s.NHkv + hk) * s.HD];
          for (int64_t d = 0; d < s.HD; ++d) {
            acc[d] += ds * kj[d];
            dkj[d] += ds * qi[d];
            dvj[d] += pb * doi[d];
          }
        }
        for (int64_t d = 0; d < s.HD; ++d)
          r.grads.dq[oi + d] = bf(acc[d] * scale);
      }
    }
  });
  if (with_backward) {
    r.grads.dk.resize(dk.size());
    r.grads.dv.resize(dv.size());
    for (size_t i = 0; i < dk.size(); ++i) {
      r.grads.dk[i] = bf(dk[i] * scale);
      r.grads.dv[i] = bf(dv[i]);
    }
  }
  return r;
}

// Device copies of the inputs in the layout of `d` (contiguous, or one packed QKV buffer).
struct DeviceInputs {
  DeviceBuffer<bf16> qkv, k, v, dout;
  size_t k_off = 0, v_off = 0;  // element offsets of K and V inside qkv when packed
  bool packed = false;
  const bf16* q_ptr() const { return qkv.get(); }
  const bf16* k_ptr() const { return packed ? qkv.get() + k_off : k.get(); }
  const bf16* v_ptr() const { return packed ? qkv.get() + v_off : v.get(); }
};

DeviceInputs upload(const Shape& s, const Inputs& in, const kiln_attention_desc_t& d, bool packed) {
  DeviceInputs di;
  di.packed = packed;
  if (packed) {
    std::vector<bf16> buf(static_cast<size_t>(s.B * d.q.batch));
    di.k_off = static_cast<size_t>(s.NHq * s.HD);
    di.v_off = static_cast<size_t>((s.NHq + s.NHkv) * s.HD);
    scatter(buf, 0, d.q, in.q, s.B, s.Tq, s.NHq, s.HD);
    scatter(buf, di.k_off, d.k, in.k, s.B, s.Tk, s.NHkv, s.HD);
    scatter(buf, di.v_off, d.v, in.v, s.B, s.Tk, s.NHkv, s.HD);
    di.qkv = DeviceBuffer<bf16>(buf);
  } else {
    // Separate tensors in the layout of d's strides (contiguous or any permutation of B, T, NH).
    std::vector<bf16> q(s.q_elems()), k(s.kv_elems()), v(s.kv_elems());
    scatter(q, 0, d.q, in.q, s.B, s.Tq, s.NHq, s.HD);
    scatter(k, 0, d.k, in.k, s.B, s.Tk, s.NHkv, s.HD);
    scatter(v, 0, d.v, in.v, s.B, s.Tk, s.NHkv, s.HD);
    di.qkv = DeviceBuffer<bf16>(q);
    di.k = DeviceBuffer<bf16>(k);
    di.v = DeviceBuffer<bf16>(v);
  }
  std::vector<bf16> dout(s.q_elems());
  scatter(dout, 0, d.o, in.dout, s.B, s.Tq, s.NHq, s.HD);
  di.dout = DeviceBuffer<bf16>(dout);
  return di;
}

kiln_attention_desc_t make_desc(const Shape& s, kiln_attention_impl_t impl, bool packed,
                                bool deterministic, bool bhsd = false) {
  kiln_attention_desc_t d;
  REQUIRE(kiln_attention_desc_init(&d, s.B, s.Tq, s.Tk, s.NHq, s.NHkv, s.HD, s.causal) ==
          KILN_STATUS_OK);
  if (packed) REQUIRE(kiln_attention_desc_set_packed_qkv(&d) == KILN_STATUS_OK);
  if (bhsd) {  // (B, NH, T, HD) in memory: heads outside tokens
    d.q = {s.NHq * s.Tq * s.HD, s.HD, s.Tq * s.HD};
    d.o = d.q;
    d.k = {s.NHkv * s.Tk * s.HD, s.HD, s.Tk * s.HD};
    d.v = d.k;
  }
  d.impl = impl;
  d.deterministic = deterministic ? 1 : 0;
  return d;
}

struct DeviceFwd {
  DeviceBuffer<bf16> o;
  DeviceBuffer<float> lse;
};

DeviceFwd run_fwd(const kiln_attention_desc_t& d, const Shape& s, const DeviceInputs& di) {
  DeviceFwd f{DeviceBuffer<bf16>(s.q_elems()), DeviceBuffer<float>(s.lse_elems())};
  f.o.poison();
  f.lse.poison();
  size_t ws_bytes = 0;
  REQUIRE(kiln_attention_fwd_workspace_size(&d, &ws_bytes) == KILN_STATUS_OK);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  const kiln_status_t st = kiln_attention_fwd(&d, f.o.get(), f.lse.get(), di.q_ptr(), di.k_ptr(),
                                              di.v_ptr(), ws.get(), ws_bytes, nullptr);
  INFO(kiln_last_error());
  REQUIRE(st == KILN_STATUS_OK);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  return f;
}

void check_fwd(const std::string& what, const Shape& s, const FwdResult& ref, const FwdResult& base,
               const DeviceFwd& f, const kiln_attention_desc_t& d) {
  const auto o = gather(f.o.download(), 0, d.o, s.B, s.Tq, s.NHq, s.HD);
  const auto lse_f = f.lse.download();
  const std::vector<double> lse(lse_f.begin(), lse_f.end());
  kiln::test::check_rule(what + " O", ref.out, o, base.out, atol_for(ref.out));
  kiln::test::check_rule(what + " LSE", ref.lse, lse, base.lse, 1e-5 * (1 + peak(ref.lse)));
}

// Head dims of the grid: kiln's kernels serve 64 and 128 (cuDNN too); 96 and 256 only cuDNN,
// which AUTO sends them to.
constexpr int64_t kHeadDims[] = {64, 96, 128, 256};
bool kiln_head_dim(int64_t hd) {
  return hd == 64 || hd == 128;
}

const char* name(kiln_attention_impl_t impl) {
  return kiln_attention_impl_name(impl);
}

std::vector<Shape> forward_shapes() {
  std::vector<Shape> shapes;
  for (const bool causal : {false, true}) {
    for (const int64_t hd : kHeadDims) {
      shapes.push_back({2, 1, 1, 4, 4, hd, causal});
      shapes.push_back({3, 17, 17, 8, 2, hd, causal});    // GQA 4
      shapes.push_back({1, 113, 113, 8, 1, hd, causal});  // MQA (GQA 8)
      shapes.push_back({2, 128, 128, 4, 4, hd, causal});
      shapes.push_back({2, 17, 113, 4, 1, hd, causal});  // Tq < Tk
      shapes.push_back({1, 113, 17, 4, 4, hd, causal});  // Tq > Tk: causal rows with no key
      shapes.push_back({1, 1, 1024, 8, 8, hd, causal});  // one query (decoding)
      shapes.push_back({1, 1023, 1023, 2, 2, hd, causal});
      shapes.push_back({1, 1024, 1024, 2, 1, hd, causal});
      if (!kiln::test::quick_mode() && kiln_head_dim(hd))
        shapes.push_back({1, 4224, 4224, 1, 1, hd, causal});
    }
  }
  return shapes;
}

}  // namespace

TEST_CASE("attention forward matches the reference on every path", "[attention]") {
  uint64_t stream = 100;
  for (const Shape& s : forward_shapes()) {
    const Inputs in = make_inputs(s, stream++);
    const FwdResult ref = reference_fwd(s, in);
    const Baseline base = baseline(s, in, false);
    for (const auto impl : paths(s, false)) {
      const std::string what = s.str() + " [" + name(impl) + "]";
      INFO(what);
      const auto d = make_desc(s, impl, false, false);
      const DeviceInputs di = upload(s, in, d, false);
      check_fwd(what, s, ref, base.fwd, run_fwd(d, s, di), d);
    }
  }
}

TEST_CASE("attention forward reads Q, K, V inside a packed QKV buffer", "[attention]") {
  uint64_t stream = 200;
  for (const Shape& s : {Shape{2, 77, 77, 8, 2, 64, true}, Shape{1, 300, 300, 4, 4, 128, false},
                         Shape{3, 129, 129, 6, 1, 128, true}, Shape{2, 77, 77, 8, 2, 96, true},
                         Shape{1, 130, 130, 4, 2, 256, false}}) {
    const Inputs in = make_inputs(s, stream++);
    const FwdResult ref = reference_fwd(s, in);
    const Baseline base = baseline(s, in, false);
    for (const auto impl : paths(s, false)) {
      const std::string what = s.str() + " packed [" + name(impl) + "]";
      INFO(what);
      const auto d = make_desc(s, impl, true, false);
      const DeviceInputs di = upload(s, in, d, true);
      check_fwd(what, s, ref, base.fwd, run_fwd(d, s, di), d);
    }
  }
}

TEST_CASE("attention forward gives zeros and -inf, never NaN, for rows that see no key",
          "[attention]") {
  const Shape s{2, 200, 64, 4, 2, 128, true};  // rows 0..135 see no key
  const Inputs in = make_inputs(s, 300);
  for (const auto impl : paths(s, false)) {
    INFO(name(impl));
    const auto d = make_desc(s, impl, false, false);
    const DeviceInputs di = upload(s, in, d, false);
    const DeviceFwd f = run_fwd(d, s, di);
    const auto o = kiln::test::to_double(f.o.download());
    const auto lse = f.lse.download();
    size_t bad = 0;
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t h = 0; h < s.NHq; ++h)
        for (int64_t i = 0; i < s.Tq; ++i) {
          const bool empty = i + s.Tk - s.Tq < 0;
          const float l = lse[static_cast<size_t>((b * s.NHq + h) * s.Tq + i)];
          if (empty ? !(std::isinf(l) && l < 0) : !std::isfinite(l)) ++bad;
          for (int64_t dd = 0; dd < s.HD; ++dd) {
            const double x = o[static_cast<size_t>(((b * s.Tq + i) * s.NHq + h) * s.HD + dd)];
            if (!std::isfinite(x) || (empty && x != 0.0)) ++bad;
          }
        }
    CHECK(bad == 0);
  }
}

TEST_CASE("attention forward is bitwise repeatable", "[attention]") {
  const Shape s{2, 333, 333, 4, 2, 128, true};
  const Inputs in = make_inputs(s, 400);
  for (const auto impl : paths(s, false)) {
    INFO(name(impl));
    const auto d = make_desc(s, impl, false, false);
    const DeviceInputs di = upload(s, in, d, false);
    const auto first = run_fwd(d, s, di).o.download();
    for (int rep = 0; rep < 5; ++rep)
      CHECK(kiln::test::bitwise_equal(first, run_fwd(d, s, di).o.download()));
  }
}

namespace {

struct DeviceGrads {
  DeviceBuffer<bf16> dq, dk, dv;  // contiguous
  DeviceBuffer<bf16> dqkv;        // packed
};

// Runs forward then backward; returns dq, dk, dv as logical contiguous doubles.
Grads run_bwd(const kiln_attention_desc_t& d, const Shape& s, const DeviceInputs& di, bool packed,
              std::vector<bf16>* raw = nullptr) {
  const DeviceFwd f = run_fwd(d, s, di);
  size_t ws_bytes = 0;
  REQUIRE(kiln_attention_bwd_workspace_size(&d, &ws_bytes) == KILN_STATUS_OK);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  ws.poison();  // the backward must not read stale workspace
  DeviceGrads g;
  bf16 *dq, *dk, *dv;
  if (packed) {
    g.dqkv = DeviceBuffer<bf16>(static_cast<size_t>(s.B * d.q.batch));
    g.dqkv.poison();
    dq = g.dqkv.get();
    dk = g.dqkv.get() + s.NHq * s.HD;
    dv = g.dqkv.get() + (s.NHq + s.NHkv) * s.HD;
  } else {
    g.dq = DeviceBuffer<bf16>(s.q_elems());
    g.dk = DeviceBuffer<bf16>(s.kv_elems());
    g.dv = DeviceBuffer<bf16>(s.kv_elems());
    g.dq.poison();
    g.dk.poison();
    g.dv.poison();
    dq = g.dq.get();
    dk = g.dk.get();
    dv = g.dv.get();
  }
  const kiln_status_t st =
      kiln_attention_bwd(&d, dq, dk, dv, di.dout.get(), di.q_ptr(), di.k_ptr(), di.v_ptr(),
                         f.o.get(), f.lse.get(), ws.get(), ws_bytes, nullptr);
  INFO(kiln_last_error());
  REQUIRE(st == KILN_STATUS_OK);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  Grads out;
  if (packed) {
    const auto buf = g.dqkv.download();
    if (raw) *raw = buf;
    out.dq = gather(buf, 0, d.q, s.B, s.Tq, s.NHq, s.HD);
    out.dk = gather(buf, static_cast<size_t>(s.NHq * s.HD), d.k, s.B, s.Tk, s.NHkv, s.HD);
    out.dv =
        gather(buf, static_cast<size_t>((s.NHq + s.NHkv) * s.HD), d.v, s.B, s.Tk, s.NHkv, s.HD);
  } else {
    const auto q = g.dq.download(), k = g.dk.download(), v = g.dv.download();
    if (raw) {
      *raw = q;
      raw->insert(raw->end(), k.begin(), k.end());
      raw->insert(raw->end(), v.begin(), v.end());
    }
    out.dq = gather(q, 0, d.q, s.B, s.Tq, s.NHq, s.HD);
    out.dk = gather(k, 0, d.k, s.B, s.Tk, s.NHkv, s.HD);
    out.dv = gather(v, 0, d.v, s.B, s.Tk, s.NHkv, s.HD);
  }
  return out;
}

void check_grads(const std::string& what, const Grads& ref, const Grads& base, const Grads& got) {
  kiln::test::check_rule(what + " dQ", ref.dq, got.dq, base.dq, atol_for(ref.dq));
  kiln::test::check_rule(what + " dK", ref.dk, got.dk, base.dk, atol_for(ref.dk));
  kiln::test::check_rule(what + " dV", ref.dv, got.dv, base.dv, atol_for(ref.dv));
}

std::vector<Shape> backward_shapes() {
  std::vector<Shape> shapes;
  for (const bool causal : {false, true})
    for (const int64_t hd : kHeadDims) {
      shapes.push_back({2, 1, 1, 4, 4, hd, causal});
      shapes.push_back({3, 17, 17, 8, 2, hd, causal});
      shapes.push_back({1, 113, 113, 8, 1, hd, causal});
      shapes.push_back({2, 128, 128, 4, 4, hd, causal});
      shapes.push_back({2, 17, 113, 4, 1, hd, causal});
      shapes.push_back({1, 113, 17, 4, 4, hd, causal});
      shapes.push_back({1, 1023, 1023, 2, 2, hd, causal});
      if (!kiln::test::quick_mode() && kiln_head_dim(hd)) {
        shapes.push_back({1, 1024, 1024, 2, 1, hd, causal});
        shapes.push_back({1, 4224, 4224, 1, 1, hd, causal});
      }
    }
  return shapes;
}

}  // namespace

TEST_CASE("attention backward matches the reference on every path, both modes", "[attention]") {
  uint64_t stream = 500;
  for (const Shape& s : backward_shapes()) {
    const Inputs in = make_inputs(s, stream++);
    const Grads ref = reference_bwd(s, in);
    const Baseline base = baseline(s, in, true);
    for (const bool det : {false, true})
      for (const auto impl : paths(s, true, det)) {
        const std::string what = s.str() + " [" + name(impl) + (det ? ", deterministic]" : "]");
        INFO(what);
        const auto d = make_desc(s, impl, false, det);
        const DeviceInputs di = upload(s, in, d, false);
        check_grads(what, ref, base.grads, run_bwd(d, s, di, false));
      }
  }
}

// The smoke set (scripts/gpu-window.sh runs it first and under compute-sanitizer): every path
// that serves the shape (sm_80, sm_90a, cuDNN: required on Hopper, paths()), forward and both
// backward modes, on one causal GQA shape with ragged blocks, for each of kiln's head dims.
TEST_CASE("attention smoke: every path, forward and backward, one small shape per head dim",
          "[attention][smoke]") {
  uint64_t stream = 700;
  for (const int64_t hd : {int64_t{64}, int64_t{128}}) {
    const Shape s{2, 130, 130, 4, 2, hd, true};
    const Inputs in = make_inputs(s, stream++);
    const FwdResult ref_fwd = reference_fwd(s, in);
    const Grads ref = reference_bwd(s, in);
    const Baseline base_fwd = baseline(s, in, false);
    const Baseline base = baseline(s, in, true);
    for (const auto impl : paths(s, false)) {
      const std::string what = s.str() + " [" + name(impl) + "]";
      INFO(what);
      const auto d = make_desc(s, impl, false, false);
      const DeviceInputs di = upload(s, in, d, false);
      check_fwd(what, s, ref_fwd, base_fwd.fwd, run_fwd(d, s, di), d);
    }
    for (const bool det : {false, true})
      for (const auto impl : paths(s, true, det)) {
        const std::string what = s.str() + " [" + name(impl) + (det ? ", deterministic]" : "]");
        INFO(what);
        const auto d = make_desc(s, impl, false, det);
        const DeviceInputs di = upload(s, in, d, false);
        check_grads(what, ref, base.grads, run_bwd(d, s, di, false));
      }
  }
}

TEST_CASE("attention forward and backward take (B, NH, T, HD) strides", "[attention]") {
  uint64_t stream = 250;
  for (const Shape& s :
       {Shape{2, 100, 100, 4, 2, 64, true}, Shape{1, 257, 129, 4, 4, 128, false}}) {
    const Inputs in = make_inputs(s, stream++);
    const FwdResult ref = reference_fwd(s, in);
    const Grads gref = reference_bwd(s, in);
    const Baseline base = baseline(s, in, true);
    for (const auto impl : paths(s, false)) {
      const std::string what = s.str() + " BHSD [" + name(impl) + "]";
      INFO(what);
      const auto d = make_desc(s, impl, false, false, true);
      const DeviceInputs di = upload(s, in, d, false);
      check_fwd(what, s, ref, base.fwd, run_fwd(d, s, di), d);
    }
    for (const auto impl : paths(s, true)) {
      const std::string what = s.str() + " BHSD backward [" + name(impl) + "]";
      INFO(what);
      const auto d = make_desc(s, impl, false, false, true);
      const DeviceInputs di = upload(s, in, d, false);
      check_grads(what, gref, base.grads, run_bwd(d, s, di, false));
    }
  }
}

TEST_CASE("attention backward writes a packed dQKV buffer completely", "[attention]") {
  uint64_t stream = 600;
  for (const Shape& s : {Shape{2, 77, 77, 8, 2, 64, true}, Shape{1, 200, 200, 4, 4, 128, false},
                         Shape{1, 90, 90, 6, 3, 256, true}}) {
    const Inputs in = make_inputs(s, stream++);
    const Grads ref = reference_bwd(s, in);
    const Baseline base = baseline(s, in, true);
    for (const bool det : {false, true})
      for (const auto impl : paths(s, true, det)) {
        const std::string what = s.str() + " packed [" + name(impl) + (det ? ", det]" : "]");
        INFO(what);
        const auto d = make_desc(s, impl, true, det);
        const DeviceInputs di = upload(s, in, d, true);
        std::vector<bf16> raw;
        check_grads(what, ref, base.grads, run_bwd(d, s, di, true, &raw));
        size_t nan = 0;
        for (const bf16 x : raw)
          if (std::isnan(__bfloat162float(x))) ++nan;
        CHECK(nan == 0);  // every element of the poisoned dQKV buffer was written
      }
  }
}

TEST_CASE("attention deterministic backward is bitwise repeatable", "[attention]") {
  const int reps = kiln::test::quick_mode() ? 3 : 20;
  for (const Shape& s :
       {Shape{2, 500, 500, 8, 2, 128, true}, Shape{1, 333, 1000, 4, 1, 64, false}}) {
    const Inputs in = make_inputs(s, 700);
    for (const auto impl : paths(s, true, true)) {
      INFO(s.str() << " [" << name(impl) << "]");
      const auto d = make_desc(s, impl, false, true);
      const DeviceInputs di = upload(s, in, d, false);
      std::vector<bf16> first, again;
      run_bwd(d, s, di, false, &first);
      for (int rep = 0; rep < reps; ++rep) {
        run_bwd(d, s, di, false, &again);
        CHECK(kiln::test::bitwise_equal(first, again));
      }
    }
  }
}

namespace {

// Whether this device and build run kiln's sm_90a kernels: the forced Hopper forward resolves.
bool hopper_kernels_here() {
  const Shape s{1, 128, 128, 2, 2, 128, false};
  const auto d = make_desc(s, KILN_ATTENTION_IMPL_SM90, false, false);
  kiln_attention_impl_t got;
  return kiln_attention_resolve_impl(&d, 0, &got) == KILN_STATUS_OK;
}

}  // namespace

// The grid above runs the Hopper backward through paths() wherever it resolves; this case makes
// sure it does resolve where the Hopper forward does, and stresses what is its own: 128-key CTAs
// of two consumer warpgroups (ragged Tk), query blocks of 64 (HD 128) or 128 (HD 64) with ragged
// Tq, dQ by bulk reductions into an accumulator kept in wgmma order (several key blocks and GQA
// heads adding into one query block), causal blocks skipped on both sides of the diagonal.
TEST_CASE("attention Hopper backward (forced sm90): both modes, causal, GQA, ragged, Tq != Tk",
          "[attention]") {
  if (!hopper_kernels_here()) {
    if (kiln::test::hopper_paths_required())
      FAIL("the forced sm90 attention does not resolve on compute capability 9.0 with sm_90a");
    WARN("no sm_90a kernels on this device or build: the Hopper backward is not exercised");
    return;
  }
  const int reps = kiln::test::quick_mode() ? 2 : 5;
  uint64_t stream = 900;
  for (const Shape& s : {Shape{2, 200, 333, 8, 2, 128, true},  // Tq < Tk, GQA 4
                         Shape{1, 333, 200, 4, 4, 64, true},   // Tq > Tk: rows with no key
                         Shape{3, 129, 129, 6, 3, 64, false},  // one key past a CTA, GQA 2
                         Shape{1, 1, 300, 4, 1, 128, false},   // one query, MQA
                         Shape{2, 257, 257, 2, 1, 128, true}, Shape{1, 511, 130, 2, 2, 64, false},
                         Shape{1, 65, 640, 8, 1, 64, true}}) {
    const Inputs in = make_inputs(s, stream++);
    const Grads ref = reference_bwd(s, in);
    const Baseline base = baseline(s, in, true);
    for (const bool det : {false, true}) {
      const std::string what = s.str() + " [sm90" + (det ? ", deterministic]" : "]");
      INFO(what);
      const auto d = make_desc(s, KILN_ATTENTION_IMPL_SM90, false, det);
      kiln_attention_impl_t got;
      REQUIRE(kiln_attention_resolve_impl(&d, 1, &got) == KILN_STATUS_OK);
      REQUIRE(got == KILN_ATTENTION_IMPL_SM90);
      const DeviceInputs di = upload(s, in, d, false);
      std::vector<bf16> first, again;
      check_grads(what, ref, base.grads, run_bwd(d, s, di, false, &first));
      if (!det) continue;
      for (int rep = 0; rep < reps; ++rep) {
        run_bwd(d, s, di, false, &again);
        CHECK(kiln::test::bitwise_equal(first, again));
      }
    }
  }
}

TEST_CASE("attention backward gives zero gradients, never NaN, where rows see no key",
          "[attention]") {
  const Shape s{1, 150, 40, 4, 2, 64, true};  // rows 0..109 see no key
  const Inputs in = make_inputs(s, 800);
  const Grads ref = reference_bwd(s, in);
  const Baseline base = baseline(s, in, true);
  for (const bool det : {false, true})
    for (const auto impl : paths(s, true, det)) {
      const std::string what = s.str() + " [" + name(impl) + (det ? ", det]" : "]");
      INFO(what);
      const auto d = make_desc(s, impl, false, det);
      const DeviceInputs di = upload(s, in, d, false);
      const Grads g = run_bwd(d, s, di, false);
      check_grads(what, ref, base.grads, g);
      size_t bad = 0;
      for (int64_t h = 0; h < s.NHq; ++h)
        for (int64_t i = 0; i < 110; ++i)
          for (int64_t dd = 0; dd < s.HD; ++dd)
            if (g.dq[static_cast<size_t>((i * s.NHq + h) * s.HD + dd)] != 0.0) ++bad;
      CHECK(bad == 0);
    }
}

// AUTO keeps the sm_80 backward on Hopper until the sm_90a one has been verified there
// (kAutoHopperBackward in kernels/attention/attention.cpp; change both together).
TEST_CASE("attention AUTO picks the Hopper forward only where it exists", "[attention]") {
  const Shape s{1, 128, 128, 2, 2, 128, true};
  const auto d = make_desc(s, KILN_ATTENTION_IMPL_AUTO, false, false);
  kiln_attention_impl_t fwd = KILN_ATTENTION_IMPL_AUTO, bwd = KILN_ATTENTION_IMPL_AUTO;
  REQUIRE(kiln_attention_resolve_impl(&d, 0, &fwd) == KILN_STATUS_OK);
  REQUIRE(kiln_attention_resolve_impl(&d, 1, &bwd) == KILN_STATUS_OK);
  CHECK(fwd != KILN_ATTENTION_IMPL_AUTO);
  CHECK(bwd == KILN_ATTENTION_IMPL_SM80);
  auto forced = d;
  forced.impl = KILN_ATTENTION_IMPL_SM90;
  kiln_attention_impl_t got;
  const bool hopper = kiln_attention_resolve_impl(&forced, 0, &got) == KILN_STATUS_OK;
  CHECK(fwd == (hopper ? KILN_ATTENTION_IMPL_SM90 : KILN_ATTENTION_IMPL_SM80));
}

TEST_CASE("attention AUTO sends head dims kiln's kernels lack to cuDNN", "[attention]") {
  for (const int64_t hd : {int64_t{96}, int64_t{256}}) {
    const Shape s{1, 128, 128, 2, 2, hd, true};
    const auto d = make_desc(s, KILN_ATTENTION_IMPL_AUTO, false, false);
    for (const int backward : {0, 1}) {
      kiln_attention_impl_t got = KILN_ATTENTION_IMPL_AUTO;
      const kiln_status_t st = kiln_attention_resolve_impl(&d, backward, &got);
      INFO(s.str() << (backward ? " backward: " : " forward: ") << kiln_last_error());
      if (st == KILN_STATUS_OK) {
        CHECK(got == KILN_ATTENTION_IMPL_CUDNN);
      } else {
        CHECK(st == KILN_STATUS_NOT_SUPPORTED);
        CHECK(!cudnn_must_serve());
      }
    }
  }
}

TEST_CASE("attention cuDNN builds one plan per shape and direction, for every scale",
          "[attention]") {
  const Shape s{2, 100, 100, 4, 2, 96, true};
  auto d = make_desc(s, KILN_ATTENTION_IMPL_CUDNN, false, false);
  kiln_attention_impl_t got;
  if (kiln_attention_resolve_impl(&d, 1, &got) != KILN_STATUS_OK) {
    CHECK(!cudnn_must_serve());
    return;
  }
  const Inputs in = make_inputs(s, 1000);
  const DeviceInputs di = upload(s, in, d, false);
  run_bwd(d, s, di, false);  // both plans now exist
  const std::size_t built = kiln::impl::attention_cudnn_plan_builds();
  for (int rep = 0; rep < 3; ++rep)
    run_bwd(d, s, di, false);
  // The scale is a by-value input of the plan: another scale reuses it, and is honoured.
  d.scale = 0.3;
  const auto o = gather(run_fwd(d, s, di).o.download(), 0, d.o, s.B, s.Tq, s.NHq, s.HD);
  CHECK(kiln::impl::attention_cudnn_plan_builds() == built);
  std::vector<double> ref(s.q_elems()), lse(s.lse_elems());
  const auto q = dbl(in.q), k = dbl(in.k), v = dbl(in.v);
  kiln::ref::attention_fwd_ref(ref.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.Tq,
                               s.Tk, s.NHq, s.NHkv, s.HD, 0.3, s.causal);
  std::vector<double> other(s.q_elems());
  kiln::ref::attention_fwd_ref(other.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.Tq,
                               s.Tk, s.NHq, s.NHkv, s.HD, s.scale(), s.causal);
  double worst = 0, apart = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    worst = std::max(worst, std::fabs(o[i] - ref[i]));
    apart = std::max(apart, std::fabs(other[i] - ref[i]));
  }
  CHECK(worst < 3e-2);        // bf16 outputs of magnitude below 4
  CHECK(apart > 10 * worst);  // and the default scale's output is far from it
}
