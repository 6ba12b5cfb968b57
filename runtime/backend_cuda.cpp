// The cuda backend: kiln's kernels through their C++ APIs, bf16 compute with fp32 master weights,
// gradients, optimizer state and statistics, everything ordered on the device's compute stream.
//
// Host synchronization: download() and synchronize() only. Whether a step is skipped (non-finite
// loss or gradient norm) is decided on the device by the stats kernel and read there by AdamW, so
// the host queues a whole step, optimizer included, without waiting for the GPU.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "errors/check.hpp"
#include "kiln/attention.h"
#include "kiln/backend.hpp"
#include "kiln/classifier.h"
#include "kiln/device.hpp"
#include "kiln/embedding.h"
#include "kiln/gelu.h"
#include "kiln/gemm.h"
#include "kiln/layernorm.h"
#include "kiln/optimizer.h"
#include "kiln/rmsnorm.h"
#include "kiln/rope.h"
#include "kiln/swiglu.h"
#include "runtime/cuda/runtime_kernels.hpp"
#include "runtime/rope_config.hpp"

namespace kiln::impl {
namespace {

constexpr std::size_t kAlign = 256;

std::size_t align_up(std::size_t x) {
  return (x + kAlign - 1) / kAlign * kAlign;
}

uint16_t to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
    return static_cast<uint16_t>((u >> 16) | 0x40);
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

float from_bf16_bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int ordinal)
      : device_(ordinal),
        gemm_(device_.cublaslt(), device_.workspace(), device_.workspace_bytes()) {}
  ~CudaBackend() override {
    for (cudaGraphExec_t g : graphs_) {
      if (g) cudaGraphExecDestroy(g);
    }
  }

  BackendKind kind() const override { return BackendKind::cuda; }
  std::string description() const override {
    return std::string("cuda (") + device_.info().name + ", bf16)";
  }
  BackendTypes types() const override {
    return {DType::bf16, DType::f32, DType::f32, DType::f32, true};
  }
  void* native_stream() const override { return device_.stream(); }
  int device_ordinal() const override { return device_.ordinal(); }

