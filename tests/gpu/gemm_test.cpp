// kiln_gemm on the device: every backend (forced) and epilogue against the double reference with
// the tolerance rule, over GPT-2's layer shapes, large squares and odd shapes; outputs poisoned
// with NaN before each call, NaN in the padding of the inputs (a kernel reading past a row's end
// is caught), a guard row after D and pre_gelu_out (a kernel writing past M is caught), the bias
// gradient bitwise repeatable, and which GELU each backend applies.
#include <catch2/catch.hpp>

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/gemm/gemm.hpp"
#include "kernels/gemm/gemm_ref.hpp"
#include "kiln/device.hpp"
#include "kiln/gemm.h"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/gemm_ref_rows.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/paths.hpp"

namespace {

using bf16 = __nv_bfloat16;
using kiln::test::DeviceBuffer;

const kiln_gemm_backend_t kBackends[] = {KILN_GEMM_BACKEND_CUBLASLT, KILN_GEMM_BACKEND_SM90,
                                         KILN_GEMM_BACKEND_SM80};

struct Env {
  kiln::Device device{0};
  kiln::GemmContext ctx{device.cublaslt(), device.workspace(), device.workspace_bytes()};
};
Env& env() {
  static Env e;
  return e;
}

bool available(kiln_gemm_backend_t b) {
  int ok = 0;
  REQUIRE(kiln_gemm_backend_available(b, &ok) == KILN_STATUS_OK);
  if (!ok && kiln::test::hopper_paths_required() && b != KILN_GEMM_BACKEND_CUBLASLT)
    FAIL("backend " << kiln_gemm_backend_name(b)
                    << " is unavailable on compute capability 9.0 "
                       "with the sm_90a build: it must run here");
  if (!ok) WARN("backend " << kiln_gemm_backend_name(b) << " is not available here: skipped");
  return ok != 0;
}

struct GemmCase {
  std::string name;
  std::int64_t M = 0, N = 0, K = 0;
  bool ta = false, tb = false;
  kiln_gemm_epilogue_t epi = KILN_GEMM_EPILOGUE_NONE;
  bool f32 = false;  // C, D, bias_grad in fp32
  float alpha = 1, beta = 0;
  std::int64_t pad = 0;   // every leading dimension is the packed one + pad ...
  bool align = false;     // ... rounded up to a multiple of 8 elements (16-byte rows)
  bool in_place = false;  // c is d
  int sample_rows = 0;    // rows checked against the reference; 0 = all
  bool has_bias = true;   // for the residual epilogue (bias optional there)
};

std::string describe(const GemmCase& c) {
  std::ostringstream os;
  os << c.name << ": M " << c.M << " N " << c.N << " K " << c.K << " trans_a " << c.ta
     << " trans_b " << c.tb << " epilogue " << kiln_gemm_epilogue_name(c.epi) << " cd "
     << (c.f32 ? "f32" : "bf16") << " alpha " << c.alpha << " beta " << c.beta << " pad " << c.pad
     << (c.align ? " aligned" : "") << (c.in_place ? " in-place" : "");
  return os.str();
}

float nan_f() {
  return std::numeric_limits<float>::quiet_NaN();
}

// Host copy of everything a case feeds the GEMM, as floats holding bf16-exact values (fp32 C and
// bias_grad when the case is f32), NaN in every padding element.
struct Inputs {
  std::int64_t lda, ldb, ldc, ldd, ldg;
  std::vector<float> a, b, c, bias, pre_gelu, bias_grad;
};

std::vector<float> random_padded(std::int64_t rows, std::int64_t cols, std::int64_t ld, float lo,
                                 float hi, bool round, std::mt19937_64& rng) {
  std::vector<float> v = kiln::test::random_uniform(rows * ld, lo, hi, rng);
  if (round) v = kiln::test::round_to_bf16(v);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = cols; j < ld; ++j)
      v[r * ld + j] = nan_f();
  return v;
}

Inputs make_inputs(const GemmCase& c, std::mt19937_64& rng) {
  Inputs in;
  auto ld = [&](std::int64_t packed) {
    const std::int64_t v = packed + c.pad;
    return c.align ? (v + 7) / 8 * 8 : v;
  };
  in.lda = ld(c.ta ? c.M : c.K);
  in.ldb = ld(c.tb ? c.K : c.N);
  in.ldc = in.ldd = ld(c.N);
  in.ldg = ld(c.N);
  in.a = random_padded(c.ta ? c.K : c.M, c.ta ? c.M : c.K, in.lda, -1, 1, true, rng);
  in.b = random_padded(c.tb ? c.N : c.K, c.tb ? c.K : c.N, in.ldb, -1, 1, true, rng);
  // C and pre_gelu only where they are read (the large cases would spend seconds on them);
  // where C is not read it is a buffer of NaN (see run_on_device).
  if (c.beta != 0) in.c = random_padded(c.M, c.N, in.ldc, -1, 1, !c.f32, rng);
  in.bias = kiln::test::round_to_bf16(kiln::test::random_uniform(c.N, -1, 1, rng));
  if (c.epi == KILN_GEMM_EPILOGUE_DGELU)
    in.pre_gelu = random_padded(c.M, c.N, in.ldg, -3, 3, true, rng);
  else
    in.pre_gelu.assign(8, 0.0f);  // a valid pointer that is never read
  in.bias_grad = kiln::test::random_uniform(c.M, -1, 1, rng);
  if (!c.f32) in.bias_grad = kiln::test::round_to_bf16(in.bias_grad);
  return in;
}

