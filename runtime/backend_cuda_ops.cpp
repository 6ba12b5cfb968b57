// The cuda backend's ops: each a call of a kernel's C++ API on the compute stream, with the
// shared scratch the workspace query sized.
#include <cuda_runtime_api.h>

#include <algorithm>

#include "errors/check.hpp"
#include "kiln/attention.h"
#include "kiln/classifier.h"
#include "kiln/embedding.h"
#include "kiln/gelu.h"
#include "kiln/gemm.h"
#include "kiln/layernorm.h"
#include "kiln/rmsnorm.h"
#include "kiln/rope.h"
#include "kiln/swiglu.h"
#include "runtime/backend_cuda.hpp"
#include "runtime/cuda/runtime_kernels.hpp"
#include "runtime/rope_config.hpp"

namespace kiln::impl {
namespace {

// d (m, n) bf16 = a @ b over k, the parameters the caller does not set at their defaults.
kiln_gemm_params_t bf16_gemm(int64_t m, int64_t n, int64_t k, const void* a, const void* b,
                             void* d) {
  kiln_gemm_params_t p = kiln::gemm_params();
  p.m = m;
  p.n = n;
  p.k = k;
  p.a = a;
  p.b = b;
  p.d = d;
  p.cd_dtype = KILN_DTYPE_BF16;
  return p;
}

}  // namespace

std::size_t CudaBackend::workspace_bytes(const ModelConfig& config, int64_t batch,
                                         int64_t seq_len) const {
  const ModelConfig c = config.resolved();
  // The kernels move 16-byte vectors of bf16: say so before any op refuses a shape mid-step.
  KILN_CHECK_ARG(c.n_embd % 8 == 0 && c.head_dim() % 8 == 0, "cuda backend: n_embd (", c.n_embd,
                 ") and the head dimension (", c.head_dim(), ") must be multiples of 8");
  KILN_CHECK_ARG(c.intermediate_size % 8 == 0, "cuda backend: intermediate_size (",
                 c.intermediate_size, ") must be a multiple of 8");
  device_.make_current();
  const int64_t C = c.n_embd, NH = c.n_head, NKV = c.kv_heads(), HD = c.head_dim();
  std::size_t bytes = 0;
  auto need = [&](std::size_t b) { bytes = std::max(bytes, b); };
  const int64_t BT = batch * seq_len;
  if (c.norm == NormKind::layernorm) {
    need(kiln::layernorm_bwd_workspace_size(BT, C));
  } else {
    need(kiln::rmsnorm_bwd_workspace_size(BT, C));
  }
  // A rotary model has no position table: the embedding kernels take wpe = dwpe = nullptr.
  need(kiln::embedding_bwd_workspace_size(batch, seq_len, c.vocab_size));
  const kiln_attention_desc_t d = packed_desc(batch, seq_len, NH, NKV, HD, c.causal());
  need(kiln::attention_fwd_workspace_size(d));
  need(kiln::attention_bwd_workspace_size(d));
  if (c.causal()) {
    // Generation: up to seq_len new queries against up to max_seq_len cached keys.
    for (int64_t tq : {int64_t{1}, std::min(seq_len, c.max_seq_len)}) {
      need(kiln::attention_fwd_workspace_size(
          cached_desc(c.max_seq_len - tq, tq, c.qkv_width(), NH, NKV, HD)));
    }
  }
  return align_up(bytes);
}

// A model without a position table (rotary) passes wpe = nullptr / dwpe = nullptr: the kernels
// then copy the token rows and form no position gradient (kiln/embedding.h).
void CudaBackend::embedding_fwd(void* out, const int32_t* tokens, const void* wte, const void* wpe,
                                int64_t B, int64_t T, int64_t C, int64_t V, int64_t maxT) {
  kiln::embedding_fwd(out, tokens, wte, wpe, B, T, C, V, maxT, s());
}

void CudaBackend::embedding_bwd(void* dwte, void* dwpe, const void* dout, const int32_t* tokens,
                                int64_t B, int64_t T, int64_t C, int64_t V, int64_t maxT) {
  kiln::embedding_bwd(static_cast<float*>(dwte), static_cast<float*>(dwpe), dout, tokens, B, T, C,
                      V, maxT, scratch(), scratch_bytes(), s());
}

void CudaBackend::layernorm_fwd(void* y, void* mean, void* rstd, const void* x, const void* gamma,
                                const void* beta, int64_t N, int64_t C, double eps) {
  kiln::layernorm_fwd(y, f(mean), f(rstd), x, gamma, beta, N, C, eps, KILN_DTYPE_BF16, s());
}

void CudaBackend::residual_layernorm_fwd(void* residual, void* y, void* mean, void* rstd,
                                         const void* a, const void* b, const void* gamma,
                                         const void* beta, int64_t N, int64_t C, double eps) {
  kiln::residual_layernorm_fwd(residual, y, f(mean), f(rstd), a, b, gamma, beta, N, C, eps,
                               KILN_DTYPE_BF16, s());
}

void CudaBackend::layernorm_bwd(void* dx, void* dgamma, void* dbeta, const void* dy, const void* x,
                                const void* gamma, const void* mean, const void* rstd, int64_t N,
                                int64_t C) {
  kiln::layernorm_bwd(dx, f(dgamma), f(dbeta), dy, x, gamma, cf(mean), cf(rstd), N, C, scratch(),
                      scratch_bytes(), KILN_DTYPE_BF16, s());
}

void CudaBackend::rmsnorm_fwd(void* y, void* rstd, const void* x, const void* gamma, int64_t N,
                              int64_t C, double eps) {
  kiln::rmsnorm_fwd(y, f(rstd), x, gamma, N, C, eps, KILN_DTYPE_BF16, s());
}

void CudaBackend::residual_rmsnorm_fwd(void* residual, void* y, void* rstd, const void* a,
                                       const void* b, const void* gamma, int64_t N, int64_t C,
                                       double eps) {
  check(kiln_residual_rmsnorm_fwd(residual, y, f(rstd), a, b, gamma, N, C, eps, KILN_DTYPE_BF16,
                                  s()));
}

void CudaBackend::rmsnorm_bwd(void* dx, void* dgamma, const void* dy, const void* x,
                              const void* gamma, const void* rstd, int64_t N, int64_t C) {
  kiln::rmsnorm_bwd(dx, f(dgamma), dy, x, gamma, cf(rstd), N, C, scratch(), scratch_bytes(),
                    KILN_DTYPE_BF16, s());
}

// One call rotates q and k: their heads are adjacent in a packed row (H = NH + NKV).
void CudaBackend::rope_fwd(void* qkv, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                           int64_t pos_offset, const RopeConfig& rope) {
  const kiln_rope_config_t c = rope_config(rope, HD);
  const int64_t row = (NH + 2 * NKV) * HD;
  check(kiln_rope_fwd(qkv, B, T, NH + NKV, T * row, row, pos_offset, &c, KILN_DTYPE_BF16, s()));
}

void CudaBackend::rope_bwd(void* dqkv, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                           int64_t pos_offset, const RopeConfig& rope) {
  const kiln_rope_config_t c = rope_config(rope, HD);
  const int64_t row = (NH + 2 * NKV) * HD;
  check(kiln_rope_bwd(dqkv, B, T, NH + NKV, T * row, row, pos_offset, &c, KILN_DTYPE_BF16, s()));
}

void CudaBackend::swiglu_fwd(void* out, const void* gu, int64_t N, int64_t I) {
  check(kiln_swiglu_fwd(out, gu, N, I, KILN_DTYPE_BF16, s()));
}

void CudaBackend::swiglu_bwd(void* dgu, const void* dout, const void* gu, int64_t N, int64_t I) {
  check(kiln_swiglu_bwd(dgu, dout, gu, N, I, KILN_DTYPE_BF16, s()));
}

void CudaBackend::copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride,
                            int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  KILN_CUDA_CHECK(cudaMemcpy2DAsync(dst, static_cast<std::size_t>(dst_stride) * 2, src,
                                    static_cast<std::size_t>(src_stride) * 2,
                                    static_cast<std::size_t>(cols) * 2,
                                    static_cast<std::size_t>(rows), cudaMemcpyDeviceToDevice, s()));
}

