// The CPU backend: the references (kernels/<op>/<op>_ref.*) in fp32 or fp64, plus the exact
// multi-threaded GEMM of runtime/cpu/gemm_cpu. Row-independent references are run on ranges of
// rows in parallel (each row computed exactly as the reference computes it, so results do not
// depend on the thread count); references that reduce across rows (LayerNorm and embedding
// backward, the global norm) run on one thread.
//
// The references are this backend's implementation by design, not a reach into the kernels'
// rooms: they are the ops' specification, built as a target of their own (kiln_refs) that the
// runtime links, so the cpu backend computes what the GPU tests hold the kernels to.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "errors/check.hpp"
#include "kernels/attention/attention_ref.hpp"
#include "kernels/classifier/classifier_ref.hpp"
#include "kernels/embedding/embedding_ref.hpp"
#include "kernels/gelu/gelu_ref.hpp"
#include "kernels/norm/layernorm_ref.hpp"
#include "kernels/norm/rmsnorm_ref.hpp"
#include "kernels/optimizer/optimizer_ref.hpp"
#include "kernels/rope/rope_ref.hpp"
#include "kernels/swiglu/swiglu_ref.hpp"
#include "kiln/backend.hpp"
#include "kiln/limits.hpp"
#include "runtime/cpu/gemm_cpu.hpp"
#include "runtime/cpu/thread_pool.hpp"
#include "runtime/rope_config.hpp"

namespace kiln {
namespace impl {
namespace {

template <typename T>
constexpr DType dtype_of() {
  return sizeof(T) == 8 ? DType::f64 : DType::f32;
}

template <typename T>
class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads)
      : pool_(threads > 0 ? threads
                          : std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1,
                                       limits::kMaxThreads)) {}

  BackendKind kind() const override { return BackendKind::cpu; }
  std::string description() const override {
    return std::string("cpu (") + dtype_name(dtype_of<T>()) + ", " + std::to_string(pool_.size()) +
           (pool_.size() == 1 ? " thread)" : " threads)");
  }
  BackendTypes types() const override {
    const DType t = dtype_of<T>();
    return {t, t, t, t, false};
  }