// What the device produced, as floats, D and pre_gelu_out with their padding and guard row.
struct Outputs {
  std::vector<float> d, pre, bias_grad;
  std::vector<std::uint8_t> d_poison, pre_poison;  // element still holds the NaN poison bits
};

template <typename T>
bool is_poison(T v) {
  unsigned char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  for (unsigned char b : bytes)
    if (b != 0xFF) return false;
  return true;
}

template <typename T>
std::vector<T> cast_to(const std::vector<float>& v) {
  if constexpr (sizeof(T) == 4) {
    return v;
  } else {
    return kiln::test::to_bf16(v);
  }
}
template <typename T>
void cast_from(const std::vector<T>& v, std::vector<float>& out,
               std::vector<std::uint8_t>* poison) {
  out.resize(v.size());
  if (poison) poison->resize(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    if constexpr (sizeof(T) == 4)
      out[i] = v[i];
    else
      out[i] = __bfloat162float(v[i]);
    if (poison) (*poison)[i] = is_poison(v[i]);
  }
}

// Runs the case on `backend`. Returns false when the backend refused it (status recorded).
template <typename CD>
bool run_on_device(const GemmCase& c, const Inputs& in, kiln_gemm_backend_t backend, Outputs& out,
                   kiln_status_t* status) {
  DeviceBuffer<bf16> a(kiln::test::to_bf16(in.a)), b(kiln::test::to_bf16(in.b));
  DeviceBuffer<bf16> bias(kiln::test::to_bf16(in.bias));
  DeviceBuffer<bf16> pre_in(kiln::test::to_bf16(in.pre_gelu));
  // C: its own buffer, or D itself. With beta == 0 kiln must not read C: it gets a NaN-filled
  // buffer (of full size for the smaller cases), which would poison D if read.
  const std::size_t c_size =
      c.beta != 0 ? in.c.size()
                  : static_cast<std::size_t>(std::min<std::int64_t>(c.M * in.ldc, 1 << 22));
  DeviceBuffer<CD> cbuf(cast_to<CD>(c.beta != 0 ? in.c : std::vector<float>(c_size, nan_f())));
  DeviceBuffer<CD> d((c.M + 1) * in.ldd);  // + a guard row
  d.poison();
  if (c.in_place) {
    std::vector<CD> init = d.download();  // the poison
    const std::vector<CD> cc = cast_to<CD>(in.c);
    for (std::int64_t r = 0; r < c.M; ++r)
      for (std::int64_t j = 0; j < c.N; ++j)
        init[r * in.ldd + j] = cc[r * in.ldc + j];
    d.upload(init);
  }
  // pre_gelu_out is only written by BIAS_GELU; elsewhere a smaller poisoned buffer (for the large
  // cases) still shows whether anything writes it.
  const std::int64_t pre_size = (c.M + 1) * in.ldg;
  DeviceBuffer<bf16> pre_out(c.epi == KILN_GEMM_EPILOGUE_BIAS_GELU
                                 ? pre_size
                                 : std::min<std::int64_t>(pre_size, std::int64_t{1} << 22));
  pre_out.poison();
  DeviceBuffer<CD> bias_grad(cast_to<CD>(in.bias_grad));

  kiln_gemm_params_t p;
  kiln_gemm_params_init(&p);
  p.m = c.M;
  p.n = c.N;
  p.k = c.K;
  p.trans_a = c.ta;
  p.trans_b = c.tb;
  p.a = a.get();
  p.lda = in.lda;
  p.b = b.get();
  p.ldb = in.ldb;
  p.c = c.in_place ? static_cast<const void*>(d.get()) : cbuf.get();
  p.ldc = c.in_place ? in.ldd : in.ldc;
  p.d = d.get();
  p.ldd = in.ldd;
  p.cd_dtype = c.f32 ? KILN_DTYPE_F32 : KILN_DTYPE_BF16;
  p.alpha = c.alpha;
  p.beta = c.beta;
  p.epilogue = c.epi;
  p.bias = c.has_bias ? bias.get() : nullptr;
  p.pre_gelu_out = pre_out.get();
  p.pre_gelu = pre_in.get();
  p.ld_pre_gelu = in.ldg;
  p.bias_grad = bias_grad.get();
  p.backend = backend;
  *status = kiln_gemm(env().ctx.get(), &p, nullptr);
  if (*status != KILN_STATUS_OK) return false;
  cast_from(d.download(), out.d, &out.d_poison);
  cast_from(pre_out.download(), out.pre, &out.pre_poison);
  cast_from(bias_grad.download(), out.bias_grad, nullptr);
  return true;
}

std::vector<std::int64_t> sample_rows(const GemmCase& c, std::mt19937_64& rng) {
  std::set<std::int64_t> rows;
  if (c.sample_rows == 0 || c.sample_rows >= c.M) {
    for (std::int64_t r = 0; r < c.M; ++r)
      rows.insert(r);
  } else {
    // Both ends, both sides of the tile boundaries the kernels use (64, 128), and random rows.
    for (std::int64_t r : {std::int64_t{0}, std::int64_t{1}, c.M - 1, c.M - 2})
      if (r >= 0 && r < c.M) rows.insert(r);
    for (std::int64_t t = 64; t < c.M && rows.size() < std::size_t(c.sample_rows) / 2; t *= 2)
      for (std::int64_t r : {t - 1, t})
        rows.insert(r);
    std::uniform_int_distribution<std::int64_t> pick(0, c.M - 1);
    while (rows.size() < std::size_t(c.sample_rows))
      rows.insert(pick(rng));
  }
  return {rows.begin(), rows.end()};
}

