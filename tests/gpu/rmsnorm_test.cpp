// RMSNorm kernels against the double reference with the tolerance rule (see layernorm_test.cpp):
// the shape grid in bf16 and fp32, poisoned outputs, bitwise repeatability, NaN propagation; and
// the fused residual add + RMSNorm forward, whose residual must be a + b rounded once.
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "kernels/norm/rmsnorm_ref.hpp"
#include "kiln/rmsnorm.h"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/rows_support.hpp"

using kiln::test::check_rule;
using kiln::test::DeviceBuffer;
namespace kt = kiln::test;
namespace rows = kiln::test::rows;

namespace {

constexpr double kEps = 1e-6;

template <typename T>
void check_rmsnorm(const rows::Shape& s, std::mt19937_64& rng) {
  INFO(rows::describe(rows::dtype_name<T>(), s));
  const auto x = rows::stored<T>(kt::random_normal(s.elems(), 0.5f, 1.5f, rng));
  const auto gamma = rows::stored<T>(kt::random_uniform(s.C, 0.5f, 1.5f, rng));
  const auto xd = kt::to_double(x), gd = kt::to_double(gamma);

  // Forward.
  std::vector<double> y_ref(s.elems()), rstd_ref(s.N);
  kiln::ref::rmsnorm_fwd_ref<double>(y_ref.data(), rstd_ref.data(), xd.data(), gd.data(), s.N, s.C,
                                     kEps);
  std::vector<float> y_base(s.elems()), rstd_base(s.N);
  kiln::ref::rmsnorm_fwd_ref<float, float>(y_base.data(), rstd_base.data(), x.data(), gamma.data(),
                                           s.N, s.C, kEps);
  y_base = rows::stored<T>(y_base);
  DeviceBuffer<T> d_x(rows::to_device<T>(x)), d_g(rows::to_device<T>(gamma)), d_y(s.elems());
  DeviceBuffer<float> d_rstd(s.N);
  auto fwd = [&] {
    d_y.poison();
    d_rstd.poison();
    KILN_REQUIRE_OK(kiln_rmsnorm_fwd(d_y.get(), d_rstd.get(), d_x.get(), d_g.get(), s.N, s.C, kEps,
                                     rows::kDtype<T>, nullptr));
    return std::make_pair(rows::from_device(d_y.download()), kt::to_double(d_rstd.download()));
  };
  const auto [y, rstd] = fwd();
  check_rule("y", y_ref, y, kt::to_double(y_base), rows::atol_for<T>(y_ref));
  check_rule("rstd", rstd_ref, rstd, kt::to_double(rstd_base), rows::atol_fp32(rstd_ref));
  const auto [y2, rstd2] = fwd();
  CHECK(kt::bitwise_equal(y, y2));
  CHECK(kt::bitwise_equal(rstd, rstd2));

  // Backward, fed the fp32 rstd the forward saves.
  std::vector<float> rstd_f(s.N);
  for (std::int64_t n = 0; n < s.N; ++n)
    rstd_f[n] = static_cast<float>(rstd_ref[n]);
  const auto dy = rows::stored<T>(kt::random_uniform(s.elems(), -1.0f, 1.0f, rng));
  const auto dx0 = rows::stored<T>(kt::random_uniform(s.elems(), -1.0f, 1.0f, rng));
  const auto dg0 = kt::random_uniform(s.C, -1.0f, 1.0f, rng);
  std::vector<double> dx_ref = kt::to_double(dx0), dg_ref = kt::to_double(dg0);
  kiln::ref::rmsnorm_bwd_ref<double>(dx_ref.data(), dg_ref.data(), kt::to_double(dy).data(),
                                     xd.data(), gd.data(), kt::to_double(rstd_f).data(), s.N, s.C);
  std::vector<float> dx_base = dx0, dg_base = dg0;
  kiln::ref::rmsnorm_bwd_ref<float, float>(dx_base.data(), dg_base.data(), dy.data(), x.data(),
                                           gamma.data(), rstd_f.data(), s.N, s.C);
  dx_base = rows::stored<T>(dx_base);
  size_t ws_bytes = 0;
  KILN_REQUIRE_OK(kiln_rmsnorm_bwd_workspace_size(s.N, s.C, &ws_bytes));
  DeviceBuffer<T> d_dy(rows::to_device<T>(dy)), d_dx(s.elems());
  DeviceBuffer<float> d_rs(rstd_f), d_dg(s.C);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  auto bwd = [&] {
    d_dx.upload(rows::to_device<T>(dx0));
    d_dg.upload(dg0);
    ws.poison();
    KILN_REQUIRE_OK(kiln_rmsnorm_bwd(d_dx.get(), d_dg.get(), d_dy.get(), d_x.get(), d_g.get(),
                                     d_rs.get(), s.N, s.C, ws.get(), ws_bytes, rows::kDtype<T>,
                                     nullptr));
    return std::make_pair(rows::from_device(d_dx.download()), kt::to_double(d_dg.download()));
  };
  const auto [dx, dg] = bwd();
  check_rule("dx", dx_ref, dx, kt::to_double(dx_base), rows::atol_for<T>(dx_ref));
  check_rule("dgamma", dg_ref, dg, kt::to_double(dg_base), rows::atol_fp32(dg_ref));
  const auto [dx2, dg2] = bwd();
  CHECK(kt::bitwise_equal(dx, dx2));
  CHECK(kt::bitwise_equal(dg, dg2));
}

// residual = a + b, y = RMSNorm(residual): residual compared bitwise with the host's fp32 sum
// rounded to T, y and rstd by the tolerance rule against the reference on that residual.
// alias: the residual stream updated in place, as residual = a or residual = b (both allowed).
template <typename T>
void check_residual_rmsnorm(const rows::Shape& s, std::mt19937_64& rng) {
  INFO(rows::describe(rows::dtype_name<T>(), s) << " residual");
  const auto a = rows::stored<T>(kt::random_normal(s.elems(), 0.5f, 1.5f, rng));
  const auto b = rows::stored<T>(kt::random_normal(s.elems(), 0.0f, 0.5f, rng));
  const auto gamma = rows::stored<T>(kt::random_uniform(s.C, 0.5f, 1.5f, rng));
  std::vector<float> x(s.elems());
  for (std::size_t i = 0; i < x.size(); ++i)
    x[i] = a[i] + b[i];
  x = rows::stored<T>(x);
  const auto xd = kt::to_double(x), gd = kt::to_double(gamma);
  std::vector<double> y_ref(s.elems()), rstd_ref(s.N);
  kiln::ref::rmsnorm_fwd_ref<double>(y_ref.data(), rstd_ref.data(), xd.data(), gd.data(), s.N, s.C,
                                     kEps);
  std::vector<float> y_base(s.elems()), rstd_base(s.N);
  kiln::ref::rmsnorm_fwd_ref<float, float>(y_base.data(), rstd_base.data(), x.data(), gamma.data(),
                                           s.N, s.C, kEps);
  y_base = rows::stored<T>(y_base);

  DeviceBuffer<T> d_b(rows::to_device<T>(b)), d_g(rows::to_device<T>(gamma)), d_a(s.elems()),
      d_r(s.elems()), d_y(s.elems());
  DeviceBuffer<float> d_rstd(s.N);
  enum class Alias { none, into_a, into_b };
  auto run = [&](Alias alias) {
    d_a.upload(rows::to_device<T>(a));
    d_b.upload(rows::to_device<T>(b));
    d_r.poison();
    d_y.poison();
    d_rstd.poison();
    DeviceBuffer<T>& res = alias == Alias::into_a ? d_a : alias == Alias::into_b ? d_b : d_r;
    KILN_REQUIRE_OK(kiln_residual_rmsnorm_fwd(res.get(), d_y.get(), d_rstd.get(), d_a.get(),
                                              d_b.get(), d_g.get(), s.N, s.C, kEps, rows::kDtype<T>,
                                              nullptr));
    return std::make_tuple(rows::from_device(res.download()), rows::from_device(d_y.download()),
                           kt::to_double(d_rstd.download()));
  };
  const auto [r, y, rstd] = run(Alias::none);
  CHECK(r == xd);
  check_rule("y", y_ref, y, kt::to_double(y_base), rows::atol_for<T>(y_ref));
  check_rule("rstd", rstd_ref, rstd, kt::to_double(rstd_base), rows::atol_fp32(rstd_ref));
  const auto [r2, y2, rstd2] = run(Alias::none);
  CHECK(kt::bitwise_equal(y, y2));
  CHECK(kt::bitwise_equal(rstd, rstd2));
  if (s.N <= 37) {
    for (const Alias alias : {Alias::into_a, Alias::into_b}) {
      INFO("residual = " << (alias == Alias::into_a ? "a" : "b"));
      const auto [r3, y3, rstd3] = run(alias);
      CHECK(r3 == xd);
      CHECK(kt::bitwise_equal(y, y3));
      CHECK(kt::bitwise_equal(rstd, rstd3));
    }
  }
}

}  // namespace