  // ---- memory -----------------------------------------------------------------------------------
  void* allocate(std::size_t bytes) override {
    const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + 255) / 256 * 256;
    void* p = std::aligned_alloc(256, rounded);
    KILN_CHECK(p != nullptr, Status::out_of_memory, "cpu backend: cannot allocate ", rounded,
               " bytes of host memory");
    return p;
  }
  void deallocate(void* p) noexcept override { std::free(p); }
  void upload(void* dst, const void* src, std::size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, std::size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void fill_zero(void* p, std::size_t bytes) override {
    if (bytes) std::memset(p, 0, bytes);
  }
  void upload_f32(void* dst, DType dtype, const float* src, int64_t n) override {
    check_dtype(dtype, "upload_f32");
    T* d = static_cast<T*>(dst);
    for (int64_t i = 0; i < n; ++i)
      d[i] = static_cast<T>(src[i]);
  }
  void download_f32(float* dst, const void* src, DType dtype, int64_t n) override {
    check_dtype(dtype, "download_f32");
    const T* s = static_cast<const T*>(src);
    for (int64_t i = 0; i < n; ++i)
      dst[i] = static_cast<float>(s[i]);
  }
  void upload_f64(void* dst, DType dtype, const double* src, int64_t n) override {
    check_dtype(dtype, "upload_f64");
    T* d = static_cast<T*>(dst);
    for (int64_t i = 0; i < n; ++i)
      d[i] = static_cast<T>(src[i]);
  }
  void download_f64(double* dst, const void* src, DType dtype, int64_t n) override {
    check_dtype(dtype, "download_f64");
    const T* s = static_cast<const T*>(src);
    for (int64_t i = 0; i < n; ++i)
      dst[i] = static_cast<double>(s[i]);
  }
  void convert(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) override {
    check_dtype(dst_dtype, "convert");
    check_dtype(src_dtype, "convert");
    if (dst != src) std::memmove(dst, src, static_cast<std::size_t>(n) * sizeof(T));
  }
  void synchronize() override {}

  std::size_t workspace_bytes(const ModelConfig& config, int64_t batch,
                              int64_t seq_len) const override {
    const ModelConfig c = config.resolved();
    // The GEMM packs B's columns when they are strided: the forward's weights, reduction K <= the
    // MLP's hidden width. Sized for every reduction length the schedule uses, so any linear of
    // the model fits.
    const int64_t k = std::max({4 * c.n_embd, c.mlp_hidden(), c.mlp_width(), c.qkv_width(),
                                c.padded_vocab, batch * seq_len, c.max_seq_len});
    return static_cast<std::size_t>(pool_.size() * gemm_pack_elements(k)) * sizeof(T);
  }
  void set_workspace(void* workspace, std::size_t bytes) override {
    workspace_ = static_cast<T*>(workspace);
    workspace_bytes_ = bytes;
  }

  // ---- ops ------------------------------------------------------------------------------------
  void embedding_fwd(void* out, const int32_t* tokens, const void* wte, const void* wpe, int64_t B,
                     int64_t T_, int64_t C, int64_t, int64_t) override {
    // No positions: the reference adds rows of zeros (x + 0 is x exactly).
    const T* positions = wpe ? cp(wpe) : zeros(T_ * C);
    pool_.parallel_for(B, 1, [&](int, int64_t b0, int64_t b1) {
      ref::embedding_fwd_ref(p(out) + b0 * T_ * C, tokens + b0 * T_, cp(wte), positions, b1 - b0,
                             T_, C);
    });
  }
  void embedding_bwd(void* dwte, void* dwpe, const void* dout, const int32_t* tokens, int64_t B,
                     int64_t T_, int64_t C, int64_t, int64_t) override {
    // No positions: their gradient goes to a scratch nobody reads.
    T* positions = dwpe ? p(dwpe) : zeros(T_ * C);
    ref::embedding_bwd_ref(p(dwte), positions, cp(dout), tokens, B, T_, C);
  }
  void layernorm_fwd(void* y, void* mean, void* rstd, const void* x, const void* gamma,
                     const void* beta, int64_t N, int64_t C, double eps) override {
    pool_.parallel_for(N, 16, [&](int, int64_t r0, int64_t r1) {
      ref::layernorm_fwd_ref(p(y) + r0 * C, p(mean) + r0, p(rstd) + r0, cp(x) + r0 * C, cp(gamma),
                             cp(beta), r1 - r0, C, eps);
    });
  }
  void residual_layernorm_fwd(void* residual, void* y, void* mean, void* rstd, const void* a,
                              const void* b, const void* gamma, const void* beta, int64_t N,
                              int64_t C, double eps) override {
    pool_.parallel_for(N, 16, [&](int, int64_t r0, int64_t r1) {
      ref::residual_layernorm_fwd_ref(p(residual) + r0 * C, p(y) + r0 * C, p(mean) + r0,
                                      p(rstd) + r0, cp(a) + r0 * C, cp(b) + r0 * C, cp(gamma),
                                      cp(beta), r1 - r0, C, eps);
    });
  }
  void layernorm_bwd(void* dx, void* dgamma, void* dbeta, const void* dy, const void* x,
                     const void* gamma, const void* mean, const void* rstd, int64_t N,
                     int64_t C) override {
    ref::layernorm_bwd_ref(p(dx), p(dgamma), p(dbeta), cp(dy), cp(x), cp(gamma), cp(mean), cp(rstd),
                           N, C);
  }
  void rmsnorm_fwd(void* y, void* rstd, const void* x, const void* gamma, int64_t N, int64_t C,
                   double eps) override {
    pool_.parallel_for(N, 16, [&](int, int64_t r0, int64_t r1) {
      ref::rmsnorm_fwd_ref(p(y) + r0 * C, p(rstd) + r0, cp(x) + r0 * C, cp(gamma), r1 - r0, C, eps);
    });
  }
  void residual_rmsnorm_fwd(void* residual, void* y, void* rstd, const void* a, const void* b,
                            const void* gamma, int64_t N, int64_t C, double eps) override {
    pool_.parallel_for(N, 16, [&](int, int64_t r0, int64_t r1) {
      // As residual_layernorm_fwd_ref: the sum rounded to T, then the norm of the stored sum.
      for (int64_t n = r0; n < r1; ++n) {
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = n * C + c;
          p(residual)[i] =
              static_cast<T>(static_cast<double>(cp(a)[i]) + static_cast<double>(cp(b)[i]));
        }
      }
      ref::rmsnorm_fwd_ref(p(y) + r0 * C, p(rstd) + r0, cp(residual) + r0 * C, cp(gamma), r1 - r0,
                           C, eps);
    });
  }
  void rmsnorm_bwd(void* dx, void* dgamma, const void* dy, const void* x, const void* gamma,
                   const void* rstd, int64_t N, int64_t C) override {
    ref::rmsnorm_bwd_ref(p(dx), p(dgamma), cp(dy), cp(x), cp(gamma), cp(rstd), N, C);
  }
  void rope_fwd(void* qkv, int64_t B, int64_t T_, int64_t NH, int64_t NKV, int64_t HD,
                int64_t pos_offset, const RopeConfig& rope) override {
    apply_rope(qkv, B, T_, NH, NKV, HD, pos_offset, rope, false);
  }
  void rope_bwd(void* dqkv, int64_t B, int64_t T_, int64_t NH, int64_t NKV, int64_t HD,
                int64_t pos_offset, const RopeConfig& rope) override {
    apply_rope(dqkv, B, T_, NH, NKV, HD, pos_offset, rope, true);
  }
  void swiglu_fwd(void* out, const void* gu, int64_t N, int64_t I) override {
    pool_.parallel_for(N, 16, [&](int, int64_t r0, int64_t r1) {
      ref::swiglu_fwd_ref(p(out) + r0 * I, cp(gu) + r0 * 2 * I, r1 - r0, I);
    });
  }
  void swiglu_bwd(void* dgu, const void* dout, const void* gu, int64_t N, int64_t I) override {
    // In place (dgu == gu) too: the reference reads a row's gate and up before writing it.
    pool_.parallel_for(N, 16, [&](int, int64_t r0, int64_t r1) {
      ref::swiglu_bwd_ref(p(dgu) + r0 * 2 * I, cp(dout) + r0 * I, cp(gu) + r0 * 2 * I, r1 - r0, I);
    });
  }
  void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t rows,
                 int64_t cols) override {
    for (int64_t r = 0; r < rows; ++r) {
      std::memmove(p(dst) + r * dst_stride, cp(src) + r * src_stride,
                   static_cast<std::size_t>(cols) * sizeof(T));
    }
  }
  void linear_fwd(void* out, void* pre_gelu, const void* in, const void* weight, const void* bias,
                  int64_t M, int64_t K, int64_t N) override {
    T* dst = pre_gelu ? p(pre_gelu) : p(out);
    // B(k, n) = weight[n, k]: the weight's rows are B's columns.
    cpu_gemm<T>(pool_, M, N, K, {cp(in), K, 1}, {cp(weight), 1, K}, dst, N, false, cp(bias),
                pack(K));
    if (pre_gelu) gelu_fwd(out, pre_gelu, M * N);
  }
  void linear_bwd(void* d_in, void* dweight, void* dbias, const void* d_out, const void* in,
                  const void* weight, const void* dgelu_pre, int64_t M, int64_t K,
                  int64_t N) override {
    if (d_in) {
      // d_in (M, K) = d_out (M, N) @ weight (N, K).
      cpu_gemm<T>(pool_, M, K, N, {cp(d_out), N, 1}, {cp(weight), K, 1}, p(d_in), K, false, nullptr,
                  pack(N));
      if (dgelu_pre) {
        // In place: the reference reads dy[i] before writing dx[i].
        pool_.parallel_for(M, 16, [&](int, int64_t r0, int64_t r1) {
          ref::gelu_bwd_ref(p(d_in) + r0 * K, cp(d_in) + r0 * K, cp(dgelu_pre) + r0 * K,
                            (r1 - r0) * K);
        });
      }
    }
    // dweight (N, K) += d_out^T (N, M) @ in (M, K).
    cpu_gemm<T>(pool_, N, K, M, {cp(d_out), 1, N}, {cp(in), K, 1}, p(dweight), K, true, nullptr,
                pack(M));
    if (dbias) cpu_colsum_accumulate<T>(pool_, p(dbias), cp(d_out), M, N);
  }
  void gelu_fwd(void* y, const void* x, int64_t n) override {
    pool_.parallel_for(n, 4096, [&](int, int64_t i0, int64_t i1) {
      ref::gelu_fwd_ref(p(y) + i0, cp(x) + i0, i1 - i0);
    });
  }
  // Attention runs one task per (batch, key/value head): the reference on that head's group of
  // query heads (NH / NKV of them, adjacent), computed exactly as one call over everything would.
  void attention_fwd(void* out, void* lse, const void* qkv, int64_t B, int64_t T_, int64_t NH,
                     int64_t NKV, int64_t HD, bool causal) override {
    const auto layout = ref::AttentionLayout::packed_qkv(T_, NH, NKV, HD);
    const double scale = 1.0 / std::sqrt(static_cast<double>(HD));
    const int64_t G = NH / NKV;
    pool_.parallel_for(B * NKV, 1, [&](int, int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / NKV, g = i % NKV;
        const T* base = cp(qkv) + b * layout.q.batch;
        ref::attention_fwd_ref(p(out) + b * layout.o.batch + g * G * HD,
                               p(lse) + (b * NH + g * G) * T_, base + g * G * HD,
                               base + (NH + g) * HD, base + (NH + NKV + g) * HD, 1, T_, T_, G, 1,
                               HD, scale, causal, layout);
      }
    });
  }
  void attention_bwd(void* dqkv, const void* dout, const void* qkv, const void* out,
                     const void* lse, int64_t B, int64_t T_, int64_t NH, int64_t NKV, int64_t HD,
                     bool causal) override {
    const auto layout = ref::AttentionLayout::packed_qkv(T_, NH, NKV, HD);
    const double scale = 1.0 / std::sqrt(static_cast<double>(HD));
    const int64_t G = NH / NKV;
    pool_.parallel_for(B * NKV, 1, [&](int, int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / NKV, g = i % NKV;
        const int64_t qo = b * layout.q.batch;
        T* d = p(dqkv) + qo;
        const T* x = cp(qkv) + qo;
        ref::attention_bwd_ref(d + g * G * HD, d + (NH + g) * HD, d + (NH + NKV + g) * HD,
                               cp(dout) + b * layout.o.batch + g * G * HD, x + g * G * HD,
                               x + (NH + g) * HD, x + (NH + NKV + g) * HD, 1, T_, T_, G, 1, HD,
                               scale, causal, layout);
      }
    });
  }
  void attention_cached(void* out, void* lse, const void* q, int64_t q_stride, const void* kv_cache,
                        int64_t past, int64_t Tq, int64_t NH, int64_t NKV, int64_t HD) override {
    const int64_t Tk = past + Tq, kv = 2 * NKV * HD, G = NH / NKV;
    const ref::AttentionStrides cache{Tk * kv, kv, HD};
    const ref::AttentionLayout layout{
        {Tq * q_stride, q_stride, HD}, cache, cache, {Tq * NH * HD, NH * HD, HD}};
    const double scale = 1.0 / std::sqrt(static_cast<double>(HD));
    pool_.parallel_for(NKV, 1, [&](int, int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        const T* k = cp(kv_cache) + g * HD;
        ref::attention_fwd_ref(p(out) + g * G * HD, p(lse) + g * G * Tq, cp(q) + g * G * HD, k,
                               k + NKV * HD, 1, Tq, Tk, G, 1, HD, scale, true, layout);
      }
    });
  }
  void classifier(void* losses, void* logits, const int32_t* targets, int64_t N, int64_t V,
                  int64_t Vp, double dloss, int32_t ignore_index) override {
    pool_.parallel_for(N, 4, [&](int, int64_t r0, int64_t r1) {
      ref::classifier_ref(p(losses) + r0, p(logits) + r0 * Vp, cp(logits) + r0 * Vp, targets + r0,
                          r1 - r0, V, Vp, dloss, ignore_index);
    });
  }
  void accumulate_loss(double* sum, const void* losses, int64_t N, double scale) override {
    double s = 0;
    for (int64_t i = 0; i < N; ++i)
      s += static_cast<double>(cp(losses)[i]);
    *sum += scale * s;
  }
  void optimizer_update(const OptimizerUpdate& u) override {
    KILN_CHECK_ARG(u.layout && u.master && u.grads && u.m && u.v && u.stats,
                   "cpu backend: optimizer_update is missing a buffer");
    const int64_t b = u.shard_begin, e = shard_end(u);
    const T* grads = cp(u.grads);
    double norm;
    if (u.norm_from_sum_squares) {
      norm = std::sqrt(u.stats[kStatGradNorm]);
    } else {
      const T* first = grads + b;
      const int64_t n = e - b;
      norm = ref::global_norm_ref<T>(&first, &n, 1);
    }
    u.stats[kStatGradNorm] = norm;
    if (!std::isfinite(norm) || !std::isfinite(u.stats[kStatLoss])) {
      u.stats[kStatSkipped] = 1;
      return;
    }
    u.stats[kStatSkipped] = 0;
    const double scale = ref::clip_scale_ref(norm, u.grad_clip);
    const ref::AdamWConfig cfg{u.lr, u.beta1, u.beta2, u.eps, u.weight_decay};
    for (const ParamTensor& t : u.layout->tensors()) {
      // The part of the tensor inside the shard; master, m and v start at element b.
      const int64_t lo = std::max(t.offset, b), hi = std::min(t.offset + t.numel(), e);
      if (lo >= hi) continue;
      pool_.parallel_for(hi - lo, 4096, [&](int, int64_t i0, int64_t i1) {
        const int64_t s = lo - b + i0;
        ref::adamw_ref(p(u.master) + s, p(u.m) + s, p(u.v) + s, grads + lo + i0, i1 - i0, cfg,
                       u.step, scale, t.decay);
      });
    }
  }
  void grad_sum_squares(const OptimizerUpdate& u) override {
    KILN_CHECK_ARG(u.layout && u.grads && u.stats,
                   "cpu backend: grad_sum_squares is missing a buffer");
    const T* g = cp(u.grads);
    double sum = 0;
    for (int64_t i = u.shard_begin, e = shard_end(u); i < e; ++i)
      sum += static_cast<double>(g[i]) * static_cast<double>(g[i]);
    u.stats[kStatGradNorm] = sum;
  }

 private:
  static int64_t shard_end(const OptimizerUpdate& u) {
    const int64_t e = u.shard_end < 0 ? u.layout->total() : u.shard_end;
    KILN_CHECK_ARG(u.shard_begin >= 0 && u.shard_begin <= e && e <= u.layout->total(),
                   "cpu backend: optimizer shard [", u.shard_begin, ", ", e,
                   ") is outside the parameters [0, ", u.layout->total(), ")");
    return e;
  }
  static T* p(void* x) { return static_cast<T*>(x); }
  // n zeros (a scratch the no-position embedding passes for the positions; the embedding
  // backward writes into it, so it is cleared again on every request).
  T* zeros(int64_t n) {
    zeros_.assign(static_cast<std::size_t>(n), T(0));
    return zeros_.data();
  }
  void apply_rope(void* x, int64_t B, int64_t T_, int64_t NH, int64_t NKV, int64_t HD,
                  int64_t pos_offset, const RopeConfig& rope, bool backward) {
    const kiln_rope_config_t config = rope_config(rope, HD);
    // The q and k heads are adjacent in a packed row: one call over H = NH + NKV heads.
    const int64_t row = (NH + 2 * NKV) * HD;
    pool_.parallel_for(B, 1, [&](int, int64_t b0, int64_t b1) {
      T* first = p(x) + b0 * T_ * row;
      if (backward) {
        ref::rope_bwd_ref(first, b1 - b0, T_, NH + NKV, T_ * row, row, pos_offset, config);
      } else {
        ref::rope_fwd_ref(first, b1 - b0, T_, NH + NKV, T_ * row, row, pos_offset, config);
      }
    });
  }
  static const T* cp(const void* x) { return static_cast<const T*>(x); }
  void check_dtype(DType dtype, const char* op) const {
    KILN_CHECK_ARG(dtype == dtype_of<T>(), "cpu backend: ", op, " got ", dtype_name(dtype),
                   " for a buffer of this ", dtype_name(dtype_of<T>()), " backend");
  }
  // The GEMM's packing scratch for reduction length k, from the bound workspace.
  T* pack(int64_t k) {
    const std::size_t need =
        static_cast<std::size_t>(pool_.size() * gemm_pack_elements(k)) * sizeof(T);
    KILN_CHECK(workspace_ != nullptr && workspace_bytes_ >= need, Status::invalid_argument,
               "cpu backend: the bound workspace (", workspace_bytes_,
               " bytes) is smaller than the ", need, " bytes a GEMM with reduction length ", k,
               " needs (plan with workspace_bytes and bind it with set_workspace)");
    return workspace_;
  }

  ThreadPool pool_;
  std::vector<T> zeros_;
  T* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
};

}  // namespace

std::shared_ptr<Backend> make_cpu_backend_impl(DType dtype, int threads) {
  KILN_CHECK_ARG(dtype == DType::f32 || dtype == DType::f64,
                 "cpu backend: computes in f32 or f64, not ", dtype_name(dtype));
  check_thread_count(threads, "cpu backend");
  if (dtype == DType::f64) return std::make_shared<CpuBackend<double>>(threads);
  return std::make_shared<CpuBackend<float>>(threads);
}

}  // namespace impl

std::shared_ptr<Backend> make_cpu_backend(DType dtype, int threads) {
  return impl::make_cpu_backend_impl(dtype, threads);
}

}  // namespace kiln