struct Expected {
  std::vector<std::int64_t> rows;
  std::vector<float> d_ref, d_base, pre_ref, pre_base;  // (rows, N)
  std::vector<double> bg_ref, bg_base;                  // (M): every row
};

// The reference (double accumulation) and the same-precision baseline (fp32, bf16 outputs
// rounded where the kernels write bf16) of the sampled rows; the bias gradient for every row.
Expected expect(const GemmCase& c, const Inputs& in, std::mt19937_64& rng) {
  Expected x;
  x.rows = sample_rows(c, rng);
  const std::int64_t R = static_cast<std::int64_t>(x.rows.size());
  std::vector<float> a_sub(R * c.K), c_sub(R * c.N), pre_sub(R * c.N), bg_sub(R);
  for (std::int64_t i = 0; i < R; ++i) {
    const std::int64_t r = x.rows[i];
    for (std::int64_t k = 0; k < c.K; ++k)
      a_sub[i * c.K + k] = c.ta ? in.a[k * in.lda + r] : in.a[r * in.lda + k];
    for (std::int64_t j = 0; j < c.N; ++j) {
      if (c.beta != 0) c_sub[i * c.N + j] = in.c[r * in.ldc + j];
      if (c.epi == KILN_GEMM_EPILOGUE_DGELU) pre_sub[i * c.N + j] = in.pre_gelu[r * in.ldg + j];
    }
    bg_sub[i] = in.bias_grad[r];
  }
  kiln::ref::GemmRefArgs<float> p;
  p.M = R;
  p.N = c.N;
  p.K = c.K;
  p.trans_b = c.tb;
  p.alpha = c.alpha;
  p.beta = c.beta;
  p.epilogue = static_cast<kiln::ref::Epilogue>(c.epi);
  p.a = a_sub.data();
  p.b = in.b.data();
  p.ldb = in.ldb;
  p.c = c.beta != 0 ? c_sub.data() : nullptr;
  p.bias = c.has_bias ? in.bias.data() : nullptr;
  p.pre_gelu = pre_sub.data();
  std::vector<float> bg_unused(R);
  p.bias_grad = bg_unused.data();  // the bias gradient is checked over every row below
  x.d_ref.resize(R * c.N);
  x.pre_ref.resize(R * c.N);
  p.d = x.d_ref.data();
  p.pre_gelu_out = x.pre_ref.data();
  kiln::test::gemm_ref_rows<double>(p);
  x.d_base.resize(R * c.N);
  x.pre_base.resize(R * c.N);
  p.d = x.d_base.data();
  p.pre_gelu_out = x.pre_base.data();
  kiln::test::gemm_ref_rows<float>(p);
  if (!c.f32) x.d_base = kiln::test::round_to_bf16(x.d_base);
  x.pre_base = kiln::test::round_to_bf16(x.pre_base);

  if (c.epi == KILN_GEMM_EPILOGUE_BIAS_GRAD) {
    x.bg_ref.resize(c.M);
    x.bg_base.resize(c.M);
    for (std::int64_t r = 0; r < c.M; ++r) {
      double s = 0;
      float sf = 0;
      for (std::int64_t k = 0; k < c.K; ++k) {
        const float v = c.ta ? in.a[k * in.lda + r] : in.a[r * in.lda + k];
        s += v;
        sf += v;
      }
      x.bg_ref[r] = in.bias_grad[r] + s;
      const float base = in.bias_grad[r] + sf;
      x.bg_base[r] = c.f32 ? base : __bfloat162float(__float2bfloat16(base));
    }
  }
  return x;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v)
    if (std::isfinite(x)) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

