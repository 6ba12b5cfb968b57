/* kiln attention: fused scaled dot-product attention (FlashAttention-style), forward and backward.
 *
 * Formula, for every batch b, query head h and query row i:
 *   S[i, j] = scale * dot(Q[b, i, h, :], K[b, j, g(h), :])       g(h) = h / (NHq / NHkv)  (GQA)
 *   S[i, j] = -inf where causal and j > i + Tk - Tq              (bottom-right aligned mask)
 *   P[i, :] = softmax(S[i, :]),    O[b, i, h, :] = sum_j P[i, j] V[b, j, g(h), :]
 *   LSE[b, h, i] = log(sum_j exp(S[i, j]))   (natural log, fp32)
 * A row that sees no key (causal with Tq > Tk: rows i < Tq - Tk) gets O = 0 and LSE = -inf; it is
 * never NaN. Its gradients are 0.
 *
 * Layouts. Q, O, dO, dQ: (B, Tq, NHq, HD); K, V, dK, dV: (B, Tk, NHkv, HD), all bf16, addressed
 * through per-tensor strides in elements (the head dimension itself is contiguous), so Q, K and V
 * may live inside the packed (B, T, NHq + 2 NHkv, HD) output of a QKV projection with no copy (see
 * kiln_attention_desc_set_packed_qkv). The gradients dQ, dK, dV use the strides of Q, K, V and dO
 * those of O. LSE is (B, NHq, Tq) fp32, contiguous.
 *
 * Requirements checked before anything is launched: bf16; head_dim a multiple of 8 up to 256 (kiln's
 * kernels serve 64 and 128, cuDNN's fused attention the others); NHq a multiple of NHkv;
 * scale > 0 and finite; B, Tq >= 0, Tk >= 1; every stride a multiple of 8 elements and every
 * tensor pointer 16-byte aligned (LSE: 4); workspace at least the queried size (256-byte aligned).
 * Outputs must not overlap inputs.
 *
 * Implementations (kiln_attention_impl_t): AUTO picks the Hopper kernels (wgmma, TMA) on compute
 * capability 9.0 when this build carries them, and the sm_80 kernels (mma.sync) on other devices of
 * compute capability >= 8.0 (and for the backward, which has no Hopper kernel yet); head dims
 * other than 64 and 128 go to cuDNN. Any implementation can be forced, e.g. to compare them; a
 * forced one that cannot serve the call returns KILN_STATUS_NOT_SUPPORTED. CUDNN runs cuDNN's
 * fused flash attention through its graph API: the execution plan for a (direction, shape,
 * strides, causal, deterministic) is built on first use in each thread (the workspace queries and
 * kiln_attention_resolve_impl build it too; it can take a while, cuDNN compiling kernels) and
 * reused after; where cuDNN has no engine for a call the status is NOT_SUPPORTED with cuDNN's
 * reason, and failures inside cuDNN are KILN_STATUS_CUDNN_ERROR with its message.
 *
 * Stream behaviour: everything is enqueued on `stream`; nothing synchronizes the host; nothing is
 * allocated (workspaces are the caller's, sized by the *_workspace_size queries).
 *
 * Determinism: the forward is deterministic. The backward is deterministic when
 * desc.deterministic is set: dQ is then computed by its own pass over the keys instead of fp32
 * atomics (about 1.4x the backward's arithmetic; cuDNN: its deterministic algorithm, engines it
 * notes as non-deterministic are never chosen). dK and dV are deterministic in both modes. */
#ifndef KILN_ATTENTION_H_
#define KILN_ATTENTION_H_

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_attention_impl {
  KILN_ATTENTION_IMPL_AUTO = 0,
  KILN_ATTENTION_IMPL_SM80 = 1, /* mma.sync kernels: any device of compute capability >= 8.0 */
  KILN_ATTENTION_IMPL_SM90 = 2, /* wgmma + TMA kernels: compute capability 9.0 (H100, H200) */
  KILN_ATTENTION_IMPL_CUDNN = 3 /* cuDNN 9 fused flash attention (graph API), any head dim */
} kiln_attention_impl_t;

/* Strides of one (B, T, NH, HD) tensor, in elements; the HD elements of one head are contiguous. */
typedef struct kiln_attention_strides {
  int64_t batch; /* from (b, t, h, 0) to (b + 1, t, h, 0) */
  int64_t token; /* from (b, t, h, 0) to (b, t + 1, h, 0) */
  int64_t head;  /* from (b, t, h, 0) to (b, t, h + 1, 0) */
} kiln_attention_strides_t;

typedef struct kiln_attention_desc {
  int64_t batch;      /* B */
  int64_t seqlen_q;   /* Tq */
  int64_t seqlen_k;   /* Tk */
  int64_t heads_q;    /* NHq */
  int64_t heads_kv;   /* NHkv: NHq / NHkv query heads share one K/V head (GQA; 1 = MQA) */
  int64_t head_dim;   /* HD */
  double scale;       /* multiplies Q K^T; kiln_attention_desc_init sets 1 / sqrt(HD) */
  int causal;         /* nonzero: query i sees keys j <= i + Tk - Tq */
  int deterministic;  /* nonzero: bitwise-repeatable backward (see above) */
  kiln_dtype_t dtype; /* KILN_DTYPE_BF16 (the only one served) */
  kiln_attention_impl_t impl;
  kiln_attention_strides_t q, k, v, o; /* also those of dQ, dK, dV and dO */
} kiln_attention_desc_t;

/* Fills `desc` for contiguous (B, T, NH, HD) tensors: scale 1 / sqrt(HD), bf16, AUTO,
 * non-deterministic. Fails on a negative or zero size where one is required. */