void CudaBackend::linear_fwd(void* out, void* pre_gelu, const void* in, const void* weight,
                             const void* bias, int64_t M, int64_t K, int64_t N) {
  kiln_gemm_params_t p = bf16_gemm(M, N, K, in, weight, out);
  p.trans_b = 1;
  p.bias = bias;
  if (pre_gelu) {
    p.epilogue = KILN_GEMM_EPILOGUE_BIAS_GELU;
    p.pre_gelu_out = pre_gelu;
  } else {
    p.epilogue = bias ? KILN_GEMM_EPILOGUE_BIAS : KILN_GEMM_EPILOGUE_NONE;
  }
  kiln::gemm(gemm_, p, s());
}

void CudaBackend::linear_bwd(void* d_in, void* dweight, void* dbias, const void* d_out,
                             const void* in, const void* weight, const void* dgelu_pre, int64_t M,
                             int64_t K, int64_t N) {
  if (d_in) {
    // d_in (M, K) = d_out (M, N) @ W (N, K) [* gelu'(pre)].
    kiln_gemm_params_t p = bf16_gemm(M, K, N, d_out, weight, d_in);
    if (dgelu_pre) {
      p.epilogue = KILN_GEMM_EPILOGUE_DGELU;
      p.pre_gelu = dgelu_pre;
    }
    kiln::gemm(gemm_, p, s());
  }
  // dW (N, K) += d_out^T (N, M) @ in (M, K), fp32; db (N) += colsum(d_out) fused.
  kiln_gemm_params_t p = kiln::gemm_params();
  p.m = N;
  p.n = K;
  p.k = M;
  p.trans_a = 1;
  p.a = d_out;
  p.b = in;
  p.c = dweight;
  p.d = dweight;
  p.cd_dtype = KILN_DTYPE_F32;
  p.beta = 1.0f;
  if (dbias) {
    p.epilogue = KILN_GEMM_EPILOGUE_BIAS_GRAD;
    p.bias_grad = dbias;
  }
  kiln::gemm(gemm_, p, s());
}