// Checks one backend's outputs against the expectation.
void check_outputs(const GemmCase& c, const Inputs& in, const Expected& x, const Outputs& out,
                   const std::string& what) {
  const std::int64_t R = static_cast<std::int64_t>(x.rows.size());
  std::vector<double> got(R * c.N), got_pre(R * c.N);
  for (std::int64_t i = 0; i < R; ++i)
    for (std::int64_t j = 0; j < c.N; ++j) {
      got[i * c.N + j] = out.d[x.rows[i] * in.ldd + j];
      if (c.epi == KILN_GEMM_EPILOGUE_BIAS_GELU)
        got_pre[i * c.N + j] = out.pre[x.rows[i] * in.ldg + j];
    }
  // bf16 outputs: the baseline's error is about half a bf16 ulp of the largest value; the atol
  // adds a quarter of that for tanh.approx. fp32 outputs: the baseline is a sequential fp32 sum;
  // tensor cores sum in blocks, with an error of the same order: 1e-5 relative to the largest
  // value is far below any indexing mistake (which is of the order of the values themselves).
  const double scale = max_abs(x.d_ref);
  const double atol = c.f32 ? 1e-5 * scale + 1e-6 : std::ldexp(scale, -12) + 1e-6;
  kiln::test::check_rule(what + " D", kiln::test::to_double(x.d_ref), got,
                         kiln::test::to_double(x.d_base), atol);

  // Every element of D was written (no poison left), nothing past a row's N or past row M was.
  std::size_t unwritten = 0, overwritten = 0;
  for (std::int64_t r = 0; r <= c.M; ++r)
    for (std::int64_t j = 0; j < in.ldd; ++j) {
      const bool inside = r < c.M && j < c.N;
      const bool poison = out.d_poison[r * in.ldd + j];
      if (inside && (poison || !std::isfinite(out.d[r * in.ldd + j]))) ++unwritten;
      if (!inside && !poison) ++overwritten;
    }
  INFO(what << ": " << unwritten << " elements of D not written or not finite, " << overwritten
            << " written outside D");
  CHECK(unwritten == 0);
  CHECK(overwritten == 0);

  std::size_t pre_written = 0;
  for (std::uint8_t p : out.pre_poison)
    pre_written += !p;
  if (c.epi == KILN_GEMM_EPILOGUE_BIAS_GELU) {
    kiln::test::check_rule(what + " pre_gelu_out", kiln::test::to_double(x.pre_ref), got_pre,
                           kiln::test::to_double(x.pre_base),
                           std::ldexp(max_abs(x.pre_ref), -12) + 1e-6);
    std::size_t bad = 0;
    for (std::int64_t r = 0; r <= c.M; ++r)
      for (std::int64_t j = 0; j < in.ldg; ++j)
        bad += (r < c.M && j < c.N) == static_cast<bool>(out.pre_poison[r * in.ldg + j]);
    INFO(what << ": " << bad << " pre_gelu_out elements wrongly written or left unwritten");
    CHECK(bad == 0);
  } else {
    INFO(what << ": pre_gelu_out written without BIAS_GELU");
    CHECK(pre_written == 0);
  }

  if (c.epi == KILN_GEMM_EPILOGUE_BIAS_GRAD) {
    std::vector<double> got_bg(out.bias_grad.begin(), out.bias_grad.end());
    double bscale = 0;
    for (double v : x.bg_ref)
      bscale = std::max(bscale, std::fabs(v));
    // bf16: cuBLASLt rounds its bias gradient to bf16 before kiln adds it: one more rounding.
    const double batol = c.f32 ? 1e-5 * bscale + 1e-6 : std::ldexp(bscale, -8);
    kiln::test::check_rule(what + " bias_grad", x.bg_ref, got_bg, x.bg_base, batol);
  } else {
    std::vector<double> got_bg(out.bias_grad.begin(), out.bias_grad.end());
    CHECK(got_bg == kiln::test::to_double(in.bias_grad));  // untouched
  }
}

// Whether `backend` may answer NOT_SUPPORTED for `c` rather than compute it: only cuBLASLt, whose
// GELU aux matrix needs a leading dimension that is a multiple of 8 (documented). Its bias
// gradient never refuses: where cuBLASLt lacks a BGRADB algorithm kiln sums the rows itself. The
// hand-written kernels take every case these tests give them.
bool may_refuse(const GemmCase& c, kiln_gemm_backend_t backend, std::int64_t ld_pre_gelu) {
  if (backend != KILN_GEMM_BACKEND_CUBLASLT) return false;
  const bool aux = c.epi == KILN_GEMM_EPILOGUE_BIAS_GELU || c.epi == KILN_GEMM_EPILOGUE_DGELU;
  return aux && ld_pre_gelu % 8 != 0;
}

// Runs `c` on every available backend (or only `only`) and checks each.
void check_case(const GemmCase& c, kiln_gemm_backend_t only = KILN_GEMM_BACKEND_AUTO) {
  auto rng = kiln::test::make_rng(std::hash<std::string>{}(describe(c)));
  const Inputs in = make_inputs(c, rng);
  const Expected x = expect(c, in, rng);
  for (kiln_gemm_backend_t backend : kBackends) {
    if (only != KILN_GEMM_BACKEND_AUTO && backend != only) continue;
    if (!available(backend)) continue;
    const std::string what = describe(c) + " [" + kiln_gemm_backend_name(backend) + "]";
    INFO(what);
    Outputs out;
    kiln_status_t status;
    const bool ran = c.f32 ? run_on_device<float>(c, in, backend, out, &status)
                           : run_on_device<bf16>(c, in, backend, out, &status);
    if (!ran) {
      INFO("status " << kiln_status_name(status) << ": " << kiln_last_error());
      CHECK(may_refuse(c, backend, in.ldg));
      CHECK(status == KILN_STATUS_NOT_SUPPORTED);
      if (status == KILN_STATUS_NOT_SUPPORTED)
        WARN(what << ": not supported by this backend (" << kiln_last_error() << ")");
      continue;
    }
    check_outputs(c, in, x, out, what);
  }
}

std::int64_t tokens() {
  return kiln::test::quick_mode() ? 256 : 8192;  // B * T: 8 x 1024
}

}  // namespace

