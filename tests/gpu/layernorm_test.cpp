// LayerNorm kernels against the double reference with the tolerance rule
// (tests/common/compare.hpp): max error <= 2x that of the same computation in the kernel's
// precision (inputs rounded to the dtype, fp32 arithmetic, outputs rounded to the dtype) plus a
// small absolute term. Over the shape grid of rows_support.hpp, bf16 and fp32; outputs poisoned
// with NaN before each call; each call run twice and compared bitwise; NaN / Inf inputs must reach
// the outputs the reference says.
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/norm/layernorm_ref.hpp"
#include "kiln/layernorm.h"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/rows_support.hpp"

using kiln::test::check_rule;
using kiln::test::DeviceBuffer;
namespace kt = kiln::test;
namespace rows = kiln::test::rows;

namespace {

constexpr double kEps = 1e-5;

struct FwdInputs {
  std::vector<float> x, b, gamma, beta;  // as stored on the device (rounded to T)
};

template <typename T>
FwdInputs make_inputs(const rows::Shape& s, bool residual, std::mt19937_64& rng) {
  FwdInputs in;
  // An offset of 2 makes the centring matter; for the fused variant a + b carries it.
  in.x = rows::stored<T>(kt::random_normal(s.elems(), residual ? 1.0f : 2.0f, 1.5f, rng));
  if (residual) in.b = rows::stored<T>(kt::random_normal(s.elems(), 1.0f, 0.5f, rng));
  in.gamma = rows::stored<T>(kt::random_uniform(s.C, 0.5f, 1.5f, rng));
  in.beta = rows::stored<T>(kt::random_uniform(s.C, -0.5f, 0.5f, rng));
  return in;
}

struct FwdResult {
  std::vector<double> residual, y, mean, rstd;
};

// The kernel's outputs, poisoned before the call.
template <typename T>
FwdResult run_fwd(const rows::Shape& s, const FwdInputs& in, bool residual, bool in_place) {
  DeviceBuffer<T> x(rows::to_device<T>(in.x)), gamma(rows::to_device<T>(in.gamma)),
      beta(rows::to_device<T>(in.beta));
  DeviceBuffer<T> b(residual ? rows::to_device<T>(in.b) : std::vector<T>{});
  DeviceBuffer<T> r(residual ? s.elems() : 0), y(s.elems());
  DeviceBuffer<float> mean(s.N), rstd(s.N);
  y.poison();
  r.poison();
  mean.poison();
  rstd.poison();
  FwdResult out;
  if (residual) {
    // in_place: the residual stream a is updated in place.
    T* res = in_place ? x.get() : r.get();
    KILN_REQUIRE_OK(kiln_residual_layernorm_fwd(res, y.get(), mean.get(), rstd.get(), x.get(),
                                                b.get(), gamma.get(), beta.get(), s.N, s.C, kEps,
                                                rows::kDtype<T>, nullptr));
    out.residual = rows::from_device(in_place ? x.download() : r.download());
    out.y = rows::from_device(y.download());
  } else {
    T* dst = in_place ? x.get() : y.get();
    KILN_REQUIRE_OK(kiln_layernorm_fwd(dst, mean.get(), rstd.get(), x.get(), gamma.get(),
                                       beta.get(), s.N, s.C, kEps, rows::kDtype<T>, nullptr));
    out.y = rows::from_device(in_place ? x.download() : y.download());
  }
  out.mean = kt::to_double(mean.download());
  out.rstd = kt::to_double(rstd.download());
  return out;
}

template <typename T>
void check_fwd(const rows::Shape& s, bool residual, std::mt19937_64& rng) {
  INFO(rows::describe(rows::dtype_name<T>(), s) << (residual ? " residual" : ""));
  const FwdInputs in = make_inputs<T>(s, residual, rng);

  // The residual the kernel must store: a + b in fp32, rounded once to T (exactly what the host
  // computes in float, so it is compared bitwise).
  std::vector<float> x_used = in.x;
  if (residual) {
    for (std::size_t i = 0; i < x_used.size(); ++i)
      x_used[i] = in.x[i] + in.b[i];
    x_used = rows::stored<T>(x_used);
  }
  const auto xd = kt::to_double(x_used), gd = kt::to_double(in.gamma), bd = kt::to_double(in.beta);
  std::vector<double> y_ref(s.elems()), mean_ref(s.N), rstd_ref(s.N);
  kiln::ref::layernorm_fwd_ref<double>(y_ref.data(), mean_ref.data(), rstd_ref.data(), xd.data(),
                                       gd.data(), bd.data(), s.N, s.C, kEps);
  std::vector<float> y_base(s.elems()), mean_base(s.N), rstd_base(s.N);
  kiln::ref::layernorm_fwd_ref<float, float>(y_base.data(), mean_base.data(), rstd_base.data(),
                                             x_used.data(), in.gamma.data(), in.beta.data(), s.N,
                                             s.C, kEps);
  y_base = rows::stored<T>(y_base);

  const FwdResult got = run_fwd<T>(s, in, residual, false);
  if (residual) CHECK(got.residual == kt::to_double(x_used));
  check_rule("y", y_ref, got.y, kt::to_double(y_base), rows::atol_for<T>(y_ref));
  check_rule("mean", mean_ref, got.mean, kt::to_double(mean_base), rows::atol_fp32(mean_ref));
  check_rule("rstd", rstd_ref, got.rstd, kt::to_double(rstd_base), rows::atol_fp32(rstd_ref));

  const FwdResult again = run_fwd<T>(s, in, residual, false);
  CHECK(kt::bitwise_equal(got.y, again.y));
  CHECK(kt::bitwise_equal(got.mean, again.mean));
  CHECK(kt::bitwise_equal(got.rstd, again.rstd));
  if (s.N <= 37) {  // in place (y = x, or residual = a) gives the same bits
    const FwdResult in_place = run_fwd<T>(s, in, residual, true);
    CHECK(kt::bitwise_equal(got.y, in_place.y));
    if (residual) CHECK(kt::bitwise_equal(got.residual, in_place.residual));
  }
}

struct BwdResult {
  std::vector<double> dx, dgamma, dbeta;
};

template <typename T>
void check_bwd(const rows::Shape& s, std::mt19937_64& rng) {
  INFO(rows::describe(rows::dtype_name<T>(), s));
  const FwdInputs in = make_inputs<T>(s, false, rng);
  const auto dy = rows::stored<T>(kt::random_uniform(s.elems(), -1.0f, 1.0f, rng));
  const auto dx0 = rows::stored<T>(kt::random_uniform(s.elems(), -1.0f, 1.0f, rng));
  const auto dg0 = kt::random_uniform(s.C, -1.0f, 1.0f, rng);
  const auto db0 = kt::random_uniform(s.C, -1.0f, 1.0f, rng);
  // The statistics the forward saves (fp32), fed alike to the reference, baseline and kernel.
  std::vector<float> mean(s.N), rstd(s.N), y_unused(s.elems());
  {
    const auto xd = kt::to_double(in.x), gd = kt::to_double(in.gamma), bd = kt::to_double(in.beta);
    std::vector<double> y(s.elems()), m(s.N), r(s.N);
    kiln::ref::layernorm_fwd_ref<double>(y.data(), m.data(), r.data(), xd.data(), gd.data(),
                                         bd.data(), s.N, s.C, kEps);
    for (std::int64_t n = 0; n < s.N; ++n) {
      mean[n] = static_cast<float>(m[n]);
      rstd[n] = static_cast<float>(r[n]);
    }
  }

  std::vector<double> dx_ref = kt::to_double(dx0), dg_ref = kt::to_double(dg0),
                      db_ref = kt::to_double(db0);
  kiln::ref::layernorm_bwd_ref<double>(dx_ref.data(), dg_ref.data(), db_ref.data(),
                                       kt::to_double(dy).data(), kt::to_double(in.x).data(),
                                       kt::to_double(in.gamma).data(), kt::to_double(mean).data(),
                                       kt::to_double(rstd).data(), s.N, s.C);
  std::vector<float> dx_base = dx0, dg_base = dg0, db_base = db0;
  kiln::ref::layernorm_bwd_ref<float, float>(dx_base.data(), dg_base.data(), db_base.data(),
                                             dy.data(), in.x.data(), in.gamma.data(), mean.data(),
                                             rstd.data(), s.N, s.C);
  dx_base = rows::stored<T>(dx_base);

  size_t ws_bytes = 0;
  KILN_REQUIRE_OK(kiln_layernorm_bwd_workspace_size(s.N, s.C, &ws_bytes));
  DeviceBuffer<T> d_dy(rows::to_device<T>(dy)), d_x(rows::to_device<T>(in.x)),
      d_gamma(rows::to_device<T>(in.gamma)), d_dx(s.elems());
  DeviceBuffer<float> d_mean(mean), d_rstd(rstd), d_dg(s.C), d_db(s.C);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  auto run = [&] {
    d_dx.upload(rows::to_device<T>(dx0));  // dx and the parameter gradients accumulate
    d_dg.upload(dg0);
    d_db.upload(db0);
    ws.poison();  // its contents on entry must not matter
    KILN_REQUIRE_OK(kiln_layernorm_bwd(d_dx.get(), d_dg.get(), d_db.get(), d_dy.get(), d_x.get(),
                                       d_gamma.get(), d_mean.get(), d_rstd.get(), s.N, s.C,
                                       ws.get(), ws_bytes, rows::kDtype<T>, nullptr));
    return BwdResult{rows::from_device(d_dx.download()), kt::to_double(d_dg.download()),
                     kt::to_double(d_db.download())};
  };
  const BwdResult got = run();
  check_rule("dx", dx_ref, got.dx, kt::to_double(dx_base), rows::atol_for<T>(dx_ref));
  check_rule("dgamma", dg_ref, got.dgamma, kt::to_double(dg_base), rows::atol_fp32(dg_ref));
  check_rule("dbeta", db_ref, got.dbeta, kt::to_double(db_base), rows::atol_fp32(db_ref));
  const BwdResult again = run();
  CHECK(kt::bitwise_equal(got.dx, again.dx));
  CHECK(kt::bitwise_equal(got.dgamma, again.dgamma));
  CHECK(kt::bitwise_equal(got.dbeta, again.dbeta));
}

}  // namespace

