// The harness of the attention GPU tests (attention_*_test.cpp), FlashAttention's tolerance rule:
// every path (forced) must be within 2x the error of a plain bf16 computation (bf16 inputs, fp32
// arithmetic, P rounded to bf16 before the P V product, dS rounded before its products, bf16
// outputs) plus a quarter of a bf16 ulp of the tensor's peak. Outputs and the backward's workspace
// are poisoned with NaN before every call.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/attention.h"
#include "tests/common/device_buffer.hpp"

namespace kiln::test::attn {

using bf16 = __nv_bfloat16;
using kiln::test::DeviceBuffer;

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

// Head dims of the grid: kiln's kernels serve 64 and 128 (cuDNN too); 96 and 256 only cuDNN,
// which AUTO sends them to.
inline constexpr int64_t kHeadDims[] = {64, 96, 128, 256};
inline bool kiln_head_dim(int64_t hd) {
  return hd == 64 || hd == 128;
}

inline const char* name(kiln_attention_impl_t impl) {
  return kiln_attention_impl_name(impl);
}

// Whether this device runs cuDNN's fused attention on kiln's graphs for sure: Hopper, where cuDNN
// 9.19 documents every shape the tests use (head dims up to 256, both backward algorithms).
bool cudnn_must_serve();

// The paths this device can run, forced one by one. Every kiln path that exists for the device
// must serve head dims 64 and 128; cuDNN must serve everything on Hopper (elsewhere a refusal is
// reported, not failed).
std::vector<kiln_attention_impl_t> paths(const Shape& s, bool backward, bool deterministic = false);

// Logical (B, T, NH, HD) tensors held as floats of bf16 values, contiguous.
struct Inputs {
  std::vector<float> q, k, v, dout;
};
Inputs make_inputs(const Shape& s, uint64_t stream);

std::vector<double> dbl(const std::vector<float>& x);
// The logical (B, T, NH, HD) tensor at `base` of `buf` with strides `st`, as doubles.
std::vector<double> gather(const std::vector<bf16>& buf, size_t base,
                           const kiln_attention_strides_t& st, int64_t B, int64_t T, int64_t NH,
                           int64_t HD);

struct FwdResult {
  std::vector<double> out, lse;
};
struct Grads {
  std::vector<double> dq, dk, dv;
};
// The double reference, run on every core.
FwdResult reference_fwd(const Shape& s, const Inputs& in);
Grads reference_bwd(const Shape& s, const Inputs& in);

// The plain same-precision computation (forward and backward), row by row in fp32.
struct Baseline {
  FwdResult fwd;
  Grads grads;
};
Baseline baseline(const Shape& s, const Inputs& in, bool with_backward);

// Where a case puts Q, K, V, O and their gradients: separate (B, T, NH, HD) tensors, one packed
// QKV buffer, or separate (B, NH, T, HD) tensors.
enum class Layout { kContiguous, kPacked, kBhsd };

// Device copies of the inputs in the layout of `d` (contiguous, or one packed QKV buffer).
struct DeviceInputs {
  DeviceBuffer<bf16> qkv, k, v, dout;
  size_t k_off = 0, v_off = 0;  // element offsets of K and V inside qkv when packed
  bool packed = false;
  const bf16* q_ptr() const { return qkv.get(); }
  const bf16* k_ptr() const { return packed ? qkv.get() + k_off : k.get(); }
  const bf16* v_ptr() const { return packed ? qkv.get() + v_off : v.get(); }
};
DeviceInputs upload(const Shape& s, const Inputs& in, const kiln_attention_desc_t& d, bool packed);

kiln_attention_desc_t make_desc(const Shape& s, kiln_attention_impl_t impl, bool packed,
                                bool deterministic, bool bhsd = false);

struct DeviceFwd {
  DeviceBuffer<bf16> o;
  DeviceBuffer<float> lse;
};
DeviceFwd run_fwd(const kiln_attention_desc_t& d, const Shape& s, const DeviceInputs& di);
void check_fwd(const std::string& what, const Shape& s, const FwdResult& ref, const FwdResult& base,
               const DeviceFwd& f, const kiln_attention_desc_t& d);

// Runs forward then backward; returns dq, dk, dv as logical contiguous doubles (and, in `raw`,
// the gradient buffers as written: dQKV, or dQ, dK, dV one after the other).
Grads run_bwd(const kiln_attention_desc_t& d, const Shape& s, const DeviceInputs& di, bool packed,
              std::vector<bf16>* raw = nullptr);
void check_grads(const std::string& what, const Grads& ref, const Grads& base, const Grads& got);

// Every path that serves `s`, forward, checked against `ref` and `base` in `layout`.
void check_fwd_paths(const Shape& s, const Inputs& in, const FwdResult& ref, const FwdResult& base,
                     Layout layout = Layout::kContiguous);
// Every path that serves `s`, backward in each of `modes` (deterministic or not), checked against
// `ref` and `base` in `layout`; a packed dQKV buffer must also be written completely.
void check_bwd_paths(const Shape& s, const Inputs& in, const Grads& ref, const Grads& base,
                     std::initializer_list<bool> modes = {false, true},
                     Layout layout = Layout::kContiguous);

}  // namespace kiln::test::attn