TEST_CASE("gemm: every backend and epilogue, every layout, on a shape that is no tile multiple",
          "[gemm]") {
  const kiln_gemm_epilogue_t epilogues[] = {
      KILN_GEMM_EPILOGUE_NONE,     KILN_GEMM_EPILOGUE_BIAS,  KILN_GEMM_EPILOGUE_BIAS_GELU,
      KILN_GEMM_EPILOGUE_RESIDUAL, KILN_GEMM_EPILOGUE_DGELU, KILN_GEMM_EPILOGUE_BIAS_GRAD};
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (kiln_gemm_epilogue_t e : epilogues)
        for (int f32 = 0; f32 < 2; ++f32) {
          if (f32 && e != KILN_GEMM_EPILOGUE_NONE && e != KILN_GEMM_EPILOGUE_BIAS_GRAD) continue;
          GemmCase c;
          c.name = "layouts";
          c.M = 328;  // 2 full 128-row tiles + 72
          c.N = 392;  // a full 256-column tile + 136 (and 3 full 128-column tiles + 8)
          c.K = 200;  // 3 full 64-k blocks + 8
          c.ta = ta;
          c.tb = tb;
          c.epi = e;
          c.f32 = f32;
          c.alpha = e == KILN_GEMM_EPILOGUE_BIAS_GRAD ? 1.0f : 0.75f;
          c.beta = (e == KILN_GEMM_EPILOGUE_RESIDUAL || e == KILN_GEMM_EPILOGUE_BIAS_GRAD ||
                    e == KILN_GEMM_EPILOGUE_NONE)
                       ? 0.5f
                       : 0.0f;
          check_case(c);
        }
}

// The smoke set (scripts/gpu-window.sh runs it first and under compute-sanitizer): each backend
// (cuBLASLt, sm_90a, sm_80; the last two required on Hopper, available()), forward with the
// fused bias + GELU, the dGELU backward, the bias gradient into fp32, on one ragged shape.
TEST_CASE("gemm smoke: every backend, one small ragged shape, three epilogues", "[gemm][smoke]") {
  for (const kiln_gemm_epilogue_t e :
       {KILN_GEMM_EPILOGUE_BIAS_GELU, KILN_GEMM_EPILOGUE_DGELU, KILN_GEMM_EPILOGUE_BIAS_GRAD}) {
    GemmCase c;
    c.name = "smoke";
    c.M = 200;  // a 128-row tile + 72
    c.N = 264;  // a 256-column tile + 8
    c.K = 136;  // 2 full 64-k blocks + 8
    c.tb = e == KILN_GEMM_EPILOGUE_DGELU;
    c.ta = e == KILN_GEMM_EPILOGUE_BIAS_GRAD;
    c.epi = e;
    c.f32 = e == KILN_GEMM_EPILOGUE_BIAS_GRAD;
    c.beta = e == KILN_GEMM_EPILOGUE_BIAS_GRAD ? 0.5f : 0.0f;
    check_case(c);
  }
}

TEST_CASE("gemm: GPT-2 layer shapes, forward and backward, as the runtime calls them", "[gemm]") {
  const std::int64_t BT = tokens(), C = 768, V = 50304;
  const int rows = 48;
  auto fwd = [&](const char* name, std::int64_t N, std::int64_t K, kiln_gemm_epilogue_t e) {
    GemmCase c;
    c.name = name;
    c.M = BT;
    c.N = N;
    c.K = K;
    c.tb = true;
    c.epi = e;
    c.sample_rows = rows;
    if (e == KILN_GEMM_EPILOGUE_RESIDUAL) c.beta = 1.0f;
    return c;
  };
  check_case(fwd("qkv", 3 * C, C, KILN_GEMM_EPILOGUE_BIAS));
  check_case(fwd("fc", 4 * C, C, KILN_GEMM_EPILOGUE_BIAS_GELU));
  check_case(fwd("attn proj", C, C, KILN_GEMM_EPILOGUE_RESIDUAL));
  check_case(fwd("fc proj", C, 4 * C, KILN_GEMM_EPILOGUE_RESIDUAL));
  check_case(fwd("lm head", V, C, KILN_GEMM_EPILOGUE_NONE));

  auto dx = [&](const char* name, std::int64_t N, std::int64_t K, kiln_gemm_epilogue_t e) {
    GemmCase c;
    c.name = name;
    c.M = BT;
    c.N = N;
    c.K = K;
    c.epi = e;
    c.sample_rows = rows;
    return c;
  };
  check_case(dx("dX fc proj (dgelu)", 4 * C, C, KILN_GEMM_EPILOGUE_DGELU));
  check_case(dx("dX qkv", C, 3 * C, KILN_GEMM_EPILOGUE_NONE));
  check_case(dx("dX lm head", C, V, KILN_GEMM_EPILOGUE_NONE));

  auto dw = [&](const char* name, std::int64_t M, std::int64_t N, kiln_gemm_epilogue_t e) {
    GemmCase c;
    c.name = name;
    c.M = M;
    c.N = N;
    c.K = BT;
    c.ta = true;
    c.epi = e;
    c.f32 = true;
    c.beta = 1.0f;
    c.in_place = true;
    c.sample_rows = rows;
    return c;
  };
  check_case(dw("dW qkv", 3 * C, C, KILN_GEMM_EPILOGUE_BIAS_GRAD));
  check_case(dw("dW fc", 4 * C, C, KILN_GEMM_EPILOGUE_BIAS_GRAD));
  check_case(dw("dW fc proj", C, 4 * C, KILN_GEMM_EPILOGUE_BIAS_GRAD));
  check_case(dw("dW lm head", V, C, KILN_GEMM_EPILOGUE_NONE));
}

TEST_CASE("gemm: large squares", "[gemm]") {
  const std::vector<std::int64_t> sizes = kiln::test::quick_mode()
                                              ? std::vector<std::int64_t>{1024}
                                              : std::vector<std::int64_t>{4096, 8192};
  for (std::int64_t n : sizes) {
    GemmCase c;
    c.name = "square";
    c.M = c.N = c.K = n;
    c.tb = true;
    c.sample_rows = n >= 8192 ? 24 : 40;
    check_case(c);
    c.tb = false;
    c.epi = KILN_GEMM_EPILOGUE_BIAS_GELU;
    check_case(c);
  }
}

