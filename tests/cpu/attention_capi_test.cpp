// The attention C ABI's argument checks: every bad call is refused with a status and a message
// naming the problem before anything reaches the device, so these run on machines without a GPU.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>

#include "kiln/attention.h"

namespace {

// Stand-ins for device pointers: aligned, never dereferenced by a refused call.
alignas(256) unsigned char g_buf[4096];
void* P(int offset = 0) {
  return g_buf + offset;
}

bool has_device() {
  int n = 0;
  const bool ok = kiln_device_count(&n) == KILN_STATUS_OK && n > 0;
  kiln_clear_last_error();
  return ok;
}

kiln_attention_desc_t good_desc() {
  kiln_attention_desc_t d;
  REQUIRE(kiln_attention_desc_init(&d, 2, 100, 100, 8, 2, 64, 1) == KILN_STATUS_OK);
  return d;
}

kiln_status_t fwd(const kiln_attention_desc_t& d, void* o = P(),
                  float* lse = reinterpret_cast<float*>(P(256)), const void* q = P(512),
                  const void* k = P(1024), const void* v = P(1536)) {
  return kiln_attention_fwd(&d, o, lse, q, k, v, nullptr, 0, nullptr);
}

// Expects `status` with a message containing `text`.
void expect(kiln_status_t status, kiln_status_t want, const std::string& text) {
  INFO("message: " << kiln_last_error());
  CHECK(status == want);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains(text));
}

}  // namespace

TEST_CASE("attention desc_init fills contiguous strides, the default scale and AUTO",
          "[attention]") {
  kiln_attention_desc_t d;
  REQUIRE(kiln_attention_desc_init(&d, 3, 17, 33, 8, 2, 128, 1) == KILN_STATUS_OK);
  CHECK(d.batch == 3);
  CHECK(d.seqlen_q == 17);
  CHECK(d.seqlen_k == 33);
  CHECK(d.scale == Approx(1.0 / std::sqrt(128.0)));
  CHECK(d.causal == 1);
  CHECK(d.deterministic == 0);
  CHECK(d.dtype == KILN_DTYPE_BF16);
  CHECK(d.impl == KILN_ATTENTION_IMPL_AUTO);
  CHECK(d.q.head == 128);
  CHECK(d.q.token == 8 * 128);
  CHECK(d.q.batch == 17 * 8 * 128);
  CHECK(d.k.token == 2 * 128);
  CHECK(d.k.batch == 33 * 2 * 128);
  CHECK(d.v.batch == d.k.batch);
  CHECK(d.o.batch == d.q.batch);

  expect(kiln_attention_desc_init(nullptr, 1, 1, 1, 1, 1, 64, 0), KILN_STATUS_INVALID_ARGUMENT,
         "desc is null");
  expect(kiln_attention_desc_init(&d, 1, 1, 0, 1, 1, 64, 0), KILN_STATUS_INVALID_ARGUMENT,
         "Tk >= 1");
}

TEST_CASE("attention packed QKV strides step over the whole [q | k | v] token", "[attention]") {
  kiln_attention_desc_t d;
  REQUIRE(kiln_attention_desc_init(&d, 2, 64, 64, 12, 4, 64, 1) == KILN_STATUS_OK);
  REQUIRE(kiln_attention_desc_set_packed_qkv(&d) == KILN_STATUS_OK);
  const int64_t token = (12 + 2 * 4) * 64;
  CHECK(d.q.token == token);
  CHECK(d.k.token == token);
  CHECK(d.v.token == token);
  CHECK(d.q.batch == 64 * token);
  CHECK(d.q.head == 64);
  CHECK(d.o.token == 12 * 64);  // O stays contiguous

  REQUIRE(kiln_attention_desc_init(&d, 2, 64, 65, 12, 4, 64, 1) == KILN_STATUS_OK);
  expect(kiln_attention_desc_set_packed_qkv(&d), KILN_STATUS_INVALID_ARGUMENT,
         "seqlen_q == seqlen_k");
}

