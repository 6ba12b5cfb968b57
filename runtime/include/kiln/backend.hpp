// kiln::Backend: the ops the training schedule is written in. The schedule (kiln::Trainer) and
// the generator are written once; a backend supplies memory and the ops:
//   cpu   the references (kernels/<op>/<op>_ref.*), in fp32 (or fp64 for gradient checks), with
//         a multi-threaded exact GEMM; "device" memory is host memory.
//   cuda  the kernels through the ops' C++ APIs, bf16 compute with fp32 master weights,
//         gradients and optimizer state, everything ordered on one stream.
//
// Every pointer an op takes points into memory the backend allocated (the arena), in the dtype
// types() names for its role; shapes are row-major and written beside each argument. Ops are
// asynchronous on the cuda backend (ordered on its stream) and synchronous on the cpu backend;
// only download() and synchronize() wait. Parameter gradients accumulate (+=), activation
// gradients overwrite (=) unless stated, as in the references. A backend is used by one thread at
// a time (the trainers and generators sharing it included).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "kiln/export.h"
#include "kiln/model.hpp"

namespace kiln {

enum class BackendKind { cpu, cuda };
KILN_API const char* backend_kind_name(BackendKind kind);

// The dtypes a backend computes and stores in.
struct BackendTypes {
  DType compute;         // compute copy of the parameters, activations and their gradients
  DType master;          // master weights and AdamW moments
  DType grad;            // parameter gradients (accumulated over micro-steps)
  DType stat;            // LayerNorm mean / rstd, attention log-sum-exp, per-token losses
  bool separate_master;  // the compute parameters are a copy of the master weights (cuda: bf16
                         // of fp32); false: the ops read the master weights directly (cpu)
};

// The arguments of one optimizer update over the flat parameter buffer (ParamLayout), or over this
// rank's shard [shard_begin, shard_end) of it (ZeRO-1: each rank updates its own elements and the
// ranks exchange the results).
struct OptimizerUpdate {
  const ParamLayout* layout = nullptr;
  void* master = nullptr;   // (shard) master dtype: master[i] is element shard_begin + i
  void* compute = nullptr;  // (layout.total()) compute dtype, from element 0; when
                            // !separate_master it is the master buffer itself
  void* grads = nullptr;    // (layout.total()) grad dtype, from element 0; read only
  void* m = nullptr;        // (shard) master dtype; AdamW first moment, like master
  void* v = nullptr;        // (shard) master dtype; AdamW second moment, like master
  int64_t shard_begin = 0;  // the elements updated: [shard_begin, shard_end), multiples of
  int64_t shard_end = -1;   // ParamLayout::kAlign (or the end); shard_end < 0: layout.total()
  // false: the update computes the gradient norm over its elements itself. true: the sum of the
  // squares of every rank's gradients is already in stats[kStatGradNorm] (grad_sum_squares() on
  // each shard, summed over the ranks) and the norm is its square root.
  bool norm_from_sum_squares = false;
  double lr = 0, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0;
  double grad_clip = 0;  // > 0: gradients scaled by min(1, clip / norm); 0: no clipping
  int64_t step = 1;      // 1-based AdamW step (bias corrections)
  // Persistent scratch of optimizer_workspace_bytes() (backend memory; may be null when that is
  // 0): the backend may keep state there between updates (e.g. device tables of the tensors).
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  // The step's statistics (kStatCount doubles, backend memory). The update reads
  // stats[kStatLoss] and writes stats[kStatGradNorm]; when either is not finite it leaves every
  // parameter and moment untouched and sets stats[kStatSkipped] = 1, else 0.
  double* stats = nullptr;
};

// Layout of the statistics block the schedule keeps in backend memory (doubles).
inline constexpr int kStatLoss = 0;      // sum over micro-steps of sum(losses) * scale
inline constexpr int kStatGradNorm = 1;  // global L2 norm of the gradients before clipping
inline constexpr int kStatSkipped = 2;   // 1 when the update was skipped (non-finite)
inline constexpr int kStatEval = 3;      // an evaluation's loss, apart from the step's
inline constexpr int kStatCount = 4;

class KILN_API Backend {
 public:
  virtual ~Backend();