TEST_CASE("gemm: odd shapes (M, N, K in 1, 17, 127, 1000)", "[gemm]") {
  const std::int64_t dims[] = {1, 17, 127, 1000};
  const kiln_gemm_epilogue_t epilogues[] = {KILN_GEMM_EPILOGUE_BIAS_GELU, KILN_GEMM_EPILOGUE_NONE,
                                            KILN_GEMM_EPILOGUE_DGELU, KILN_GEMM_EPILOGUE_RESIDUAL};
  int i = 0;
  for (std::int64_t M : dims)
    for (std::int64_t N : dims)
      for (std::int64_t K : dims) {
        GemmCase c;
        c.name = "odd";
        c.M = M;
        c.N = N;
        c.K = K;
        c.ta = (i & 1) != 0;
        c.tb = (i & 2) != 0;
        c.epi = epilogues[(i >> 2) % 4];
        if (c.epi == KILN_GEMM_EPILOGUE_RESIDUAL) c.beta = 1.0f;
        ++i;
        // Packed rows of odd length: only cuBLASLt can take them (the hand-written kernels need
        // 16-byte rows and say so, checked in tests/cpu/gemm_args_test.cpp).
        check_case(c, KILN_GEMM_BACKEND_CUBLASLT);
        // Rows padded to 16 bytes: every backend, the odd extents handled by TMA's
        // out-of-bounds fill and the kernels' predication.
        c.align = true;
        check_case(c);
      }
}

TEST_CASE(
    "gemm: leading dimensions past the packed ones, residual without bias, C read only "
    "when beta != 0",
    "[gemm]") {
  GemmCase c;
  c.name = "strided";
  c.M = 200;
  c.N = 136;
  c.K = 72;
  c.pad = 24;
  c.align = true;
  c.epi = KILN_GEMM_EPILOGUE_BIAS_GELU;
  check_case(c);
  c.ta = c.tb = true;
  c.epi = KILN_GEMM_EPILOGUE_RESIDUAL;
  c.beta = -1.0f;
  c.has_bias = false;
  check_case(c);
  c.epi = KILN_GEMM_EPILOGUE_BIAS_GRAD;
  c.beta = 1.0f;
  c.f32 = false;
  c.in_place = true;  // bf16 accumulation in place
  c.alpha = 1.0f;
  check_case(c);
}

TEST_CASE("gemm: the bias gradient is bitwise repeatable", "[gemm]") {
  const std::int64_t M = 3 * 768, N = 768, K = kiln::test::quick_mode() ? 512 : 8192;
  auto rng = kiln::test::make_rng(11);
  const auto a = kiln::test::to_bf16(kiln::test::random_uniform(K * M, -1, 1, rng));
  const auto b = kiln::test::to_bf16(kiln::test::random_uniform(K * N, -1, 1, rng));
  const auto g0 = kiln::test::random_uniform(M, -1, 1, rng);
  const auto w0 = kiln::test::random_uniform(M * N, -1, 1, rng);
  DeviceBuffer<bf16> da(a), db(b);
  for (kiln_gemm_backend_t backend : kBackends) {
    if (!available(backend)) continue;
    INFO("backend " << kiln_gemm_backend_name(backend));
    std::vector<std::vector<float>> grads, weights;
    for (int run = 0; run < 3; ++run) {
      DeviceBuffer<float> dw(w0), dbias(g0);
      kiln_gemm_params_t p;
      kiln_gemm_params_init(&p);
      p.m = M;
      p.n = N;
      p.k = K;
      p.trans_a = 1;
      p.a = da.get();
      p.b = db.get();
      p.c = dw.get();
      p.d = dw.get();
      p.beta = 1.0f;
      p.cd_dtype = KILN_DTYPE_F32;
      p.epilogue = KILN_GEMM_EPILOGUE_BIAS_GRAD;
      p.bias_grad = dbias.get();
      p.backend = backend;
      REQUIRE(kiln_gemm(env().ctx.get(), &p, nullptr) == KILN_STATUS_OK);
      grads.push_back(dbias.download());
      weights.push_back(dw.download());
    }
    CHECK(kiln::test::bitwise_equal(grads[0], grads[1]));
    CHECK(kiln::test::bitwise_equal(grads[0], grads[2]));
    CHECK(kiln::test::bitwise_equal(weights[0], weights[1]));
    CHECK(kiln::test::bitwise_equal(weights[0], weights[2]));
    CHECK(grads[0] != g0);  // it did accumulate
  }
}

namespace {

double gelu_erf(double x) {
  return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}
double gelu_erf_grad(double x) {
  const double pi = 3.14159265358979323846;
  return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) +
         x * std::exp(-0.5 * x * x) / std::sqrt(2 * pi);
}
float to_bf16_value(double x) {
  return __bfloat162float(__float2bfloat16(static_cast<float>(x)));
}

}  // namespace

