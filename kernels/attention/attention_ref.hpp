// CPU reference of scaled dot-product attention (the spec of kiln_attention_fwd / _bwd; see
// kiln/attention.h for the formula and the masking rule). Plain C++, accumulates in double.
#pragma once

#include <cstdint>

namespace kiln::ref {

// Strides of one (B, T, NH, HD) tensor in elements; the HD elements of a head are contiguous.
struct AttentionStrides {
  int64_t batch = 0, token = 0, head = 0;
};

// Strides of every tensor of one attention call. dQ, dK, dV use those of Q, K, V; dO that of O.
struct AttentionLayout {
  AttentionStrides q, k, v, o;

  // Contiguous (B, Tq, NHq, HD) Q and O, contiguous (B, Tk, NHkv, HD) K and V.
  static AttentionLayout contiguous(int64_t Tq, int64_t Tk, int64_t NHq, int64_t NHkv, int64_t HD) {
    const AttentionStrides sq{Tq * NHq * HD, NHq * HD, HD};
    const AttentionStrides skv{Tk * NHkv * HD, NHkv * HD, HD};
    return {sq, skv, skv, sq};
  }
  // Q, K, V inside one packed (B, T, NHq + 2 NHkv, HD) tensor (q = base, k = base + NHq * HD,
  // v = base + (NHq + NHkv) * HD), O contiguous (B, T, NHq, HD).
  static AttentionLayout packed_qkv(int64_t T, int64_t NHq, int64_t NHkv, int64_t HD) {
    const int64_t token = (NHq + 2 * NHkv) * HD;
    const AttentionStrides s{T * token, token, HD};
    return {s, s, s, AttentionStrides{T * NHq * HD, NHq * HD, HD}};
  }
};

// out (B, Tq, NHq, HD) and lse (B, NHq, Tq, contiguous; natural log) from q (B, Tq, NHq, HD),
// k and v (B, Tk, NHkv, HD). Query head h reads K/V head h / (NHq / NHkv). Causal: query i sees
// keys j <= i + Tk - Tq. A row that sees no key gets out = 0 and lse = -inf.
template <typename T>
void attention_fwd_ref(T* out, T* lse, const T* q, const T* k, const T* v, int64_t B, int64_t Tq,
                       int64_t Tk, int64_t NHq, int64_t NHkv, int64_t HD, double scale, bool causal,
                       const AttentionLayout& layout);
template <typename T>
void attention_fwd_ref(T* out, T* lse, const T* q, const T* k, const T* v, int64_t B, int64_t Tq,
                       int64_t Tk, int64_t NHq, int64_t NHkv, int64_t HD, double scale,
                       bool causal) {
  attention_fwd_ref(out, lse, q, k, v, B, Tq, Tk, NHq, NHkv, HD, scale, causal,
                    AttentionLayout::contiguous(Tq, Tk, NHq, NHkv, HD));
}

// Gradients of the forward above given dout (layout of out): dq (layout of q), dk, dv (layouts of
// k, v; summed over the query heads sharing a K/V head), all overwritten. Recomputes the softmax
// from q and k, so it needs neither out nor lse. Elements of dq/dk/dv outside the described
// tensors (e.g. the other parts of a packed QKV gradient) are left untouched.
template <typename T>
void attention_bwd_ref(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                       int64_t B, int64_t Tq, int64_t Tk, int64_t NHq, int64_t NHkv, int64_t HD,
                       double scale, bool causal, const AttentionLayout& layout);
template <typename T>
void attention_bwd_ref(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                       int64_t B, int64_t Tq, int64_t Tk, int64_t NHq, int64_t NHkv, int64_t HD,
                       double scale, bool causal) {
  attention_bwd_ref(dq, dk, dv, dout, q, k, v, B, Tq, Tk, NHq, NHkv, HD, scale, causal,
                    AttentionLayout::contiguous(Tq, Tk, NHq, NHkv, HD));
}

// The last key query row i may see: Tk - 1 without a mask, i + Tk - Tq with the causal mask
// (negative: the row sees no key).
inline int64_t attention_last_key(int64_t i, int64_t Tq, int64_t Tk, bool causal) {
  if (!causal) return Tk - 1;
  const int64_t last = i + Tk - Tq;
  return last < Tk - 1 ? last : Tk - 1;
}

}  // namespace kiln::ref
