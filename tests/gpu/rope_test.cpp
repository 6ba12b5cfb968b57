// Rotary embedding kernels against the double reference with the tolerance rule (see
// layernorm_test.cpp): the packed QKV layout with GQA (V and padding must stay bit for bit), the
// separate layout, odd head dims and strides (the scalar path), misaligned pointers, large
// positions (Llama 3.1's 128K context, and near 2^31), bf16 and fp32, forward and backward,
// bitwise repeatability and NaN propagation. The operation is in place, so instead of poisoned
// outputs every element the call must not touch is checked to be unchanged.
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/rope/rope_ref.hpp"
#include "kiln/rope.h"
#include "tests/common/compare.hpp"
#include "tests/common/device_buffer.hpp"
#include "tests/common/rope_configs.hpp"
#include "tests/common/support.hpp"
#include "tests/gpu/rows_support.hpp"

using kiln::test::check_rule;
using kiln::test::DeviceBuffer;
namespace kt = kiln::test;
using kiln::test::rope_llama3;
using kiln::test::rope_plain;
namespace rows = kiln::test::rows;

namespace {

// One call: x = buffer + offset, (B, T, H) rotated heads of head_dim in rows of `heads` heads
// (heads > H: packed QKV, the last heads - H are V) plus `pad_t` elements per token and `pad_b`
// per batch.
struct Case {
  std::int64_t B, T, H, heads;
  kiln_rope_config_t config;
  std::int64_t pos_offset = 0;
  std::int64_t pad_t = 0, pad_b = 0;
  std::int64_t offset = 0;  // elements before x in the buffer (misalignment)
  bool with_nan = false;

  std::int64_t stride_t() const { return heads * config.head_dim + pad_t; }
  std::int64_t stride_b() const { return T * stride_t() + pad_b; }
  std::size_t elems() const { return static_cast<std::size_t>(offset + B * stride_b()); }
  std::string str() const {
    std::ostringstream os;
    os << "B " << B << " T " << T << " H " << H << " of " << heads << " HD " << config.head_dim
       << (config.scaling == KILN_ROPE_SCALING_LLAMA3 ? " llama3" : "") << " pos " << pos_offset
       << " pad " << pad_t << "/" << pad_b << " offset " << offset;
    return os.str();
  }
};

template <typename T>
void check_rope(const Case& c, bool backward, std::mt19937_64& rng) {
  INFO(rows::dtype_name<T>() << (backward ? " bwd " : " fwd ") << c.str());
  auto x = rows::stored<T>(kt::random_uniform(c.elems(), -2.0f, 2.0f, rng));
  if (c.with_nan) x[c.offset + c.config.head_dim / 2 - 1] = NAN;  // a rotated element of token 0
  const std::int64_t sb = c.stride_b(), st = c.stride_t();

  auto ref = kt::to_double(x);
  auto base = x;
  if (backward) {
    kiln::ref::rope_bwd_ref<double>(ref.data() + c.offset, c.B, c.T, c.H, sb, st, c.pos_offset,
                                    c.config);
    kiln::ref::rope_bwd_ref<float, float>(base.data() + c.offset, c.B, c.T, c.H, sb, st,
                                          c.pos_offset, c.config);
  } else {
    kiln::ref::rope_fwd_ref<double>(ref.data() + c.offset, c.B, c.T, c.H, sb, st, c.pos_offset,
                                    c.config);
    kiln::ref::rope_fwd_ref<float, float>(base.data() + c.offset, c.B, c.T, c.H, sb, st,
                                          c.pos_offset, c.config);
  }
  base = rows::stored<T>(base);

  DeviceBuffer<T> d(rows::to_device<T>(x));
  auto run = [&] {
    d.upload(rows::to_device<T>(x));
    auto* p = d.get() + c.offset;
    if (backward) {
      KILN_REQUIRE_OK(kiln_rope_bwd(p, c.B, c.T, c.H, sb, st, c.pos_offset, &c.config,
                                    rows::kDtype<T>, nullptr));
    } else {
      KILN_REQUIRE_OK(kiln_rope_fwd(p, c.B, c.T, c.H, sb, st, c.pos_offset, &c.config,
                                    rows::kDtype<T>, nullptr));
    }
    return rows::from_device(d.download());
  };
  const auto got = run();
  check_rule("x", ref, got, kt::to_double(base), rows::atol_for<T>(ref));
  // Against the baseline itself, which computes the same fp32 angles: at large positions both
  // are far from the double reference (the fp32 angle is), and there they must still agree.
  if (rows::kIsBf16<T>) {
    kt::check_close("x vs the fp32-angle baseline", kt::to_double(base), got, 1.0 / 128, 1.0 / 64);
  } else {
    kt::check_close("x vs the fp32-angle baseline", kt::to_double(base), got, 1e-6, 2e-6);
  }
  CHECK(kt::bitwise_equal(got, run()));

  // Everything outside the rotated heads (V, padding, the elements before x) is untouched.
  const auto x0 = kt::to_double(x);
  std::size_t changed = 0;
  for (std::size_t i = 0; i < x0.size(); ++i) {
    const std::int64_t e = static_cast<std::int64_t>(i) - c.offset;
    const bool rotated = e >= 0 && (e % sb) / st < c.T && (e % sb) % st < c.H * c.config.head_dim;
    if (!rotated && !(got[i] == x0[i] || (std::isnan(got[i]) && std::isnan(x0[i])))) ++changed;
  }
  CHECK(changed == 0);
}

template <typename T>
void check_both(const Case& c, std::mt19937_64& rng) {
  check_rope<T>(c, false, rng);
  check_rope<T>(c, true, rng);
}

// Llama-3.2-1B's attention: NH 32, NKV 8, HD 64, packed QKV from the fused GEMM.
Case packed(std::int64_t B, std::int64_t T, std::int64_t pos = 0) {
  return Case{B, T, 32 + 8, 32 + 16, rope_llama3(64, 32), pos};
}

}  // namespace