TEST_CASE("layernorm smoke: forward, fused residual forward, backward, one shape per mapping",
          "[layernorm][smoke]") {
  auto rng = kt::make_rng(1009);
  for (const auto& s : rows::smoke_shapes()) {
    check_fwd<rows::bf16>(s, false, rng);
    check_fwd<rows::bf16>(s, true, rng);
    check_bwd<rows::bf16>(s, rng);
  }
  check_fwd<float>(rows::Shape{37, 768}, false, rng);
  check_bwd<float>(rows::Shape{37, 768}, rng);
}

TEST_CASE("layernorm forward matches the reference over the shape grid", "[layernorm]") {
  auto rng = kt::make_rng(1001);
  for (const auto& s : rows::grid()) {
    check_fwd<rows::bf16>(s, false, rng);
    if (s.elems() <= (1u << 20)) check_fwd<float>(s, false, rng);
  }
}

TEST_CASE("fused residual + layernorm forward matches the reference and stores a + b",
          "[layernorm]") {
  auto rng = kt::make_rng(1002);
  for (const auto& s : rows::grid()) {
    check_fwd<rows::bf16>(s, true, rng);
    if (s.elems() <= (1u << 20)) check_fwd<float>(s, true, rng);
  }
}

TEST_CASE("layernorm backward matches the reference and is deterministic", "[layernorm]") {
  auto rng = kt::make_rng(1003);
  for (const auto& s : rows::grid()) {
    check_bwd<rows::bf16>(s, rng);
    if (s.elems() <= (1u << 20)) check_bwd<float>(s, rng);
  }
}

