// The training step's forward and backward passes: one schedule for every model the parts
// describe (kiln/model.hpp). GPT-2 and Llama differ only in which op a part calls:
//   norm       LayerNorm (mean, rstd, bias)        | RMSNorm (rstd, no bias)
//   positions  learned (wpe added at the embedding) | rotary (q and k rotated after the QKV GEMM)
//   MLP        GEMM + bias + GELU epilogue          | GEMM to [gate | up], then SwiGLU
//   biases     passed where the layout has them (null otherwise)
//   head       tied (wte)                           | untied (lm_head)
#include <cstring>

#include "errors/check.hpp"
#include "runtime/trainer_state.hpp"

namespace kiln::impl {

const void* TrainerState::param(ParamKind kind, int64_t layer) const {
  if (!layout.has(kind)) return nullptr;
  return static_cast<const char*>(at(r.params)) +
         layout.get(kind, layer).offset * static_cast<int64_t>(dtype_size(types.compute));
}

void* TrainerState::grad(ParamKind kind, int64_t layer) const {
  if (!layout.has(kind)) return nullptr;
  return static_cast<char*>(at(r.grads)) +
         layout.get(kind, layer).offset * static_cast<int64_t>(dtype_size(types.grad));
}

void TrainerState::norm_fwd(void* y, std::size_t mean, std::size_t rstd, const void* x, ParamKind w,
                            ParamKind b, int64_t layer) {
  const ModelConfig& m = layout.config();
  const int64_t BT = train.batch * train.seq_len;
  if (m.norm == NormKind::layernorm) {
    backend->layernorm_fwd(y, at(mean), at(rstd), x, param(w, layer), param(b, layer), BT, m.n_embd,
                           m.layernorm_eps);
  } else {
    backend->rmsnorm_fwd(y, at(rstd), x, param(w, layer), BT, m.n_embd, m.layernorm_eps);
  }
}

void TrainerState::residual_norm_fwd(void* residual, void* y, std::size_t mean, std::size_t rstd,
                                     const void* a, const void* b, ParamKind w, ParamKind bias,
                                     int64_t layer) {
  const ModelConfig& m = layout.config();
  const int64_t BT = train.batch * train.seq_len;
  if (m.norm == NormKind::layernorm) {
    backend->residual_layernorm_fwd(residual, y, at(mean), at(rstd), a, b, param(w, layer),
                                    param(bias, layer), BT, m.n_embd, m.layernorm_eps);
  } else {
    backend->residual_rmsnorm_fwd(residual, y, at(rstd), a, b, param(w, layer), BT, m.n_embd,
                                  m.layernorm_eps);
  }
}

void TrainerState::norm_bwd(void* dx, const void* dy, const void* x, std::size_t mean,
                            std::size_t rstd, ParamKind w, ParamKind b, int64_t layer) {
  const ModelConfig& m = layout.config();
  const int64_t BT = train.batch * train.seq_len;
  if (m.norm == NormKind::layernorm) {
    backend->layernorm_bwd(dx, grad(w, layer), grad(b, layer), dy, x, param(w, layer), at(mean),
                           at(rstd), BT, m.n_embd);
  } else {
    backend->rmsnorm_bwd(dx, grad(w, layer), dy, x, param(w, layer), at(rstd), BT, m.n_embd);
  }
}

void TrainerState::forward() {
  Backend& be = *backend;
  const ModelConfig& m = layout.config();
  const int64_t B = train.batch, T = train.seq_len, C = m.n_embd, NH = m.n_head;
  const int64_t NKV = m.kv_heads(), HD = m.head_dim(), BT = B * T, L = m.n_layer;
  const int64_t W = m.qkv_width(), F = m.mlp_width(), Hm = m.mlp_hidden();
  const bool swiglu = m.mlp == MlpKind::swiglu;
  const auto* tokens = static_cast<const int32_t*>(at(r.inputs));

  // param(wpe) is null with rotary positions: the embedding is the token's alone.
  be.embedding_fwd(at(r.encoded), tokens, param(ParamKind::wte), param(ParamKind::wpe), B, T, C,
                   m.vocab_size, m.max_seq_len);
  const LayerRegions& first = r.layers[0];
  norm_fwd(at(first.ln1), first.ln1_mean, first.ln1_rstd, at(r.encoded), ParamKind::ln1_w,
           ParamKind::ln1_b, 0);
  for (int64_t l = 0; l < L; ++l) {
    const LayerRegions& a = r.layers[static_cast<std::size_t>(l)];
    const void* x = at(l == 0 ? r.encoded : r.layers[static_cast<std::size_t>(l - 1)].res3);
    be.linear_fwd(at(a.qkv), nullptr, at(a.ln1), param(ParamKind::qkv_w, l),
                  param(ParamKind::qkv_b, l), BT, C, W);
    // The saved qkv holds the rotated q and k: what the attention and its backward read.
    if (!m.learned_positions()) be.rope_fwd(at(a.qkv), B, T, NH, NKV, HD, 0, m.rope);
    be.attention_fwd(at(a.atty), at(a.lse), at(a.qkv), B, T, NH, NKV, HD, m.causal());
    be.linear_fwd(at(r.proj_out), nullptr, at(a.atty), param(ParamKind::attproj_w, l),
                  param(ParamKind::attproj_b, l), BT, C, C);
    residual_norm_fwd(at(a.res2), at(a.ln2), a.ln2_mean, a.ln2_rstd, x, at(r.proj_out),
                      ParamKind::ln2_w, ParamKind::ln2_b, l);
    if (swiglu) {
      be.linear_fwd(at(a.fch), nullptr, at(a.ln2), param(ParamKind::fc_w, l),
                    param(ParamKind::fc_b, l), BT, C, F);
      be.swiglu_fwd(at(a.fch_gelu), at(a.fch), BT, Hm);
    } else {
      be.linear_fwd(at(a.fch_gelu), at(a.fch), at(a.ln2), param(ParamKind::fc_w, l),
                    param(ParamKind::fc_b, l), BT, C, F);
    }
    be.linear_fwd(at(r.proj_out), nullptr, at(a.fch_gelu), param(ParamKind::fcproj_w, l),
                  param(ParamKind::fcproj_b, l), BT, Hm, C);
    // The residual add of the MLP fused with the next norm (the next layer's ln1, or ln_f).
    if (l + 1 < L) {
      const LayerRegions& n = r.layers[static_cast<std::size_t>(l + 1)];
      residual_norm_fwd(at(a.res3), at(n.ln1), n.ln1_mean, n.ln1_rstd, at(a.res2), at(r.proj_out),
                        ParamKind::ln1_w, ParamKind::ln1_b, l + 1);
    } else {
      residual_norm_fwd(at(a.res3), at(r.lnf), r.lnf_mean, r.lnf_rstd, at(a.res2), at(r.proj_out),
                        ParamKind::lnf_w, ParamKind::lnf_b, -1);
    }
  }
  // The LM head: logits (BT, Vp) = lnf @ head^T, head = wte (tied) or lm_head.
  be.linear_fwd(at(r.logits), nullptr, at(r.lnf), param(head_kind()), nullptr, BT, C,
                m.padded_vocab);
}

void TrainerState::backward(bool reduce) {
  Backend& be = *backend;
  const ModelConfig& m = layout.config();
  const int64_t B = train.batch, T = train.seq_len, C = m.n_embd, NH = m.n_head;
  const int64_t NKV = m.kv_heads(), HD = m.head_dim(), BT = B * T, L = m.n_layer;
  const int64_t W = m.qkv_width(), F = m.mlp_width(), Hm = m.mlp_hidden();
  const bool swiglu = m.mlp == MlpKind::swiglu;
  const std::size_t act = dtype_size(types.compute);

  be.fill_zero(at(r.dres), static_cast<std::size_t>(BT * C) * act);
  // LM head: dlnf = dlogits @ head; dhead += dlogits^T @ lnf.
  be.linear_bwd(at(r.dc), grad(head_kind()), nullptr, at(r.logits), at(r.lnf), param(head_kind()),
                nullptr, BT, C, m.padded_vocab);
  const void* last = at(r.layers[static_cast<std::size_t>(L - 1)].res3);
  norm_bwd(at(r.dres), at(r.dc), last, r.lnf_mean, r.lnf_rstd, ParamKind::lnf_w, ParamKind::lnf_b,
           -1);
  if (reduce) reduce_bucket(layout.final_norm_bucket());

  for (int64_t l = L - 1; l >= 0; --l) {
    const LayerRegions& a = r.layers[static_cast<std::size_t>(l)];
    const void* x = at(l == 0 ? r.encoded : r.layers[static_cast<std::size_t>(l - 1)].res3);
    // MLP output projection; its input's gradient passes through the activation's derivative.
    const void* dfc;  // the gradient of the MLP's first GEMM's output (BT, F)
    if (swiglu) {
      if (train.recompute.gelu) be.swiglu_fwd(at(a.fch_gelu), at(a.fch), BT, Hm);
      be.linear_bwd(at(r.d4c), grad(ParamKind::fcproj_w, l), grad(ParamKind::fcproj_b, l),
                    at(r.dres), at(a.fch_gelu), param(ParamKind::fcproj_w, l), nullptr, BT, Hm, C);
      // In place: [gate | up] become their gradients (the forward's copy is not read again).
      be.swiglu_bwd(at(a.fch), at(r.d4c), at(a.fch), BT, Hm);
      dfc = at(a.fch);
    } else {
      if (train.recompute.gelu) be.gelu_fwd(at(a.fch_gelu), at(a.fch), BT * Hm);
      be.linear_bwd(at(r.d4c), grad(ParamKind::fcproj_w, l), grad(ParamKind::fcproj_b, l),
                    at(r.dres), at(a.fch_gelu), param(ParamKind::fcproj_w, l), at(a.fch), BT, Hm,
                    C);
      dfc = at(r.d4c);
    }
    if (train.recompute.layernorm) {
      norm_fwd(at(a.ln2), r.stat_scratch_mean, r.stat_scratch_rstd, at(a.res2), ParamKind::ln2_w,
               ParamKind::ln2_b, l);
    }
    be.linear_bwd(at(r.dc), grad(ParamKind::fc_w, l), grad(ParamKind::fc_b, l), dfc, at(a.ln2),
                  param(ParamKind::fc_w, l), nullptr, BT, C, F);
    norm_bwd(at(r.dres), at(r.dc), at(a.res2), a.ln2_mean, a.ln2_rstd, ParamKind::ln2_w,
             ParamKind::ln2_b, l);
    // Attention output projection, attention, rotary, QKV projection.
    be.linear_bwd(at(r.dc), grad(ParamKind::attproj_w, l), grad(ParamKind::attproj_b, l),
                  at(r.dres), at(a.atty), param(ParamKind::attproj_w, l), nullptr, BT, C, C);
    be.attention_bwd(at(r.d4c), at(r.dc), at(a.qkv), at(a.atty), at(a.lse), B, T, NH, NKV, HD,
                     m.causal());
    if (!m.learned_positions()) be.rope_bwd(at(r.d4c), B, T, NH, NKV, HD, 0, m.rope);
    if (train.recompute.layernorm) {
      norm_fwd(at(a.ln1), r.stat_scratch_mean, r.stat_scratch_rstd, x, ParamKind::ln1_w,
               ParamKind::ln1_b, l);
    }
    be.linear_bwd(at(r.dc), grad(ParamKind::qkv_w, l), grad(ParamKind::qkv_b, l), at(r.d4c),
                  at(a.ln1), param(ParamKind::qkv_w, l), nullptr, BT, C, W);
    norm_bwd(at(r.dres), at(r.dc), x, a.ln1_mean, a.ln1_rstd, ParamKind::ln1_w, ParamKind::ln1_b,
             l);
    if (reduce) reduce_bucket(layout.layer_bucket(l));
  }
  be.embedding_bwd(grad(ParamKind::wte), grad(ParamKind::wpe), at(r.dres),
                   static_cast<const int32_t*>(at(r.inputs)), B, T, C, m.vocab_size, m.max_seq_len);
  if (reduce) reduce_bucket(layout.embedding_bucket());
}

}  // namespace kiln::impl
