// Internal: the cuda backend (kiln::make_backend(BackendKind::cuda)), kiln's kernels through their
// C++ APIs, bf16 compute with fp32 master weights, gradients, optimizer state and statistics,
// everything ordered on the device's compute stream. Its definitions by job: backend_cuda.cpp
// (memory, conversions, CUDA graphs), backend_cuda_ops.cpp (the ops and their workspace),
// backend_cuda_optimizer.cpp (global norm, clipping and AdamW over the flat buffers).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/attention.h"
#include "kiln/backend.hpp"
#include "kiln/device.hpp"
#include "kiln/gemm.h"

namespace kiln::impl {

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
  std::string description() const override;
  BackendTypes types() const override {
    return {DType::bf16, DType::f32, DType::f32, DType::f32, true};
  }
  void* native_stream() const override { return device_.stream(); }
  int device_ordinal() const override { return device_.ordinal(); }

  // ---- memory -----------------------------------------------------------------------------------
  void* allocate(std::size_t bytes) override;
  void deallocate(void* p) noexcept override;
  void upload(void* dst, const void* src, std::size_t bytes) override;
  void download(void* dst, const void* src, std::size_t bytes) override;
  void fill_zero(void* p, std::size_t bytes) override;
  void upload_f32(void* dst, DType dtype, const float* src, int64_t n) override;
  void download_f32(float* dst, const void* src, DType dtype, int64_t n) override;
  void upload_f64(void* dst, DType dtype, const double* src, int64_t n) override;
  void download_f64(double* dst, const void* src, DType dtype, int64_t n) override;
  void convert(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) override;
  void synchronize() override { device_.synchronize(); }

  // ---- workspace -------------------------------------------------------------------------------
  // The ops share one scratch (they run one after another on one stream): the largest of their
  // queries for the model and batch shape.
  std::size_t workspace_bytes(const ModelConfig& config, int64_t batch,
                              int64_t seq_len) const override;
  void set_workspace(void* workspace, std::size_t bytes) override;
  // [ norm out (2 floats) | skip flag | norm partials | norm table | AdamW table ], persistent:
  // the tables are built once for a set of buffers and reused every step.
  std::size_t optimizer_workspace_bytes(const ModelConfig& config) const override {
    return optimizer_layout(ParamLayout(config.resolved())).total;
  }