  virtual BackendKind kind() const = 0;
  // For people: e.g. "cpu (fp32, 2 threads)" or "cuda (NVIDIA H100 80GB HBM3, bf16)".
  virtual std::string description() const = 0;
  virtual BackendTypes types() const = 0;
  // The cudaStream_t everything is ordered on (cuda), or nullptr (cpu): for communicators.
  virtual void* native_stream() const { return nullptr; }
  // The CUDA device the backend runs on (cuda), or -1 (cpu): for kiln::device_info.
  virtual int device_ordinal() const { return -1; }

  // ---- memory ---------------------------------------------------------------------------------
  // `bytes` of backend memory, 256-byte aligned. Throws kiln::Error(out_of_memory).
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void deallocate(void* p) noexcept = 0;
  // Host -> backend copy, ordered after earlier work; `src` may be reused when it returns.
  virtual void upload(void* dst, const void* src, std::size_t bytes) = 0;
  // Backend -> host copy; waits for earlier work and for the copy.
  virtual void download(void* dst, const void* src, std::size_t bytes) = 0;
  virtual void fill_zero(void* p, std::size_t bytes) = 0;
  // Host fp32 -> backend `dtype` (rounded to nearest even for bf16), and back.
  virtual void upload_f32(void* dst, DType dtype, const float* src, int64_t n) = 0;
  virtual void download_f32(float* dst, const void* src, DType dtype, int64_t n) = 0;
  // The same from / to double (exact for the fp64 cpu backend of the gradient checks).
  virtual void upload_f64(void* dst, DType dtype, const double* src, int64_t n) = 0;
  virtual void download_f64(double* dst, const void* src, DType dtype, int64_t n) = 0;
  // Backend-to-backend conversion (master -> compute copy of the parameters).
  virtual void convert(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) = 0;
  // Waits for all work issued so far; throws kiln::Error if any of it failed.
  virtual void synchronize() = 0;

  // Scratch the ops need for a model / batch shape (bytes): the maximum over every op of the
  // ops' workspace queries. The schedule plans it into the arena and hands it over once.
  virtual std::size_t workspace_bytes(const ModelConfig& config, int64_t batch,
                                      int64_t seq_len) const = 0;
  virtual void set_workspace(void* workspace, std::size_t bytes) = 0;
  // Persistent memory optimizer_update() needs for this model (OptimizerUpdate::workspace).
  virtual std::size_t optimizer_workspace_bytes(const ModelConfig& config) const { return 0; }

