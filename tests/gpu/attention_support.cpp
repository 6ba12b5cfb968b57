// The attention GPU tests' harness (attention_support.hpp): the references split over every
// core, the plain bf16 baseline, inputs placed by strides, device runs and the checks.
#include "tests/gpu/attention_support.hpp"

#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "kernels/attention/attention_ref.hpp"
#include "tests/common/compare.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/paths.hpp"

namespace kiln::test::attn {

namespace {

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

struct DeviceGrads {
  DeviceBuffer<bf16> dq, dk, dv;  // contiguous
  DeviceBuffer<bf16> dqkv;        // packed
};

float bf(float x) {
  return __bfloat162float(__float2bfloat16(x));
}

}  // namespace

bool cudnn_must_serve() {
  int device = 0, major = 0;
  return cudaGetDevice(&device) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
         major == 9;
}

std::vector<kiln_attention_impl_t> paths(const Shape& s, bool backward, bool deterministic) {
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

Inputs make_inputs(const Shape& s, uint64_t stream) {
  auto rng = kiln::test::make_rng(stream);
  Inputs in;
  in.q = kiln::test::round_to_bf16(kiln::test::random_normal(s.q_elems(), 0.f, 1.f, rng));
  in.k = kiln::test::round_to_bf16(kiln::test::random_normal(s.kv_elems(), 0.f, 1.f, rng));
  in.v = kiln::test::round_to_bf16(kiln::test::random_normal(s.kv_elems(), 0.f, 1.f, rng));
  in.dout = kiln::test::round_to_bf16(kiln::test::random_normal(s.q_elems(), 0.f, 1.f, rng));
  return in;
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
                                bool deterministic, bool bhsd) {
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

Grads run_bwd(const kiln_attention_desc_t& d, const Shape& s, const DeviceInputs& di, bool packed,
              std::vector<bf16>* raw) {
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

void check_fwd_paths(const Shape& s, const Inputs& in, const FwdResult& ref, const FwdResult& base,
                     Layout layout) {
  const char* tag = layout == Layout::kPacked ? " packed" : layout == Layout::kBhsd ? " BHSD" : "";
  for (const auto impl : paths(s, false)) {
    const std::string what = s.str() + tag + " [" + name(impl) + "]";
    INFO(what);
    const auto d = make_desc(s, impl, layout == Layout::kPacked, false, layout == Layout::kBhsd);
    const DeviceInputs di = upload(s, in, d, layout == Layout::kPacked);
    check_fwd(what, s, ref, base, run_fwd(d, s, di), d);
  }
}

void check_bwd_paths(const Shape& s, const Inputs& in, const Grads& ref, const Grads& base,
                     std::initializer_list<bool> modes, Layout layout) {
  const bool packed = layout == Layout::kPacked;
  const char* tag = packed ? " packed" : layout == Layout::kBhsd ? " BHSD backward" : "";
  for (const bool det : modes)
    for (const auto impl : paths(s, true, det)) {
      const std::string what = s.str() + tag + " [" + name(impl) + (det ? ", deterministic]" : "]");
      INFO(what);
      const auto d = make_desc(s, impl, packed, det, layout == Layout::kBhsd);
      const DeviceInputs di = upload(s, in, d, packed);
      std::vector<bf16> raw;
      check_grads(what, ref, base, run_bwd(d, s, di, packed, &raw));
      if (!packed) continue;
      size_t nan = 0;
      for (const bf16 x : raw)
        if (std::isnan(__bfloat162float(x))) ++nan;
      CHECK(nan == 0);  // every element of the poisoned dQKV buffer was written
    }
}

}  // namespace kiln::test::attn