KILN_API kiln_status_t kiln_attention_desc_init(kiln_attention_desc_t* desc, int64_t batch,
                                                int64_t seqlen_q, int64_t seqlen_k, int64_t heads_q,
                                                int64_t heads_kv, int64_t head_dim, int causal);

/* Sets the Q, K, V (and dQ, dK, dV) strides for one packed (B, T, NHq + 2 NHkv, HD) tensor whose
 * token holds [q heads | k heads | v heads], as the fused QKV projection writes it. The caller
 * passes q = qkv, k = qkv + NHq * HD, v = qkv + (NHq + NHkv) * HD. Requires Tq == Tk. O keeps its
 * strides. */
KILN_API kiln_status_t kiln_attention_desc_set_packed_qkv(kiln_attention_desc_t* desc);

/* Bytes of device workspace kiln_attention_fwd / kiln_attention_bwd need for `desc` (0 is
 * possible). The answer depends on the implementation chosen, hence on the current device. */
KILN_API kiln_status_t kiln_attention_fwd_workspace_size(const kiln_attention_desc_t* desc,
                                                         size_t* bytes);
KILN_API kiln_status_t kiln_attention_bwd_workspace_size(const kiln_attention_desc_t* desc,
                                                         size_t* bytes);

/* Forward: O and LSE from Q, K, V (formula above). */
KILN_API kiln_status_t kiln_attention_fwd(const kiln_attention_desc_t* desc,
                                          void* o,       /* (B, Tq, NHq, HD) bf16, out */
                                          float* lse,    /* (B, NHq, Tq) fp32, out */
                                          const void* q, /* (B, Tq, NHq, HD) bf16 */
                                          const void* k, /* (B, Tk, NHkv, HD) bf16 */
                                          const void* v, /* (B, Tk, NHkv, HD) bf16 */
                                          void* workspace, size_t workspace_bytes,
                                          cudaStream_t stream);

/* Backward: dQ, dK, dV (overwritten) from dO and the forward's inputs, O and LSE:
 *   D[i] = sum_d dO[i, d] O[i, d];  dP = dO V^T;  dS = P * (dP - D);
 *   dQ = scale * dS K;  dK = scale * dS^T Q;  dV = P^T dO   (summed over the query heads of a
 *   K/V head under GQA). */
KILN_API kiln_status_t kiln_attention_bwd(const kiln_attention_desc_t* desc,
                                          void* dq,         /* (B, Tq, NHq, HD) bf16, out */
                                          void* dk,         /* (B, Tk, NHkv, HD) bf16, out */
                                          void* dv,         /* (B, Tk, NHkv, HD) bf16, out */
                                          const void* dout, /* (B, Tq, NHq, HD) bf16 */
                                          const void* q,    /* (B, Tq, NHq, HD) bf16 */
                                          const void* k,    /* (B, Tk, NHkv, HD) bf16 */
                                          const void* v,    /* (B, Tk, NHkv, HD) bf16 */
                                          const void* o,    /* (B, Tq, NHq, HD) bf16 */
                                          const float* lse, /* (B, NHq, Tq) fp32 */
                                          void* workspace, size_t workspace_bytes,
                                          cudaStream_t stream);

/* The implementation that serves the forward (backward = 0) or the backward (backward != 0) of
 * `desc` on the current device: what AUTO resolves to (never AUTO), or the forced one if it can
 * serve the call; NOT_SUPPORTED otherwise. */
KILN_API kiln_status_t kiln_attention_resolve_impl(const kiln_attention_desc_t* desc, int backward,
                                                   kiln_attention_impl_t* impl);

/* "auto", "sm80", "sm90", "cudnn". Never NULL. */
KILN_API const char* kiln_attention_impl_name(kiln_attention_impl_t impl);

#ifdef __cplusplus
} /* extern "C" */

#include "kiln/error.hpp"

namespace kiln {

// The C++ face: the same calls, throwing kiln::Error on failure.
inline kiln_attention_desc_t attention_desc(int64_t batch, int64_t seqlen_q, int64_t seqlen_k,
                                            int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                                            bool causal) {
  kiln_attention_desc_t d;
  check(kiln_attention_desc_init(&d, batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim,
                                 causal ? 1 : 0));
  return d;
}
inline size_t attention_fwd_workspace_size(const kiln_attention_desc_t& d) {
  size_t bytes = 0;
  check(kiln_attention_fwd_workspace_size(&d, &bytes));
  return bytes;
}
inline size_t attention_bwd_workspace_size(const kiln_attention_desc_t& d) {
  size_t bytes = 0;
  check(kiln_attention_bwd_workspace_size(&d, &bytes));
  return bytes;
}
inline void attention_fwd(const kiln_attention_desc_t& d, void* o, float* lse, const void* q,
                          const void* k, const void* v, void* workspace, size_t workspace_bytes,
                          cudaStream_t stream) {
  check(kiln_attention_fwd(&d, o, lse, q, k, v, workspace, workspace_bytes, stream));
}
inline void attention_bwd(const kiln_attention_desc_t& d, void* dq, void* dk, void* dv,
                          const void* dout, const void* q, const void* k, const void* v,
                          const void* o, const float* lse, void* workspace, size_t workspace_bytes,
                          cudaStream_t stream) {
  check(kiln_attention_bwd(&d, dq, dk, dv, dout, q, k, v, o, lse, workspace, workspace_bytes,
                           stream));
}
inline kiln_attention_impl_t attention_resolve_impl(const kiln_attention_desc_t& d, bool backward) {
  kiln_attention_impl_t impl = KILN_ATTENTION_IMPL_AUTO;
  check(kiln_attention_resolve_impl(&d, backward ? 1 : 0, &impl));
  return impl;
}

}  // namespace kiln
#endif /* __cplusplus */

#endif /* KILN_ATTENTION_H_ */