  // ---- ops (compute dtype unless stated; "stat" = types().stat) ------------------------------
  // out (B, T, C) = wte[tokens] + wpe[t]; tokens (B, T) int32 in [0, V); wte (>= V, C);
  // wpe (maxT, C) with T <= maxT, or null: no position embedding (rotary positions), out =
  // wte[tokens].
  virtual void embedding_fwd(void* out, const int32_t* tokens, const void* wte, const void* wpe,
                             int64_t B, int64_t T, int64_t C, int64_t V, int64_t maxT) = 0;
  // dwte (>= V, C) += scatter(dout), dwpe (maxT, C) rows [0, T) += sum over B (dwpe null: none);
  // grad dtype.
  virtual void embedding_bwd(void* dwte, void* dwpe, const void* dout, const int32_t* tokens,
                             int64_t B, int64_t T, int64_t C, int64_t V, int64_t maxT) = 0;
  // y (N, C) = LayerNorm(x) * gamma + beta; mean, rstd (N) stat dtype.
  virtual void layernorm_fwd(void* y, void* mean, void* rstd, const void* x, const void* gamma,
                             const void* beta, int64_t N, int64_t C, double eps) = 0;
  // residual (N, C) = a + b; y = LayerNorm(residual).
  virtual void residual_layernorm_fwd(void* residual, void* y, void* mean, void* rstd,
                                      const void* a, const void* b, const void* gamma,
                                      const void* beta, int64_t N, int64_t C, double eps) = 0;
  // dx (N, C) += d/dx; dgamma, dbeta (C) += (grad dtype).
  virtual void layernorm_bwd(void* dx, void* dgamma, void* dbeta, const void* dy, const void* x,
                             const void* gamma, const void* mean, const void* rstd, int64_t N,
                             int64_t C) = 0;
  // RMSNorm: y (N, C) = x * rstd * gamma, rstd (N) stat dtype = 1 / sqrt(mean(x^2) + eps).
  virtual void rmsnorm_fwd(void* y, void* rstd, const void* x, const void* gamma, int64_t N,
                           int64_t C, double eps) = 0;
  // residual (N, C) = a + b (rounded to the compute dtype); y = RMSNorm(residual). residual may
  // be a or b.
  virtual void residual_rmsnorm_fwd(void* residual, void* y, void* rstd, const void* a,
                                    const void* b, const void* gamma, int64_t N, int64_t C,
                                    double eps) = 0;
  // dx (N, C) += d/dx; dgamma (C) += (grad dtype).
  virtual void rmsnorm_bwd(void* dx, void* dgamma, const void* dy, const void* x, const void* gamma,
                           const void* rstd, int64_t N, int64_t C) = 0;
  // Rotary embedding in place on the q and k heads of a packed qkv (B, T, NH + 2 NKV, HD)
  // (Hugging Face's rotate-half; position of row t: pos_offset + t); v is left as it is. The
  // backward applies the transposed rotation to a gradient of the same layout.
  virtual void rope_fwd(void* qkv, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                        int64_t pos_offset, const RopeConfig& rope) = 0;
  virtual void rope_bwd(void* dqkv, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                        int64_t pos_offset, const RopeConfig& rope) = 0;
  // SwiGLU over gu (N, 2I) = [gate | up]: out (N, I) = silu(gate) * up.
  virtual void swiglu_fwd(void* out, const void* gu, int64_t N, int64_t I) = 0;
  // dgu (N, 2I) = [dout * up * silu'(gate) | dout * silu(gate)] (overwrites; dgu may be gu).
  virtual void swiglu_bwd(void* dgu, const void* dout, const void* gu, int64_t N, int64_t I) = 0;
  // dst[r, 0:cols) = src[r, 0:cols) for r < rows; strides in elements of the compute dtype (the
  // generator moving new k/v rows from a qkv projection into its cache).
  virtual void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride,
                         int64_t rows, int64_t cols) = 0;
  // out (M, N) = in (M, K) @ weight (N, K)^T + bias (N, nullable). With pre_gelu non-null,
  // pre_gelu (M, N) receives that and out = gelu(pre_gelu) (tanh approximation).
  virtual void linear_fwd(void* out, void* pre_gelu, const void* in, const void* weight,
                          const void* bias, int64_t M, int64_t K, int64_t N) = 0;
  // d_in (M, K) = d_out (M, N) @ weight (N, K) (skipped when d_in is null), times gelu'(dgelu_pre)
  // elementwise when dgelu_pre (M, K) is non-null; dweight (N, K) += d_out^T @ in;
  // dbias (N) += colsum(d_out) when non-null. dweight, dbias: grad dtype.
  virtual void linear_bwd(void* d_in, void* dweight, void* dbias, const void* d_out, const void* in,
                          const void* weight, const void* dgelu_pre, int64_t M, int64_t K,
                          int64_t N) = 0;
  // y (n) = gelu(x) (recomputing a GELU output the forward did not keep).
  virtual void gelu_fwd(void* y, const void* x, int64_t n) = 0;
  // Self-attention over packed qkv (B, T, NH + 2 NKV, HD) (q heads, k heads, v heads; query
  // head h reads k/v head h / (NH / NKV)): out (B, T, NH, HD), lse (B, NH, T) stat.
  virtual void attention_fwd(void* out, void* lse, const void* qkv, int64_t B, int64_t T,
                             int64_t NH, int64_t NKV, int64_t HD, bool causal) = 0;
  // dqkv (B, T, NH + 2 NKV, HD) = gradient of the attention given dout (B, T, NH, HD)
  // (overwrites).
  virtual void attention_bwd(void* dqkv, const void* dout, const void* qkv, const void* out,
                             const void* lse, int64_t B, int64_t T, int64_t NH, int64_t NKV,
                             int64_t HD, bool causal) = 0;
  // Attention of Tq new queries against a cache (generation, batch 1): q (Tq rows of q_stride
  // elements, the NH query heads first in each row); kv_cache (maxT, 2, NKV, HD) holds the keys
  // and values of rows [0, past + Tq), the new ones last; query i sees keys j <= past + i.
  // out (Tq, NH, HD); lse (NH, Tq) stat scratch.
  virtual void attention_cached(void* out, void* lse, const void* q, int64_t q_stride,
                                const void* kv_cache, int64_t past, int64_t Tq, int64_t NH,
                                int64_t NKV, int64_t HD) = 0;
  // Fused softmax cross-entropy over logits (N, Vp) (first V columns real), in place:
  // losses (N) stat = logsumexp - logit[target] (0 where target == ignore_index);
  // logits become dlogits = (softmax - onehot) * dloss (0 in padding and ignored rows).
  virtual void classifier(void* losses, void* logits, const int32_t* targets, int64_t N, int64_t V,
                          int64_t Vp, double dloss, int32_t ignore_index) = 0;
  // *sum += scale * sum(losses (N) stat dtype), deterministic; `sum` is one double of backend
  // memory (a slot of the statistics block).
  virtual void accumulate_loss(double* sum, const void* losses, int64_t N, double scale) = 0;
  // Whether ops that can trade bitwise repeatability for speed (the attention backward) must
  // repeat bit for bit; on by default. The cpu backend is deterministic either way.
  virtual void set_deterministic(bool deterministic) { (void)deterministic; }
  // ---- CUDA graphs ------------------------------------------------------------------------------
  // Whether begin_capture / end_capture / replay work (cuda); the cpu backend has no graphs.
  virtual bool supports_capture() const { return false; }
  // Records the ops issued until end_capture() instead of running them; end_capture() returns a
  // handle for replay(), which runs the recorded ops again (same pointers, same scalars).
  // release_graph() frees one. Throws kiln::Error(not_supported) where unsupported.
  virtual void begin_capture();
  virtual int end_capture();
  virtual void replay(int graph);
  virtual void release_graph(int graph) noexcept;