// One block-mode backward kernel serves many widths, each with its own dynamic shared memory
// (100 KiB at C = 8192, 19 KiB at C = 1032 in bf16): the wide launch must still work after the
// narrow one, whose opt-in must not lower the kernel's limit.
TEST_CASE("layernorm backward: a wide row after a narrow one of the same kernel", "[layernorm]") {
  auto rng = kt::make_rng(1005);
  for (const std::int64_t C : {8192, 1032, 8192, 2056, 4096}) {
    check_bwd<rows::bf16>(rows::Shape{3, C}, rng);
    check_bwd<float>(rows::Shape{3, C / 2}, rng);
  }
}

TEST_CASE("layernorm propagates NaN and Inf inputs to the outputs the reference says",
          "[layernorm]") {
  auto rng = kt::make_rng(1004);
  for (const std::int64_t C : {7, 768, 4096}) {
    const rows::Shape s{6, C};
    INFO("C " << C);
    FwdInputs in = make_inputs<rows::bf16>(s, false, rng);
    in.x[1 * C + C / 2] = NAN;  // row 1: NaN
    in.x[3 * C] = INFINITY;     // row 3: +Inf (mean inf, the rest NaN)
    in.x[4 * C + C - 1] = -INFINITY;
    const auto xd = kt::to_double(in.x), gd = kt::to_double(in.gamma), bd = kt::to_double(in.beta);
    std::vector<double> y_ref(s.elems()), mean_ref(s.N), rstd_ref(s.N);
    kiln::ref::layernorm_fwd_ref<double>(y_ref.data(), mean_ref.data(), rstd_ref.data(), xd.data(),
                                         gd.data(), bd.data(), s.N, s.C, kEps);
    const FwdResult got = run_fwd<rows::bf16>(s, in, false, false);
    // The reference as its own baseline: what is checked is the non-finite pattern, and the
    // finite rows to within a bf16 ulp of the peak (fp32 outputs: 8 fp32 ulps).
    check_rule("y", y_ref, got.y, y_ref, rows::atol_for<rows::bf16>(y_ref) * 16);
    check_rule("mean", mean_ref, got.mean, mean_ref, rows::atol_fp32(mean_ref));
    check_rule("rstd", rstd_ref, got.rstd, rstd_ref, rows::atol_fp32(rstd_ref));
    CHECK(std::isnan(got.y[1 * C]));
    CHECK(std::isinf(got.mean[3]));

    // Backward: a NaN in dy poisons its row of dx and its column of dgamma / dbeta only.
    std::vector<float> mean(s.N), rstd(s.N);
    const auto xf = rows::stored<rows::bf16>(kt::random_normal(s.elems(), 0.0f, 1.0f, rng));
    auto dy = rows::stored<rows::bf16>(kt::random_uniform(s.elems(), -1.0f, 1.0f, rng));
    dy[2 * C + 3 % C] = NAN;
    for (std::int64_t n = 0; n < s.N; ++n) {
      mean[n] = 0.1f;
      rstd[n] = 1.5f;
    }
    std::vector<double> dx_ref(s.elems(), 0.0), dg_ref(s.C, 0.0), db_ref(s.C, 0.0);
    kiln::ref::layernorm_bwd_ref<double>(dx_ref.data(), dg_ref.data(), db_ref.data(),
                                         kt::to_double(dy).data(), kt::to_double(xf).data(),
                                         gd.data(), kt::to_double(mean).data(),
                                         kt::to_double(rstd).data(), s.N, s.C);
    size_t ws_bytes = 0;
    KILN_REQUIRE_OK(kiln_layernorm_bwd_workspace_size(s.N, s.C, &ws_bytes));
    DeviceBuffer<rows::bf16> d_dy(kt::to_bf16(dy)), d_x(kt::to_bf16(xf)),
        d_g(kt::to_bf16(in.gamma)), d_dx(std::vector<rows::bf16>(s.elems(), rows::bf16(0.0f)));
    DeviceBuffer<float> d_mean(mean), d_rstd(rstd), d_dg(std::vector<float>(s.C, 0.0f)),
        d_db(std::vector<float>(s.C, 0.0f));
    DeviceBuffer<unsigned char> ws(ws_bytes);
    KILN_REQUIRE_OK(kiln_layernorm_bwd(d_dx.get(), d_dg.get(), d_db.get(), d_dy.get(), d_x.get(),
                                       d_g.get(), d_mean.get(), d_rstd.get(), s.N, s.C, ws.get(),
                                       ws_bytes, KILN_DTYPE_BF16, nullptr));
    const auto dx = kt::to_double(d_dx.download());
    const auto dg = kt::to_double(d_dg.download()), db = kt::to_double(d_db.download());
    check_rule("dx", dx_ref, dx, dx_ref, rows::atol_for<rows::bf16>(dx_ref) * 16);
    check_rule("dgamma", dg_ref, dg, dg_ref, rows::atol_fp32(dg_ref, 64));
    check_rule("dbeta", db_ref, db, db_ref, rows::atol_fp32(db_ref, 64));
    CHECK(std::isnan(dx[2 * C]));
    CHECK(std::isnan(dg[3 % C]));
  }
}