void CudaBackend::gelu_fwd(void* y, const void* x, int64_t n) {
  kiln::gelu_fwd(y, x, n, KILN_DTYPE_BF16, s());
}

// Packed qkv (B, T, NH + 2 NKV, HD): k starts NH heads into a row, v NH + NKV heads.
void CudaBackend::attention_fwd(void* out, void* lse, const void* qkv, int64_t B, int64_t T,
                                int64_t NH, int64_t NKV, int64_t HD, bool causal) {
  const kiln_attention_desc_t d = packed_desc(B, T, NH, NKV, HD, causal);
  const char* q = static_cast<const char*>(qkv);
  kiln::attention_fwd(d, out, f(lse), q, q + NH * HD * 2, q + (NH + NKV) * HD * 2, scratch(),
                      scratch_bytes(), s());
}

void CudaBackend::attention_bwd(void* dqkv, const void* dout, const void* qkv, const void* out,
                                const void* lse, int64_t B, int64_t T, int64_t NH, int64_t NKV,
                                int64_t HD, bool causal) {
  const kiln_attention_desc_t d = packed_desc(B, T, NH, NKV, HD, causal);
  const char* q = static_cast<const char*>(qkv);
  char* dq = static_cast<char*>(dqkv);
  const int64_t k = NH * HD * 2, v = (NH + NKV) * HD * 2;  // bytes into a token's row
  kiln::attention_bwd(d, dq, dq + k, dq + v, dout, q, q + k, q + v, out, cf(lse), scratch(),
                      scratch_bytes(), s());
}

void CudaBackend::attention_cached(void* out, void* lse, const void* q, int64_t q_stride,
                                   const void* kv_cache, int64_t past, int64_t Tq, int64_t NH,
                                   int64_t NKV, int64_t HD) {
  const kiln_attention_desc_t d = cached_desc(past, Tq, q_stride, NH, NKV, HD);
  const char* cache = static_cast<const char*>(kv_cache);
  kiln::attention_fwd(d, out, f(lse), q, cache, cache + NKV * HD * 2, scratch(), scratch_bytes(),
                      s());
}

void CudaBackend::classifier(void* losses, void* logits, const int32_t* targets, int64_t N,
                             int64_t V, int64_t Vp, double dloss, int32_t ignore_index) {
  kiln::classifier_fwd_bwd(f(losses), logits, logits, targets, N, V, Vp, static_cast<float>(dloss),
                           ignore_index, s());
}

void CudaBackend::accumulate_loss(double* sum, const void* losses, int64_t N, double scale) {
  launch_accumulate_loss(sum, cf(losses), N, scale, s());
}

kiln_attention_desc_t CudaBackend::packed_desc(int64_t B, int64_t T, int64_t NH, int64_t NKV,
                                               int64_t HD, bool causal) const {
  kiln_attention_desc_t d = kiln::attention_desc(B, T, T, NH, NKV, HD, causal);
  check(kiln_attention_desc_set_packed_qkv(&d));
  d.deterministic = deterministic_ ? 1 : 0;
  return d;
}

// Tq queries (rows of q_stride) against a (maxT, 2, NKV, HD) key/value cache.
kiln_attention_desc_t CudaBackend::cached_desc(int64_t past, int64_t Tq, int64_t q_stride,
                                               int64_t NH, int64_t NKV, int64_t HD) {
  const int64_t Tk = past + Tq, kv = 2 * NKV * HD;
  kiln_attention_desc_t d = kiln::attention_desc(1, Tq, Tk, NH, NKV, HD, true);
  d.q = {Tq * q_stride, q_stride, HD};
  d.k = {Tk * kv, kv, HD};
  d.v = d.k;
  d.o = {Tq * NH * HD, NH * HD, HD};
  return d;
}

}  // namespace kiln::impl