TEST_CASE("attention forward refuses bad shapes before touching the device", "[attention]") {
  expect(kiln_attention_fwd(nullptr, P(), nullptr, P(), P(), P(), nullptr, 0, nullptr),
         KILN_STATUS_INVALID_ARGUMENT, "desc is null");
  auto d = good_desc();
  d.heads_kv = 3;  // 8 % 3 != 0
  expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "multiple of heads_kv");
  d = good_desc();
  d.head_dim = 60;
  expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "head_dim must be a multiple of 8");
  d = good_desc();
  d.head_dim = 264;
  expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "head_dim must be a multiple of 8");
  d = good_desc();
  d.seqlen_k = 0;
  expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "seqlen_k");
  d = good_desc();
  d.batch = -1;
  expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "batch");
  d = good_desc();
  d.batch = 70000;  // beyond the grid's z dimension
  expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "batch");
  for (const double scale : {0.0, -0.125, std::numeric_limits<double>::quiet_NaN(),
                             std::numeric_limits<double>::infinity()}) {
    d = good_desc();
    d.scale = scale;
    expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "scale must be finite and > 0");
  }
  d = good_desc();
  d.dtype = KILN_DTYPE_F32;
  expect(fwd(d), KILN_STATUS_NOT_SUPPORTED, "only bf16");
  d = good_desc();
  d.impl = static_cast<kiln_attention_impl_t>(9);
  expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "unknown implementation");
}

TEST_CASE("attention forward refuses bad strides, pointers and alignment", "[attention]") {
  auto d = good_desc();
  d.k.token = 2 * 64 + 4;  // not a multiple of 8 elements
  expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "k strides must be multiples of 8");
  d = good_desc();
  d.q.head = -64;
  expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "non-negative");
  d = good_desc();
  d.o.token = 64;  // tokens of O overlapping its heads
  expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "strides of o make distinct elements overlap");
  d = good_desc();
  d.o.head = 32;  // heads of O overlapping within a head
  expect(fwd(d), KILN_STATUS_INVALID_ARGUMENT, "overlap");

  d = good_desc();
  expect(fwd(d, nullptr), KILN_STATUS_INVALID_ARGUMENT, "o is null");
  expect(fwd(d, P(), nullptr), KILN_STATUS_INVALID_ARGUMENT, "lse is null");
  expect(fwd(d, P(), reinterpret_cast<float*>(P(256)), nullptr), KILN_STATUS_INVALID_ARGUMENT,
         "q is null");
  expect(fwd(d, P(), reinterpret_cast<float*>(P(256)), P(512), P(1024 + 2)),
         KILN_STATUS_INVALID_ARGUMENT, "k (");
  expect(fwd(d, P(8)), KILN_STATUS_INVALID_ARGUMENT, "not 16-byte aligned");
  expect(fwd(d, P(), reinterpret_cast<float*>(P(258))), KILN_STATUS_INVALID_ARGUMENT,
         "not 4-byte aligned");
}

TEST_CASE("attention refuses what no path serves, and forced paths that cannot serve the call",
          "[attention]") {
  auto d = good_desc();
  d.head_dim = 96;
  d.q = {100 * 8 * 96, 8 * 96, 96};
  d.o = d.q;
  d.k = {100 * 2 * 96, 2 * 96, 96};
  d.v = d.k;
  // kiln's kernels take 64 and 128 only; AUTO sends other head dims to cuDNN (which needs a
  // device to say whether it has an engine).
  d.impl = KILN_ATTENTION_IMPL_SM80;
  expect(fwd(d), KILN_STATUS_NOT_SUPPORTED, "head_dim 96 is not served by kiln's kernels");
  d.impl = KILN_ATTENTION_IMPL_SM90;
  kiln_attention_impl_t got = KILN_ATTENTION_IMPL_AUTO;
  CHECK(kiln_attention_resolve_impl(&d, 0, &got) == KILN_STATUS_NOT_SUPPORTED);
  if (!has_device()) {
    d.impl = KILN_ATTENTION_IMPL_AUTO;
    expect(fwd(d), KILN_STATUS_NO_DEVICE, "no CUDA device");
    d.impl = KILN_ATTENTION_IMPL_CUDNN;
    size_t ws = 0;
    expect(kiln_attention_bwd_workspace_size(&d, &ws), KILN_STATUS_NO_DEVICE, "no CUDA device");
  }
  // The forced sm_90a backward is served or refused exactly where the forward is (refused by a
  // build without the sm_90a kernels, with no device, or on a device other than 9.0).
  d = good_desc();
  d.impl = KILN_ATTENTION_IMPL_SM90;
  kiln_attention_impl_t impl = KILN_ATTENTION_IMPL_AUTO;
  const kiln_status_t fwd_status = kiln_attention_resolve_impl(&d, 0, &impl);
  const std::string fwd_message = kiln_last_error();
  const kiln_status_t bwd_status = kiln_attention_resolve_impl(&d, 1, &impl);
  CHECK(bwd_status == fwd_status);
  if (fwd_status != KILN_STATUS_OK) CHECK(std::string(kiln_last_error()) == fwd_message);
  if (bwd_status == KILN_STATUS_OK) CHECK(impl == KILN_ATTENTION_IMPL_SM90);
  if (!has_device()) CHECK(bwd_status != KILN_STATUS_OK);
  size_t bytes = 0;
  CHECK(kiln_attention_bwd_workspace_size(&d, &bytes) == bwd_status);
  expect(kiln_attention_resolve_impl(&d, 0, nullptr), KILN_STATUS_INVALID_ARGUMENT, "impl is null");
}