TEST_CASE("gemm: which GELU each backend applies (tanh approximation, not erf)", "[gemm]") {
  // D = gelu(bias[n]) exactly: A = 0, so the pre-activation is the bias itself, a bf16 value.
  // For each bias value where the two GELUs round to different bf16 values, see which one D
  // equals. cuBLASLt does not document its GELU; kiln's contract is the tanh approximation.
  // DGELU the same way: acc = 1 exactly (A row (1, 0, ...), B row (1, 0, ...)), pre_gelu = x.
  std::vector<float> xs;
  for (float x = -6.0f; x <= 6.0f; x = std::nextafter(to_bf16_value(x), 10.0f))
    if (to_bf16_value(x) == x) xs.push_back(x);
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  const std::int64_t N = static_cast<std::int64_t>((xs.size() + 7) / 8 * 8), M = 8, K = 8;
  xs.resize(N, 0.0f);
  std::vector<float> a(M * K, 0.0f), b(N * K, 0.0f), pre(M * N);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n)
      pre[m * N + n] = xs[n];
  DeviceBuffer<bf16> bias(kiln::test::to_bf16(xs)), zero_a(kiln::test::to_bf16(a)),
      pre_in(kiln::test::to_bf16(pre));
  for (std::int64_t m = 0; m < M; ++m)
    a[m * K] = 1.0f;
  for (std::int64_t n = 0; n < N; ++n)
    b[n * K] = 1.0f;
  DeviceBuffer<bf16> unit_a(kiln::test::to_bf16(a)), unit_b(kiln::test::to_bf16(b));
  for (kiln_gemm_backend_t backend : kBackends) {
    if (!available(backend)) continue;
    for (int grad = 0; grad < 2; ++grad) {
      DeviceBuffer<bf16> d(M * N), pre_out(M * N);
      d.poison();
      kiln_gemm_params_t p;
      kiln_gemm_params_init(&p);
      p.m = M;
      p.n = N;
      p.k = K;
      p.trans_b = 1;
      p.a = grad ? unit_a.get() : zero_a.get();
      p.b = unit_b.get();
      p.d = d.get();
      p.epilogue = grad ? KILN_GEMM_EPILOGUE_DGELU : KILN_GEMM_EPILOGUE_BIAS_GELU;
      p.bias = bias.get();
      p.pre_gelu_out = pre_out.get();
      p.pre_gelu = pre_in.get();
      p.backend = backend;
      REQUIRE(kiln_gemm(env().ctx.get(), &p, nullptr) == KILN_STATUS_OK);
      const std::vector<float> got = kiln::test::to_float(d.download());
      int tanh_wins = 0, erf_wins = 0, neither = 0;
      for (std::int64_t n = 0; n < N; ++n) {
        const double x = xs[n];
        const float t =
            to_bf16_value(grad ? kiln::ref::gelu_tanh_grad_ref(x) : kiln::ref::gelu_tanh_ref(x));
        const float e = to_bf16_value(grad ? gelu_erf_grad(x) : gelu_erf(x));
        if (t == e) continue;
        const float g = got[(M - 1) * N + n];
        if (g == t)
          ++tanh_wins;
        else if (g == e)
          ++erf_wins;
        else
          ++neither;
      }
      INFO("backend " << kiln_gemm_backend_name(backend) << (grad ? " dgelu" : " gelu")
                      << ": where the two GELUs round apart, D matches tanh " << tanh_wins
                      << " times, erf " << erf_wins << " times, neither " << neither);
      CHECK(tanh_wins > 10 * std::max(erf_wins, 1));
    }
  }
}

TEST_CASE("gemm: AUTO, tuning and the table of measured winners", "[gemm]") {
  const std::int64_t M = 1024, N = 768, K = 768;
  auto rng = kiln::test::make_rng(12);
  DeviceBuffer<bf16> a(kiln::test::to_bf16(kiln::test::random_uniform(M * K, -1, 1, rng)));
  DeviceBuffer<bf16> b(kiln::test::to_bf16(kiln::test::random_uniform(N * K, -1, 1, rng)));
  DeviceBuffer<bf16> bias(kiln::test::to_bf16(kiln::test::random_uniform(N, -1, 1, rng)));
  DeviceBuffer<bf16> d(M * N), d_ref(M * N);
  kiln_gemm_params_t p;
  kiln_gemm_params_init(&p);
  p.m = M;
  p.n = N;
  p.k = K;
  p.trans_b = 1;
  p.a = a.get();
  p.b = b.get();
  p.epilogue = KILN_GEMM_EPILOGUE_BIAS;
  p.bias = bias.get();
  kiln_gemm_context_t* ctx = env().ctx.get();

  kiln_gemm_backend_t chosen = KILN_GEMM_BACKEND_AUTO;
  REQUIRE(kiln_gemm_select(ctx, &p, &chosen) == KILN_STATUS_OK);
  CHECK(chosen != KILN_GEMM_BACKEND_AUTO);

  p.d = d.get();
  REQUIRE(kiln_gemm_tune(ctx, &p, nullptr, &chosen) == KILN_STATUS_OK);
  kiln_gemm_backend_t selected = KILN_GEMM_BACKEND_AUTO;
  REQUIRE(kiln_gemm_select(ctx, &p, &selected) == KILN_STATUS_OK);
  CHECK(selected == chosen);  // AUTO follows the measurement

  // AUTO's result equals the chosen backend's, bit for bit.
  d.poison();
  REQUIRE(kiln_gemm(ctx, &p, nullptr) == KILN_STATUS_OK);
  p.backend = chosen;
  p.d = d_ref.get();
  REQUIRE(kiln_gemm(ctx, &p, nullptr) == KILN_STATUS_OK);
  CHECK(kiln::test::bitwise_equal(d.download(), d_ref.download()));
  p.backend = KILN_GEMM_BACKEND_AUTO;

  // Save, force another winner, load: the saved one comes back.
  const std::string path = "gemm_table_test.jsonl";
  REQUIRE(kiln_gemm_table_save(ctx, path.c_str()) == KILN_STATUS_OK);
  const kiln_gemm_backend_t other =
      chosen == KILN_GEMM_BACKEND_CUBLASLT ? KILN_GEMM_BACKEND_SM80 : KILN_GEMM_BACKEND_CUBLASLT;
  REQUIRE(kiln_gemm_table_set(ctx, &p, other) == KILN_STATUS_OK);
  REQUIRE(kiln_gemm_select(ctx, &p, &selected) == KILN_STATUS_OK);
  CHECK(selected == other);
  REQUIRE(kiln_gemm_table_load(ctx, path.c_str()) == KILN_STATUS_OK);
  REQUIRE(kiln_gemm_select(ctx, &p, &selected) == KILN_STATUS_OK);
  CHECK(selected == chosen);
  // KILN_GEMM_TABLE: a fresh context starts from the file, at its first AUTO call.
  {
    REQUIRE(setenv("KILN_GEMM_TABLE", path.c_str(), 1) == 0);
    kiln::GemmContext fresh(env().device.cublaslt(), env().device.workspace(),
                            env().device.workspace_bytes());
    REQUIRE(kiln_gemm_select(fresh.get(), &p, &selected) == KILN_STATUS_OK);
    CHECK(selected == chosen);
    REQUIRE(unsetenv("KILN_GEMM_TABLE") == 0);
  }
  std::remove(path.c_str());
  CHECK(kiln_gemm_table_load(ctx, path.c_str()) == KILN_STATUS_IO_ERROR);

  // A forced backend the device lacks is refused, not silently replaced.
  int sm90 = 0;
  REQUIRE(kiln_gemm_backend_available(KILN_GEMM_BACKEND_SM90, &sm90) == KILN_STATUS_OK);
  if (!sm90) {
    p.backend = KILN_GEMM_BACKEND_SM90;
    CHECK(kiln_gemm(ctx, &p, nullptr) == KILN_STATUS_NOT_SUPPORTED);
  }
}