  // Global norm, non-finite check, clipping, AdamW on every tensor (weight decay where the
  // layout says), and the master -> compute copy: see OptimizerUpdate.
  virtual void optimizer_update(const OptimizerUpdate& update) = 0;
  // stats[kStatGradNorm] (double) = the sum of the squares of grads[shard_begin, shard_end): a
  // shard's share of the global norm, which the schedule sums over the ranks before the update.
  virtual void grad_sum_squares(const OptimizerUpdate& update) = 0;
};

// A backend of `kind` (cuda: on device `ordinal`). Throws kiln::Error: no_device when cuda is
// asked for and no device is usable, not_supported for a kind this build lacks.
KILN_API std::shared_ptr<Backend> make_backend(BackendKind kind, int ordinal = 0);
// The CPU backend computing in fp64 (gradient checks against finite differences) or fp32;
// `threads` 0 means the hardware's concurrency.
KILN_API std::shared_ptr<Backend> make_cpu_backend(DType dtype = DType::f32, int threads = 0);

// The kind a program's backend option names: "cpu", "cuda", or "auto": cuda when a CUDA device
// is usable, else cpu, with the reason (the CUDA runtime's "no CUDA device: ...") in
// `why_not_cuda` when given. Throws kiln::Error(invalid_argument) for another name.
KILN_API BackendKind resolve_backend_kind(std::string_view name,
                                          std::string* why_not_cuda = nullptr);
// A backend of the kind `name` resolves to: cuda on device `ordinal`, or the fp32 cpu backend
// with `threads` threads (0: the hardware's concurrency). `why_not_cuda` as above.
KILN_API std::shared_ptr<Backend> make_backend(std::string_view name, int ordinal, int threads,
                                               std::string* why_not_cuda = nullptr);

}  // namespace kiln