TEST_CASE("attention backward checks its gradients' strides, pointers and workspace",
          "[attention]") {
  auto d = good_desc();
  const auto bwd = [&](void* dq, void* dk, void* dv, const void* dout, void* ws, size_t bytes) {
    return kiln_attention_bwd(&d, dq, dk, dv, dout, P(512), P(1024), P(1536), P(2048),
                              reinterpret_cast<const float*>(P(2560)), ws, bytes, nullptr);
  };
  expect(bwd(nullptr, P(), P(), P(), nullptr, 0), KILN_STATUS_INVALID_ARGUMENT, "dq is null");
  expect(bwd(P(), P(), nullptr, P(), nullptr, 0), KILN_STATUS_INVALID_ARGUMENT, "dv is null");
  expect(bwd(P(), P(), P(), P(4), nullptr, 0), KILN_STATUS_INVALID_ARGUMENT, "dout (");
  // Broadcast K (batch stride 0) is a valid input to the forward but not a gradient to write.
  d.k.batch = 0;
  expect(bwd(P(), P(), P(), P(), nullptr, 0), KILN_STATUS_INVALID_ARGUMENT,
         "strides of k (those of dk) make distinct elements overlap");
  if (!has_device()) {
    // The forward accepts it; only the device is missing.
    expect(fwd(d), KILN_STATUS_NO_DEVICE, "no CUDA device");
    d = good_desc();
    expect(bwd(P(), P(), P(), P(), nullptr, 0), KILN_STATUS_NO_DEVICE, "no CUDA device");
    size_t bytes = 1;
    expect(kiln_attention_bwd_workspace_size(&d, &bytes), KILN_STATUS_NO_DEVICE, "no CUDA device");
  }
  expect(kiln_attention_fwd_workspace_size(&d, nullptr), KILN_STATUS_INVALID_ARGUMENT,
         "bytes is null");
}

TEST_CASE("attention accepts (B, NH, T, HD) and packed layouts up to the device check",
          "[attention]") {
  if (has_device()) return;  // a valid call would launch on the stand-in pointers
  auto d = good_desc();
  // BHSD: heads outermost after the batch.
  d.q = {8 * 100 * 64, 64, 100 * 64};
  d.o = d.q;
  d.k = {2 * 100 * 64, 64, 100 * 64};
  d.v = d.k;
  expect(fwd(d), KILN_STATUS_NO_DEVICE, "no CUDA device");
  d = good_desc();
  REQUIRE(kiln_attention_desc_set_packed_qkv(&d) == KILN_STATUS_OK);
  expect(kiln_attention_bwd(&d, P(), P(), P(), P(), P(), P(), P(), P(),
                            reinterpret_cast<const float*>(P()), nullptr, 0, nullptr),
         KILN_STATUS_NO_DEVICE, "no CUDA device");
}

TEST_CASE("attention implementation names", "[attention]") {
  CHECK(std::string(kiln_attention_impl_name(KILN_ATTENTION_IMPL_AUTO)) == "auto");
  CHECK(std::string(kiln_attention_impl_name(KILN_ATTENTION_IMPL_SM80)) == "sm80");
  CHECK(std::string(kiln_attention_impl_name(KILN_ATTENTION_IMPL_SM90)) == "sm90");
  CHECK(std::string(kiln_attention_impl_name(KILN_ATTENTION_IMPL_CUDNN)) == "cudnn");
  CHECK(std::string(kiln_attention_impl_name(static_cast<kiln_attention_impl_t>(42))) == "unknown");
}