TEST_CASE("gemm: cuBLASLt's bias-gradient fallback sums op(A)'s rows deterministically", "[gemm]") {
  // kiln's own row sums run when cuBLASLt has no BGRADB algorithm for a problem; which problems
  // those are depends on the cuBLASLt version, so they are tested here directly.
  auto rng = kiln::test::make_rng(13);
  int multiprocessors = 0;
  REQUIRE(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, 0) ==
          cudaSuccess);
  struct Shape {
    std::int64_t M, K;
  };
  for (const Shape s : {Shape{1, 1}, Shape{17, 1000}, Shape{768, 8192}, Shape{3000, 333}}) {
    for (int trans = 0; trans < 2; ++trans)
      for (int f32 = 0; f32 < 2; ++f32)
        for (std::size_t scratch_bytes : {std::size_t{0}, std::size_t{32} << 20}) {
          INFO("M " << s.M << " K " << s.K << " trans_a " << trans << " f32 " << f32 << " scratch "
                    << scratch_bytes);
          const std::int64_t lda = (trans ? s.M : s.K) + 3;
          const std::int64_t rows = trans ? s.K : s.M;
          std::vector<float> a =
              kiln::test::round_to_bf16(kiln::test::random_uniform(rows * lda, -1, 1, rng));
          std::vector<float> g0 = kiln::test::random_uniform(s.M, -1, 1, rng);
          if (!f32) g0 = kiln::test::round_to_bf16(g0);
          std::vector<double> want(s.M), base(s.M);
          for (std::int64_t m = 0; m < s.M; ++m) {
            double sd = 0;
            float sf = 0;
            for (std::int64_t k = 0; k < s.K; ++k) {
              const float v = trans ? a[k * lda + m] : a[m * lda + k];
              sd += v;
              sf += v;
            }
            want[m] = g0[m] + sd;
            base[m] = f32 ? g0[m] + sf : __bfloat162float(__float2bfloat16(g0[m] + sf));
          }
          DeviceBuffer<bf16> da(kiln::test::to_bf16(a));
          DeviceBuffer<std::uint8_t> scratch(scratch_bytes);
          std::vector<std::vector<double>> runs;
          for (int run = 0; run < 2; ++run) {
            std::vector<double> got;
            if (f32) {
              DeviceBuffer<float> g(g0);
              kiln::impl::op_a_row_sums_accumulate(g.get(), true, da.get(), trans, lda, s.M, s.K,
                                                   scratch.get(), scratch_bytes, multiprocessors,
                                                   nullptr);
              got = kiln::test::to_double(g.download());
            } else {
              DeviceBuffer<bf16> g(kiln::test::to_bf16(g0));
              kiln::impl::op_a_row_sums_accumulate(g.get(), false, da.get(), trans, lda, s.M, s.K,
                                                   scratch.get(), scratch_bytes, multiprocessors,
                                                   nullptr);
              got = kiln::test::to_double(g.download());
            }
            runs.push_back(got);
          }
          double scale = 0;
          for (double v : want)
            scale = std::max(scale, std::fabs(v));
          kiln::test::check_rule("row sums", want, runs[0], base,
                                 f32 ? 1e-5 * scale + 1e-6 : std::ldexp(scale, -9));
          CHECK(kiln::test::bitwise_equal(runs[0], runs[1]));
        }
  }
}