TEST_CASE("rope on packed QKV (GQA), vector path, bf16 and fp32", "[rope][smoke]") {
  auto rng = kt::make_rng(5001);
  check_both<rows::bf16>(packed(2, 37), rng);
  check_both<float>(packed(2, 37), rng);
}

TEST_CASE("rope scalar path: odd half head dims, odd strides, misaligned x", "[rope][smoke]") {
  auto rng = kt::make_rng(5002);
  Case odd{2, 5, 3, 3, rope_plain(6)};  // HD / 2 = 3
  check_both<rows::bf16>(odd, rng);
  check_both<float>(odd, rng);
  Case strided{2, 7, 5, 6, rope_plain(16)};  // HD / 2 = 8, but a token stride of 6 * 16 + 1
  strided.pad_t = 1;
  check_both<rows::bf16>(strided, rng);
  Case shifted{3, 4, 4, 4, rope_llama3(32, 8)};  // x one element past a 16-byte boundary
  shifted.offset = 1;
  check_both<rows::bf16>(shifted, rng);
  check_both<float>(shifted, rng);
  // Token stride a whole number of vectors, batch stride not: the batch stride alone must send
  // the call to the scalar path (prefill, and decoding where T = 1 leaves only the batch stride).
  Case batch_odd{3, 4, 4, 5, rope_plain(64)};
  batch_odd.pad_b = 1;
  check_both<rows::bf16>(batch_odd, rng);
  check_both<float>(batch_odd, rng);
  Case decode_odd{4, 1, 3, 4, rope_llama3(64, 32), 4096};
  decode_odd.pad_b = 3;
  check_both<rows::bf16>(decode_odd, rng);
  check_both<float>(decode_odd, rng);
  check_both<rows::bf16>(Case{1, 3, 2, 2, rope_plain(8)}, rng);  // bf16: HD / 2 = 4 is not a vector
  check_both<float>(Case{1, 3, 2, 2, rope_plain(8)}, rng);       // fp32: it is
}