  // ---- memory -----------------------------------------------------------------------------------
  void* allocate(std::size_t bytes) override {
    device_.make_current();
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, std::max<std::size_t>(bytes, 1));
    if (e != cudaSuccess) {
      cudaGetLastError();
      KILN_CHECK(false, Status::out_of_memory, "cuda backend: cannot allocate ", bytes,
                 " bytes on ", device_.info().name, " (", cudaGetErrorString(e), ")");
    }
    return p;
  }
  void deallocate(void* p) noexcept override {
    if (p) cudaFree(p);
  }
  void upload(void* dst, const void* src, std::size_t bytes) override {
    if (bytes) KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s()));
  }
  void download(void* dst, const void* src, std::size_t bytes) override {
    if (bytes) KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s()));
    device_.synchronize();
  }
  void fill_zero(void* p, std::size_t bytes) override {
    if (bytes) KILN_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, s()));
  }
  void upload_f32(void* dst, DType dtype, const float* src, int64_t n) override {
    if (dtype == DType::f32) return upload(dst, src, static_cast<std::size_t>(n) * 4);
    KILN_CHECK_ARG(dtype == DType::bf16, "cuda backend: no ", dtype_name(dtype), " buffers");
    std::vector<uint16_t> staged(static_cast<std::size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      staged[static_cast<std::size_t>(i)] = to_bf16_bits(src[i]);
    upload(dst, staged.data(), staged.size() * 2);
    device_.synchronize();  // `staged` dies here
  }
  void download_f32(float* dst, const void* src, DType dtype, int64_t n) override {
    if (dtype == DType::f32) return download(dst, src, static_cast<std::size_t>(n) * 4);
    KILN_CHECK_ARG(dtype == DType::bf16, "cuda backend: no ", dtype_name(dtype), " buffers");
    std::vector<uint16_t> staged(static_cast<std::size_t>(n));
    download(staged.data(), src, staged.size() * 2);
    for (int64_t i = 0; i < n; ++i)
      dst[i] = from_bf16_bits(staged[static_cast<std::size_t>(i)]);
  }
  void upload_f64(void* dst, DType dtype, const double* src, int64_t n) override {
    std::vector<float> f(src, src + n);
    upload_f32(dst, dtype, f.data(), n);
  }
  void download_f64(double* dst, const void* src, DType dtype, int64_t n) override {
    std::vector<float> f(static_cast<std::size_t>(n));
    download_f32(f.data(), src, dtype, n);
    std::copy(f.begin(), f.end(), dst);
  }
  void convert(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) override {
    if (dst_dtype == src_dtype) {
      if (dst != src) {
        KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src,
                                        static_cast<std::size_t>(n) * dtype_size(dst_dtype),
                                        cudaMemcpyDeviceToDevice, s()));
      }
      return;
    }
    KILN_CHECK_ARG(dst_dtype == DType::bf16 && src_dtype == DType::f32,
                   "cuda backend: converts f32 to bf16 only (got ", dtype_name(src_dtype), " to ",
                   dtype_name(dst_dtype), ")");
    launch_f32_to_bf16(dst, static_cast<const float*>(src), n, s());
  }
  void synchronize() override { device_.synchronize(); }

  // ---- workspace
  // --------------------------------------------------------------------------------- The ops share
  // one scratch (they run one after another on one stream): the largest of their queries for the
  // model and batch shape.
  std::size_t workspace_bytes(const ModelConfig& config, int64_t batch,
                              int64_t seq_len) const override {
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
    const std::size_t embedding = kiln::embedding_bwd_workspace_size(batch, seq_len, c.vocab_size);
    if (c.learned_positions()) {
      need(embedding);
    } else {
      // No position embedding: zero positions (bf16) for the forward, and a gradient for them
      // (fp32) behind the embedding backward's own scratch (see embedding_fwd / _bwd).
      const int64_t rows = std::max(seq_len, c.max_seq_len);
      need(align_up(static_cast<std::size_t>(rows * C) * 2));
      need(align_up(embedding) + static_cast<std::size_t>(seq_len * C) * 4);
    }
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
  void set_workspace(void* workspace, std::size_t bytes) override {
    workspace_ = workspace;
    workspace_bytes_ = bytes;
  }
  // [ norm out (2 floats) | skip flag | norm partials | norm table | AdamW table ], persistent:
  // the tables are built once for a set of buffers and reused every step.
  std::size_t optimizer_workspace_bytes(const ModelConfig& config) const override {
    return optimizer_layout(ParamLayout(config.resolved())).total;
  }

  // ---- ops
  // ---------------------------------------------------------------------------------------
  // The embedding kernels always add positions; a model without them (rotary) passes zero rows
  // from the scratch, and their gradient lands in the scratch too. It costs a T x C clear per
  // call (small beside the step); an embedding kernel without positions would save it.
  void embedding_fwd(void* out, const int32_t* tokens, const void* wte, const void* wpe, int64_t B,
                     int64_t T, int64_t C, int64_t V, int64_t maxT) override {
    if (!wpe) {
      const std::size_t bytes = static_cast<std::size_t>(T * C) * 2;
      KILN_CHECK(scratch_bytes() >= bytes, Status::invalid_argument,
                 "cuda backend: the workspace is too small for the embedding without positions");
      KILN_CUDA_CHECK(cudaMemsetAsync(scratch(), 0, bytes, s()));
      wpe = scratch();
      maxT = T;
    }
    kiln::embedding_fwd(out, tokens, wte, wpe, B, T, C, V, maxT, s());
  }
  void embedding_bwd(void* dwte, void* dwpe, const void* dout, const int32_t* tokens, int64_t B,
                     int64_t T, int64_t C, int64_t V, int64_t maxT) override {
    std::size_t ws_bytes = scratch_bytes();
    if (!dwpe) {
      const std::size_t own = align_up(kiln::embedding_bwd_workspace_size(B, T, V));
      const std::size_t bytes = static_cast<std::size_t>(T * C) * 4;
      KILN_CHECK(scratch_bytes() >= own + bytes, Status::invalid_argument,
                 "cuda backend: the workspace is too small for the embedding without positions");
      dwpe = static_cast<char*>(scratch()) + own;
      maxT = T;
      ws_bytes = own;
    }
    kiln::embedding_bwd(static_cast<float*>(dwte), static_cast<float*>(dwpe), dout, tokens, B, T, C,
                        V, maxT, scratch(), ws_bytes, s());
  }
  void layernorm_fwd(void* y, void* mean, void* rstd, const void* x, const void* gamma,
                     const void* beta, int64_t N, int64_t C, double eps) override {
    kiln::layernorm_fwd(y, f(mean), f(rstd), x, gamma, beta, N, C, eps, KILN_DTYPE_BF16, s());
  }
  void residual_layernorm_fwd(void* residual, void* y, void* mean, void* rstd, const void* a,
                              const void* b, const void* gamma, const void* beta, int64_t N,
                              int64_t C, double eps) override {
    kiln::residual_layernorm_fwd(residual, y, f(mean), f(rstd), a, b, gamma, beta, N, C, eps,
                                 KILN_DTYPE_BF16, s());
  }
  void layernorm_bwd(void* dx, void* dgamma, void* dbeta, const void* dy, const void* x,
                     const void* gamma, const void* mean, const void* rstd, int64_t N,
                     int64_t C) override {
    kiln::layernorm_bwd(dx, f(dgamma), f(dbeta), dy, x, gamma, cf(mean), cf(rstd), N, C, scratch(),
                        scratch_bytes(), KILN_DTYPE_BF16, s());
  }
  void rmsnorm_fwd(void* y, void* rstd, const void* x, const void* gamma, int64_t N, int64_t C,
                   double eps) override {
    kiln::rmsnorm_fwd(y, f(rstd), x, gamma, N, C, eps, KILN_DTYPE_BF16, s());
  }
  void residual_rmsnorm_fwd(void* residual, void* y, void* rstd, const void* a, const void* b,
                            const void* gamma, int64_t N, int64_t C, double eps) override {
    check(kiln_residual_rmsnorm_fwd(residual, y, f(rstd), a, b, gamma, N, C, eps, KILN_DTYPE_BF16,
                                    s()));
  }
  void rmsnorm_bwd(void* dx, void* dgamma, const void* dy, const void* x, const void* gamma,
                   const void* rstd, int64_t N, int64_t C) override {
    kiln::rmsnorm_bwd(dx, f(dgamma), dy, x, gamma, cf(rstd), N, C, scratch(), scratch_bytes(),
                      KILN_DTYPE_BF16, s());
  }
  // One call rotates q and k: their heads are adjacent in a packed row (H = NH + NKV).
  void rope_fwd(void* qkv, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                int64_t pos_offset, const RopeConfig& rope) override {
    const kiln_rope_config_t c = rope_config(rope, HD);
    const int64_t row = (NH + 2 * NKV) * HD;
    check(kiln_rope_fwd(qkv, B, T, NH + NKV, T * row, row, pos_offset, &c, KILN_DTYPE_BF16, s()));
  }
  void rope_bwd(void* dqkv, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                int64_t pos_offset, const RopeConfig& rope) override {
    const kiln_rope_config_t c = rope_config(rope, HD);
    const int64_t row = (NH + 2 * NKV) * HD;
    check(kiln_rope_bwd(dqkv, B, T, NH + NKV, T * row, row, pos_offset, &c, KILN_DTYPE_BF16, s()));
  }
  void swiglu_fwd(void* out, const void* gu, int64_t N, int64_t I) override {
    check(kiln_swiglu_fwd(out, gu, N, I, KILN_DTYPE_BF16, s()));
  }
  void swiglu_bwd(void* dgu, const void* dout, const void* gu, int64_t N, int64_t I) override {
    check(kiln_swiglu_bwd(dgu, dout, gu, N, I, KILN_DTYPE_BF16, s()));
  }
  void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t rows,
                 int64_t cols) override {
    if (rows == 0 || cols == 0) return;
    KILN_CUDA_CHECK(cudaMemcpy2DAsync(
        dst, static_cast<std::size_t>(dst_stride) * 2, src,
        static_cast<std::size_t>(src_stride) * 2, static_cast<std::size_t>(cols) * 2,
        static_cast<std::size_t>(rows), cudaMemcpyDeviceToDevice, s()));
  }
  void linear_fwd(void* out, void* pre_gelu, const void* in, const void* weight, const void* bias,
                  int64_t M, int64_t K, int64_t N) override {
    kiln_gemm_params_t p = kiln::gemm_params();
    p.m = M;
    p.n = N;
    p.k = K;
    p.trans_b = 1;
    p.a = in;
    p.b = weight;
    p.d = out;
    p.cd_dtype = KILN_DTYPE_BF16;
    p.bias = bias;
    if (pre_gelu) {
      p.epilogue = KILN_GEMM_EPILOGUE_BIAS_GELU;
      p.pre_gelu_out = pre_gelu;
    } else {
      p.epilogue = bias ? KILN_GEMM_EPILOGUE_BIAS : KILN_GEMM_EPILOGUE_NONE;
    }
    kiln::gemm(gemm_, p, s());
  }
  void linear_bwd(void* d_in, void* dweight, void* dbias, const void* d_out, const void* in,
                  const void* weight, const void* dgelu_pre, int64_t M, int64_t K,
                  int64_t N) override {
    if (d_in) {
      // d_in (M, K) = d_out (M, N) @ W (N, K) [* gelu'(pre)].
      kiln_gemm_params_t p = kiln::gemm_params();
      p.m = M;
      p.n = K;
      p.k = N;
      p.a = d_out;
      p.b = weight;
      p.d = d_in;
      p.cd_dtype = KILN_DTYPE_BF16;
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
  void gelu_fwd(void* y, const void* x, int64_t n) override {
    kiln::gelu_fwd(y, x, n, KILN_DTYPE_BF16, s());
  }
  // Packed qkv (B, T, NH + 2 NKV, HD): k starts NH heads into a row, v NH + NKV heads.
  void attention_fwd(void* out, void* lse, const void* qkv, int64_t B, int64_t T, int64_t NH,
                     int64_t NKV, int64_t HD, bool causal) override {
    const kiln_attention_desc_t d = packed_desc(B, T, NH, NKV, HD, causal);
    const char* q = static_cast<const char*>(qkv);
    kiln::attention_fwd(d, out, f(lse), q, q + NH * HD * 2, q + (NH + NKV) * HD * 2, scratch(),
                        scratch_bytes(), s());
  }
  void attention_bwd(void* dqkv, const void* dout, const void* qkv, const void* out,
                     const void* lse, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                     bool causal) override {
    const kiln_attention_desc_t d = packed_desc(B, T, NH, NKV, HD, causal);
    const char* q = static_cast<const char*>(qkv);
    char* dq = static_cast<char*>(dqkv);
    const int64_t k = NH * HD * 2, v = (NH + NKV) * HD * 2;  // bytes into a token's row
    kiln::attention_bwd(d, dq, dq + k, dq + v, dout, q, q + k, q + v, out, cf(lse), scratch(),
                        scratch_bytes(), s());
  }
  void attention_cached(void* out, void* lse, const void* q, int64_t q_stride, const void* kv_cache,
                        int64_t past, int64_t Tq, int64_t NH, int64_t NKV, int64_t HD) override {
    const kiln_attention_desc_t d = cached_desc(past, Tq, q_stride, NH, NKV, HD);
    const char* cache = static_cast<const char*>(kv_cache);
    kiln::attention_fwd(d, out, f(lse), q, cache, cache + NKV * HD * 2, scratch(), scratch_bytes(),
                        s());
  }
  void classifier(void* losses, void* logits, const int32_t* targets, int64_t N, int64_t V,
                  int64_t Vp, double dloss, int32_t ignore_index) override {
    kiln::classifier_fwd_bwd(f(losses), logits, logits, targets, N, V, Vp,
                             static_cast<float>(dloss), ignore_index, s());
  }
  void accumulate_loss(double* sum, const void* losses, int64_t N, double scale) override {
    launch_accumulate_loss(sum, cf(losses), N, scale, s());
  }
  void optimizer_update(const OptimizerUpdate& u) override {
    KILN_CHECK_ARG(u.layout && u.master && u.compute && u.grads && u.m && u.v && u.stats,
                   "cuda backend: optimizer_update is missing a buffer");
    const OptLayout l = optimizer_layout(*u.layout);
    KILN_CHECK_ARG(u.workspace != nullptr && u.workspace_bytes >= l.total,
                   "cuda backend: optimizer_update needs ", l.total,
                   " bytes of optimizer workspace (optimizer_workspace_bytes), got ",
                   u.workspace_bytes);
    char* ws = static_cast<char*>(u.workspace);
    prepare_tables(u, l);
    float* norm_out = reinterpret_cast<float*>(ws + l.norm_out);
    if (u.norm_from_sum_squares) {
      launch_norm_from_sum_squares(norm_out, u.stats, static_cast<float>(u.grad_clip), s());
    } else {
      shard_norm(u, l, static_cast<float>(u.grad_clip));
    }
    int32_t* skip = reinterpret_cast<int32_t*>(ws + l.flag);
    launch_finalize_stats(u.stats, norm_out, skip, s());
    if (adamw_count_ == 0) return;
    kiln_adamw_config_t cfg{};
    cfg.lr = static_cast<float>(u.lr);
    cfg.beta1 = static_cast<float>(u.beta1);
    cfg.beta2 = static_cast<float>(u.beta2);
    cfg.eps = static_cast<float>(u.eps);
    cfg.weight_decay = static_cast<float>(u.weight_decay);
    cfg.step = u.step;
    cfg.skip = skip;  // the verdict stays on the device: no host round trip
    kiln::adamw_step(reinterpret_cast<const kiln_adamw_tensor_t*>(ws + l.adamw_table), adamw_count_,
                     adamw_chunks_, cfg, norm_out + 1, s());
  }

  void grad_sum_squares(const OptimizerUpdate& u) override {
    KILN_CHECK_ARG(u.layout && u.master && u.compute && u.grads && u.m && u.v && u.stats,
                   "cuda backend: grad_sum_squares is missing a buffer");
    const OptLayout l = optimizer_layout(*u.layout);
    KILN_CHECK_ARG(u.workspace != nullptr && u.workspace_bytes >= l.total,
                   "cuda backend: grad_sum_squares needs ", l.total,
                   " bytes of optimizer workspace (optimizer_workspace_bytes), got ",
                   u.workspace_bytes);
    prepare_tables(u, l);
    shard_norm(u, l, 0.0f);
    launch_sum_squares_from_norm(
        u.stats, reinterpret_cast<const float*>(static_cast<char*>(u.workspace) + l.norm_out), s());
  }

  // ---- graphs
  // ------------------------------------------------------------------------------------
  void set_deterministic(bool deterministic) override { deterministic_ = deterministic; }
  bool supports_capture() const override { return true; }
  void begin_capture() override {
    KILN_CUDA_CHECK(cudaStreamBeginCapture(s(), cudaStreamCaptureModeThreadLocal));
  }
  int end_capture() override {
    cudaGraph_t graph = nullptr;
    KILN_CUDA_CHECK(cudaStreamEndCapture(s(), &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    KILN_CUDA_CHECK(e);
    graphs_.push_back(exec);
    return static_cast<int>(graphs_.size() - 1);
  }
  void replay(int graph) override {
    KILN_CHECK_ARG(graph >= 0 && graph < static_cast<int>(graphs_.size()) &&
                       graphs_[static_cast<std::size_t>(graph)],
                   "cuda backend: no graph ", graph);
    KILN_CUDA_CHECK(cudaGraphLaunch(graphs_[static_cast<std::size_t>(graph)], s()));
  }
  void release_graph(int graph) noexcept override {
    if (graph >= 0 && graph < static_cast<int>(graphs_.size()) &&
        graphs_[static_cast<std::size_t>(graph)]) {
      cudaGraphExecDestroy(graphs_[static_cast<std::size_t>(graph)]);
      graphs_[static_cast<std::size_t>(graph)] = nullptr;
    }
  }

 private:
  struct OptLayout {
    std::size_t norm_out = 0, flag = 0, norm_partials = 0, norm_partials_bytes = 0, norm_table = 0,
                adamw_table = 0, total = 0;
  };

  static OptLayout optimizer_layout(const ParamLayout& layout) {
    OptLayout l;
    std::size_t at = 0;
    l.norm_out = at;
    at += kAlign;
    l.flag = at;
    at += kAlign;
    // The chunk count depends only on the element count; any aligned address serves the probe.
    kiln_norm_tensor_t probe{reinterpret_cast<const float*>(kAlign), layout.total(), 0};
    const int64_t chunks = kiln::global_norm_prepare(&probe, 1);
    l.norm_partials = at;
    l.norm_partials_bytes = align_up(kiln::global_norm_workspace_size(chunks));
    at += l.norm_partials_bytes;
    l.norm_table = at;
    at += align_up(sizeof(kiln_norm_tensor_t));
    l.adamw_table = at;
    at += align_up(layout.tensors().size() * sizeof(kiln_adamw_tensor_t));
    l.total = at;
    return l;
  }

  kiln_attention_desc_t packed_desc(int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                                    bool causal) const {
    kiln_attention_desc_t d = kiln::attention_desc(B, T, T, NH, NKV, HD, causal);
    check(kiln_attention_desc_set_packed_qkv(&d));
    d.deterministic = deterministic_ ? 1 : 0;
    return d;
  }
  // Tq queries (rows of q_stride) against a (maxT, 2, NKV, HD) key/value cache.
  static kiln_attention_desc_t cached_desc(int64_t past, int64_t Tq, int64_t q_stride, int64_t NH,
                                           int64_t NKV, int64_t HD) {
    const int64_t Tk = past + Tq, kv = 2 * NKV * HD;
    kiln_attention_desc_t d = kiln::attention_desc(1, Tq, Tk, NH, NKV, HD, true);
    d.q = {Tq * q_stride, q_stride, HD};
    d.k = {Tk * kv, kv, HD};
    d.v = d.k;
    d.o = {Tq * NH * HD, NH * HD, HD};
    return d;
  }

  // norm_out (workspace) = the norm of the update's gradient elements and its clip scale; an
  // empty shard has norm 0.
  void shard_norm(const OptimizerUpdate& u, const OptLayout& l, float max_norm) {
    char* ws = static_cast<char*>(u.workspace);
    float* norm_out = reinterpret_cast<float*>(ws + l.norm_out);
    if (norm_chunks_ == 0) {
      const float zero_and_one[2] = {0.0f, 1.0f};
      upload(norm_out, zero_and_one, sizeof zero_and_one);
      device_.synchronize();  // the host array dies here
      return;
    }
    kiln::global_norm(norm_out, reinterpret_cast<const kiln_norm_tensor_t*>(ws + l.norm_table), 1,
                      norm_chunks_, max_norm, ws + l.norm_partials, l.norm_partials_bytes, s());
  }

  // Builds the optimizer's device tables once per set of buffers and shard and keeps them in the
  // optimizer workspace, which persists between steps. A ZeRO-1 shard [b, e) takes the part of
  // each tensor inside it; its master weights and moments start at element b.
  void prepare_tables(const OptimizerUpdate& u, const OptLayout& l) {
    const int64_t b = u.shard_begin, e = u.shard_end < 0 ? u.layout->total() : u.shard_end;
    KILN_CHECK_ARG(b >= 0 && b <= e && e <= u.layout->total() && b % ParamLayout::kAlign == 0,
                   "cuda backend: optimizer shard [", b, ", ", e,
                   ") is not an aligned range of [0, ", u.layout->total(), ")");
    const Key key{u.workspace, u.master, u.compute, u.grads, u.m, u.v, b, e};
    if (key == tables_for_) return;
    std::vector<kiln_adamw_tensor_t> adamw;
    for (const ParamTensor& t : u.layout->tensors()) {
      const int64_t lo = std::max(t.offset, b), hi = std::min(t.offset + t.numel(), e);
      if (lo >= hi) continue;
      kiln_adamw_tensor_t entry{};
      entry.master = static_cast<float*>(u.master) + (lo - b);
      entry.m = static_cast<float*>(u.m) + (lo - b);
      entry.v = static_cast<float*>(u.v) + (lo - b);
      entry.grad = static_cast<const float*>(u.grads) + lo;
      entry.param = static_cast<__nv_bfloat16*>(u.compute) + lo;
      entry.n = hi - lo;
      entry.decay = t.decay ? 1 : 0;
      adamw.push_back(entry);
    }
    adamw_count_ = static_cast<int>(adamw.size());
    adamw_chunks_ = adamw.empty() ? 0 : kiln::adamw_prepare(adamw.data(), adamw_count_);
    kiln_norm_tensor_t norm{static_cast<const float*>(u.grads) + b, e - b, 0};
    norm_chunks_ = e > b ? kiln::global_norm_prepare(&norm, 1) : 0;
    char* ws = static_cast<char*>(u.workspace);
    if (!adamw.empty()) {
      upload(ws + l.adamw_table, adamw.data(), adamw.size() * sizeof(kiln_adamw_tensor_t));
    }
    upload(ws + l.norm_table, &norm, sizeof norm);
    device_.synchronize();  // the host tables die here
    tables_for_ = key;
  }

  cudaStream_t s() const { return device_.stream(); }
  void* scratch() const { return workspace_; }
  std::size_t scratch_bytes() const { return workspace_ ? workspace_bytes_ : 0; }
  static float* f(void* p) { return static_cast<float*>(p); }
  static const float* cf(const void* p) { return static_cast<const float*>(p); }

  struct Key {
    const void *workspace = nullptr, *master = nullptr, *compute = nullptr, *grads = nullptr,
               *m = nullptr, *v = nullptr;
    int64_t shard_begin = -1, shard_end = -1;
    bool operator==(const Key&) const = default;
  };

  kiln::Device device_;
  kiln::GemmContext gemm_;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
  Key tables_for_;
  int adamw_count_ = 0;
  int64_t adamw_chunks_ = 0, norm_chunks_ = 0;
  std::vector<cudaGraphExec_t> graphs_;
  bool deterministic_ = true;  // training runs repeat bit for bit unless asked otherwise
};

}  // namespace

std::shared_ptr<Backend> make_cuda_backend_impl(int ordinal) {
  return std::make_shared<CudaBackend>(ordinal);
}

}  // namespace kiln::impl
