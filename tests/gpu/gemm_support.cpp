// The GEMM GPU tests' harness (gemm_support.hpp): inputs with NaN padding, the device run of one
// case on one backend, the reference and same-precision baseline of sampled rows, and the checks.
#include "tests/gpu/gemm_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/gemm/gemm_ref.hpp"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/gemm_ref_rows.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/paths.hpp"

namespace kiln::test::gemm {

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

std::string describe(const GemmCase& c) {
  std::ostringstream os;
  os << c.name << ": M " << c.M << " N " << c.N << " K " << c.K << " trans_a " << c.ta
     << " trans_b " << c.tb << " epilogue " << kiln_gemm_epilogue_name(c.epi) << " cd "
     << (c.f32 ? "f32" : "bf16") << " alpha " << c.alpha << " beta " << c.beta << " pad " << c.pad
     << (c.align ? " aligned" : "") << (c.in_place ? " in-place" : "");
  return os.str();
}

namespace {

using kiln::test::DeviceBuffer;

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

}  // namespace

void check_case(const GemmCase& c, kiln_gemm_backend_t only) {
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

}  // namespace kiln::test::gemm