TEST_CASE("rope over head dims, head counts and layouts", "[rope]") {
  auto rng = kt::make_rng(5003);
  std::vector<Case> cases;
  for (const std::int64_t hd : {2, 4, 16, 32, 48, 64, 80, 96, 128, 130, 256}) {
    for (const std::int64_t H : {1, 3, 4, 5, 9}) {
      Case c{2, 11, H, H + 1, rope_llama3(hd, 8)};  // one extra head that must stay
      cases.push_back(c);
    }
  }
  // The separate layout: Q (B, T, NH, HD) contiguous, K (B, T, NKV, HD) contiguous.
  cases.push_back(Case{3, 19, 32, 32, rope_plain(64, 500000)});
  cases.push_back(Case{3, 19, 8, 8, rope_plain(64, 500000)});
  cases.push_back(Case{2, 13, 14, 14, rope_plain(128, 1000000)});  // Qwen2.5-0.5B's Q heads
  // Batch padding (a view of a longer sequence buffer) and token padding of whole vectors.
  Case padded{3, 9, 6, 8, rope_llama3(64, 32)};
  padded.pad_t = 8;
  padded.pad_b = 64;
  cases.push_back(padded);
  // TinyLlama / SmolLM2 shapes: 32 + 4 heads, HD 64, theta 10000.
  cases.push_back(Case{2, 33, 36, 40, rope_plain(64)});
  for (const Case& c : cases) {
    check_both<rows::bf16>(c, rng);
    check_both<float>(c, rng);
  }
  if (!kt::quick_mode()) {  // Llama-3.2-1B at T = 2048, and 3.1-8B's 32 + 8 heads of 128
    check_both<rows::bf16>(packed(1, 2048), rng);
    check_both<rows::bf16>(Case{1, 1024, 40, 48, rope_llama3(128, 8)}, rng);
  }
}

TEST_CASE("rope at large positions and KV-cache offsets", "[rope]") {
  auto rng = kt::make_rng(5004);
  // Decoding: one token per sequence at position pos_offset.
  for (const std::int64_t pos : {1, 4095, 8191, 8192, 100000, 131071}) {
    check_both<rows::bf16>(packed(4, 1, pos), rng);
    check_both<float>(packed(4, 1, pos), rng);
  }
  // A prefill chunk past 100k (angles of 10^5 radians) and the last positions below 2^31.
  check_both<rows::bf16>(packed(2, 64, 131000), rng);
  check_both<float>(packed(2, 64, 131000), rng);
  Case far{1, 9, 3, 3, rope_plain(64)};
  far.pos_offset = (std::int64_t{1} << 31) - 10;
  check_both<float>(far, rng);
  check_both<rows::bf16>(far, rng);
}

TEST_CASE("rope: the offset call on a slice equals the rows of a full call", "[rope]") {
  // KV-cache decoding must see the rotation the full forward gave each position.
  auto rng = kt::make_rng(5005);
  const Case full = packed(2, 40);
  const std::int64_t sb = full.stride_b(), st = full.stride_t();
  const auto x = rows::to_device<rows::bf16>(kt::random_uniform(full.elems(), -2.0f, 2.0f, rng));
  DeviceBuffer<rows::bf16> a(x), b(x);
  KILN_REQUIRE_OK(kiln_rope_fwd(a.get(), full.B, full.T, full.H, sb, st, 0, &full.config,
                                KILN_DTYPE_BF16, nullptr));
  for (std::int64_t t = 0; t < full.T; t += 3) {
    const std::int64_t n = std::min<std::int64_t>(3, full.T - t);
    KILN_REQUIRE_OK(kiln_rope_fwd(b.get() + t * st, full.B, n, full.H, sb, st, t, &full.config,
                                  KILN_DTYPE_BF16, nullptr));
  }
  CHECK(kt::bitwise_equal(a.download(), b.download()));
}

TEST_CASE("rope propagates NaN to the two elements of its pair", "[rope]") {
  auto rng = kt::make_rng(5006);
  Case c = packed(1, 3);
  c.with_nan = true;
  check_both<rows::bf16>(c, rng);
  check_both<float>(c, rng);
}
