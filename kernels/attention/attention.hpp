// Internal launchers of kiln attention (kernels/attention/): the validated call every
// implementation receives, and one entry per implementation. Argument checks and dispatch live in
// attention.cpp; the public API is kiln/attention.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kiln/attention.h"

namespace kiln::impl {

using bf16 = __nv_bfloat16;

// Strides of one (B, T, NH, HD) tensor in elements (head dim contiguous).
struct AttnStrides {
  int64_t b = 0, t = 0, h = 0;
};

// A call that passed every argument check. Sizes fit in int (checked).
struct AttnShape {
  int B = 0, Tq = 0, Tk = 0, NHq = 0, NHkv = 0, HD = 0;
  float scale = 0;       // multiplies Q K^T
  float scale_log2 = 0;  // scale * log2(e): the kernels work in exp2
  bool causal = false;
  bool deterministic = false;
  AttnStrides q, k, v, o;  // dQ, dK, dV, dO share them
  int group() const { return NHq / NHkv; }
};

struct AttnFwdArgs {
  AttnShape s;
  const bf16* q;  // (B, Tq, NHq, HD), strides s.q
  const bf16* k;  // (B, Tk, NHkv, HD), strides s.k
  const bf16* v;  // (B, Tk, NHkv, HD), strides s.v
  bf16* o;        // (B, Tq, NHq, HD), strides s.o
  float* lse;     // (B, NHq, Tq) contiguous
};

struct AttnBwdArgs {
  AttnShape s;
  const bf16* q;     // (B, Tq, NHq, HD), strides s.q
  const bf16* k;     // (B, Tk, NHkv, HD), strides s.k
  const bf16* v;     // (B, Tk, NHkv, HD), strides s.v
  const bf16* o;     // (B, Tq, NHq, HD), strides s.o
  const bf16* dout;  // (B, Tq, NHq, HD), strides s.o
  const float* lse;  // (B, NHq, Tq) contiguous
  bf16* dq;          // (B, Tq, NHq, HD), strides s.q
  bf16* dk;          // (B, Tk, NHkv, HD), strides s.k
  bf16* dv;          // (B, Tk, NHkv, HD), strides s.v
};

// Rounds a workspace part up so the next one starts 256-byte aligned.
constexpr std::size_t attn_align(std::size_t bytes) {
  return (bytes + 255) / 256 * 256;
}

// The backward's workspace, for the sm_80 and sm_90a kernels alike: D (B, NHq, Tq) fp32, then,
// unless deterministic, the fp32 dQ accumulator of `dq_accum_bytes` (its layout is the kernel's).
struct AttnBwdWorkspace {
  float* dsum;
  float* dq_accum;  // null when deterministic
};
inline std::size_t attn_bwd_dsum_bytes(const AttnShape& s) {
  return attn_align(static_cast<std::size_t>(s.B) * s.NHq * s.Tq * sizeof(float));
}
inline std::size_t attn_bwd_workspace_bytes(const AttnShape& s, std::size_t dq_accum_bytes) {
  return attn_bwd_dsum_bytes(s) + (s.deterministic ? 0 : attn_align(dq_accum_bytes));
}
inline AttnBwdWorkspace attn_bwd_workspace(const AttnShape& s, void* workspace) {
  AttnBwdWorkspace w;
  w.dsum = static_cast<float*>(workspace);
  w.dq_accum =
      s.deterministic
          ? nullptr
          : reinterpret_cast<float*>(static_cast<char*>(workspace) + attn_bwd_dsum_bytes(s));
  return w;
}

// --- sm_80 kernels (mma.sync; any device of compute capability >= 8.0) ---------------------------
void attention_fwd_sm80(const AttnFwdArgs& a, cudaStream_t stream);
std::size_t attention_bwd_sm80_workspace(const AttnShape& s);
void attention_bwd_sm80(const AttnBwdArgs& a, void* workspace, cudaStream_t stream);

// Shared by the sm_80 and sm_90 backward: D = rowsum(dO * O) into `dsum` (B, NHq, Tq), and, when
// `dq_accum` (B, NHq, Tq, HD) is not null, zeroes it for the atomic dQ accumulation.
void attention_bwd_preprocess(const AttnBwdArgs& a, float* dsum, float* dq_accum,
                              cudaStream_t stream);
// dQ (bf16, strides s.q) = scale * dq_accum.
void attention_bwd_convert_dq(const AttnBwdArgs& a, const float* dq_accum, cudaStream_t stream);

// --- sm_90a kernels (wgmma, TMA; compute capability 9.0; built only with KILN_HAS_SM90A) ---------
void attention_fwd_sm90(const AttnFwdArgs& a, cudaStream_t stream);
// Backward: D (as the sm_80 path), then the dK/dV kernel with dQ by bulk fp32 reductions into an
// accumulator (or, deterministic, the sm_80 dQ pass), then dQ from the accumulator.
std::size_t attention_bwd_sm90_workspace(const AttnShape& s);
std::size_t attention_bwd_sm90_dq_accum_bytes(const AttnShape& s);
// dQ (bf16, strides s.q) = scale * the accumulator, from its wgmma accumulator order.
void attention_bwd_sm90_convert_dq(const AttnBwdArgs& a, const float* dq_accum,
                                   cudaStream_t stream);
void attention_bwd_sm90(const AttnBwdArgs& a, void* workspace, cudaStream_t stream);

// --- cuDNN fused flash attention (attention_cudnn.cpp) ------------------------------------------
// Each builds (once per thread, device, direction and shape) cuDNN's execution plan and throws
// not_supported, with cuDNN's reason, when cuDNN has no engine for the call.
void attention_cudnn_check(const AttnShape& s, bool backward, const char* op);
std::size_t attention_cudnn_workspace(const AttnShape& s, bool backward);
void attention_fwd_cudnn(const AttnFwdArgs& a, void* workspace, cudaStream_t stream);
void attention_bwd_cudnn(const AttnBwdArgs& a, void* workspace, cudaStream_t stream);
// Execution plans the calling thread has built so far (tests check that calls reuse them).
std::size_t attention_cudnn_plan_builds();

// The glue around cuDNN (attention_cudnn_glue.cu). `skipped` leading query rows see no key.
// LSE (B, NHq, Tq) from cuDNN's stats (B, NHq, Tq - skipped), -inf for the skipped rows:
void attention_cudnn_lse_out(const float* stats, float* lse, int B, int NHq, int Tq, int skipped,
                             cudaStream_t stream);
// cuDNN's stats (B, NHq, Tq - skipped) from LSE (B, NHq, Tq):
void attention_cudnn_lse_in(const float* lse, float* stats, int B, int NHq, int Tq, int skipped,
                            cudaStream_t stream);
// Zeroes tokens [0, rows) of a (B, T, NH, HD) bf16 tensor with strides `s`.
void attention_zero_rows(bf16* x, const AttnStrides& s, int B, int64_t rows, int NH, int HD,
                         cudaStream_t stream);

}  // namespace kiln::impl