TEST_CASE("rmsnorm smoke: forward and backward, one shape per mapping", "[rmsnorm][smoke]") {
  auto rng = kt::make_rng(2009);
  for (const auto& s : rows::smoke_shapes())
    check_rmsnorm<rows::bf16>(s, rng);
  check_rmsnorm<float>(rows::Shape{37, 768}, rng);
}

TEST_CASE("fused residual + rmsnorm forward, register and generic paths", "[rmsnorm][smoke]") {
  auto rng = kt::make_rng(2003);
  for (const rows::Shape s : {rows::Shape{37, 2048}, rows::Shape{5, 7}, rows::Shape{3, 40}}) {
    check_residual_rmsnorm<rows::bf16>(s, rng);
    check_residual_rmsnorm<float>(s, rng);
  }
}

TEST_CASE("fused residual + rmsnorm forward matches the reference over the shape grid",
          "[rmsnorm]") {
  auto rng = kt::make_rng(2004);
  for (const auto& s : rows::grid()) {
    check_residual_rmsnorm<rows::bf16>(s, rng);
    if (s.elems() <= (1u << 20)) check_residual_rmsnorm<float>(s, rng);
  }
}

TEST_CASE("rmsnorm forward and backward match the reference over the shape grid", "[rmsnorm]") {
  auto rng = kt::make_rng(2001);
  for (const auto& s : rows::grid()) {
    check_rmsnorm<rows::bf16>(s, rng);
    if (s.elems() <= (1u << 20)) check_rmsnorm<float>(s, rng);
  }
}