  // ---- ops (backend_cuda_ops.cpp) --------------------------------------------------------------
  // The embedding kernels always add positions; a model without them (rotary) passes zero rows
  // from the scratch, and their gradient lands in the scratch too. It costs a T x C clear per
  // call (small beside the step); an embedding kernel without positions would save it.
  void embedding_fwd(void* out, const int32_t* tokens, const void* wte, const void* wpe, int64_t B,
                     int64_t T, int64_t C, int64_t V, int64_t maxT) override;
  void embedding_bwd(void* dwte, void* dwpe, const void* dout, const int32_t* tokens, int64_t B,
                     int64_t T, int64_t C, int64_t V, int64_t maxT) override;
  void layernorm_fwd(void* y, void* mean, void* rstd, const void* x, const void* gamma,
                     const void* beta, int64_t N, int64_t C, double eps) override;
  void residual_layernorm_fwd(void* residual, void* y, void* mean, void* rstd, const void* a,
                              const void* b, const void* gamma, const void* beta, int64_t N,
                              int64_t C, double eps) override;
  void layernorm_bwd(void* dx, void* dgamma, void* dbeta, const void* dy, const void* x,
                     const void* gamma, const void* mean, const void* rstd, int64_t N,
                     int64_t C) override;
  void rmsnorm_fwd(void* y, void* rstd, const void* x, const void* gamma, int64_t N, int64_t C,
                   double eps) override;
  void residual_rmsnorm_fwd(void* residual, void* y, void* rstd, const void* a, const void* b,
                            const void* gamma, int64_t N, int64_t C, double eps) override;
  void rmsnorm_bwd(void* dx, void* dgamma, const void* dy, const void* x, const void* gamma,
                   const void* rstd, int64_t N, int64_t C) override;
  // One call rotates q and k: their heads are adjacent in a packed row (H = NH + NKV).
  void rope_fwd(void* qkv, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                int64_t pos_offset, const RopeConfig& rope) override;
  void rope_bwd(void* dqkv, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                int64_t pos_offset, const RopeConfig& rope) override;
  void swiglu_fwd(void* out, const void* gu, int64_t N, int64_t I) override;
  void swiglu_bwd(void* dgu, const void* dout, const void* gu, int64_t N, int64_t I) override;
  void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t rows,
                 int64_t cols) override;
  void linear_fwd(void* out, void* pre_gelu, const void* in, const void* weight, const void* bias,
                  int64_t M, int64_t K, int64_t N) override;
  void linear_bwd(void* d_in, void* dweight, void* dbias, const void* d_out, const void* in,
                  const void* weight, const void* dgelu_pre, int64_t M, int64_t K,
                  int64_t N) override;
  void gelu_fwd(void* y, const void* x, int64_t n) override;
  // Packed qkv (B, T, NH + 2 NKV, HD): k starts NH heads into a row, v NH + NKV heads.
  void attention_fwd(void* out, void* lse, const void* qkv, int64_t B, int64_t T, int64_t NH,
                     int64_t NKV, int64_t HD, bool causal) override;
  void attention_bwd(void* dqkv, const void* dout, const void* qkv, const void* out,
                     const void* lse, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                     bool causal) override;
  void attention_cached(void* out, void* lse, const void* q, int64_t q_stride, const void* kv_cache,
                        int64_t past, int64_t Tq, int64_t NH, int64_t NKV, int64_t HD) override;
  void classifier(void* losses, void* logits, const int32_t* targets, int64_t N, int64_t V,
                  int64_t Vp, double dloss, int32_t ignore_index) override;
  void accumulate_loss(double* sum, const void* losses, int64_t N, double scale) override;

  // ---- optimizer (backend_cuda_optimizer.cpp)
  // ----------------------------------------------------
  void optimizer_update(const OptimizerUpdate& u) override;
  void grad_sum_squares(const OptimizerUpdate& u) override;

  // ---- graphs ----------------------------------------------------------------------------------
  void set_deterministic(bool deterministic) override { deterministic_ = deterministic; }
  bool supports_capture() const override { return true; }
  void begin_capture() override;
  int end_capture() override;
  void replay(int graph) override;
  void release_graph(int graph) noexcept override;

 private:
  static constexpr std::size_t kAlign = 256;  // allocations and the optimizer workspace's slices
  static std::size_t align_up(std::size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

  struct OptLayout {
    std::size_t norm_out = 0, flag = 0, norm_partials = 0, norm_partials_bytes = 0, norm_table = 0,
                adamw_table = 0, total = 0;
  };

  static OptLayout optimizer_layout(const ParamLayout& layout);
  // The layout, after checking that `u` has every buffer and a large enough workspace.
  static OptLayout checked_layout(const OptimizerUpdate& u, const char* op);

  kiln_attention_desc_t packed_desc(int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                                    bool causal) const;
  // Tq queries (rows of q_stride) against a (maxT, 2, NKV, HD) key/value cache.
  static kiln_attention_desc_t cached_desc(int64_t past, int64_t Tq, int64_t q_stride, int64_t NH,
                                           int64_t NKV, int64_t HD);

  // norm_out (workspace) = the norm of the update's gradient elements and its clip scale; an
  // empty shard has norm 0.
  void shard_norm(const OptimizerUpdate& u, const OptLayout& l, float max_norm);

  // Builds the optimizer's device tables once per set of buffers and shard and keeps them in the
  // optimizer workspace, which persists between steps. A ZeRO-1 shard [b, e) takes the part of
  // each tensor inside it; its master weights and moments start at element b.
  void prepare_tables(const OptimizerUpdate& u, const OptLayout& l);

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

}  // namespace kiln::impl