TEST_CASE("rmsnorm propagates NaN and Inf inputs", "[rmsnorm]") {
  auto rng = kt::make_rng(2002);
  for (const std::int64_t C : {7, 1024, 8192}) {
    const rows::Shape s{4, C};
    INFO("C " << C);
    auto x = rows::stored<rows::bf16>(kt::random_normal(s.elems(), 0.0f, 1.0f, rng));
    const auto gamma = rows::stored<rows::bf16>(kt::random_uniform(C, 0.5f, 1.5f, rng));
    x[1 * C + 2 % C] = NAN;
    x[2 * C] = INFINITY;  // rstd = 0: the Inf element becomes NaN (inf * 0), the rest zeros
    std::vector<double> y_ref(s.elems()), rstd_ref(s.N);
    kiln::ref::rmsnorm_fwd_ref<double>(y_ref.data(), rstd_ref.data(), kt::to_double(x).data(),
                                       kt::to_double(gamma).data(), s.N, s.C, kEps);
    DeviceBuffer<rows::bf16> d_x(kt::to_bf16(x)), d_g(kt::to_bf16(gamma)), d_y(s.elems());
    DeviceBuffer<float> d_rstd(s.N);
    d_y.poison();
    d_rstd.poison();
    KILN_REQUIRE_OK(kiln_rmsnorm_fwd(d_y.get(), d_rstd.get(), d_x.get(), d_g.get(), s.N, s.C, kEps,
                                     KILN_DTYPE_BF16, nullptr));
    const auto y = kt::to_double(d_y.download()), rstd = kt::to_double(d_rstd.download());
    check_rule("y", y_ref, y, y_ref, rows::atol_for<rows::bf16>(y_ref) * 16);
    check_rule("rstd", rstd_ref, rstd, rstd_ref, rows::atol_fp32(rstd_ref));
    CHECK(std::isnan(y[1 * C]));
    CHECK(rstd[2] == 0.0);
  }
}
