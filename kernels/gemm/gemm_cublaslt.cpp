// The cuBLASLt backend. kiln's row-major D (M, N) = op(A) op(B) is cuBLASLt's column-major
// D^T (N, M) = op(B)^T op(A)^T: cuBLASLt's "A" is kiln's B and its "B" is kiln's A, with the
// transposes unchanged, m and n swapped, and every leading dimension kept. Consequences:
//  - kiln's bias (N, one per column of D) is cuBLASLt's per-row bias of D^T (EPILOGUE_BIAS);
//  - kiln's bias_grad (M) = sum_k op(A)[m, k] reduces cuBLASLt's B over k: EPILOGUE_BGRADB.
//    cuBLASLt overwrites the vector; kiln's contract accumulates, so cuBLASLt writes into a
//    scratch at the end of the workspace and a small kernel adds it (bias_grad_accumulate).
//    Where cuBLASLt has no BGRADB algorithm (its documentation leaves the supported layouts and
//    output types open), kiln runs the plain GEMM and sums op(A)'s rows with its own
//    deterministic kernels (op_a_row_sums_accumulate).
//  - pre_gelu (M, N) row-major is cuBLASLt's column-major aux matrix with ld = ld_pre_gelu.
//
// GELU: cuBLASLt documents CUBLASLT_EPILOGUE_GELU only as "GELU" without saying which. kiln
// assumes the tanh approximation (GPT-2's), which is what llm.c and TransformerEngine rely on
// when they fuse it; tests/gpu/gemm_test.cpp compares cuBLASLt's BIAS_GELU and DGELU against
// the tanh reference, which confirms or refutes this on the device.
//
// Descriptors, layouts and the heuristic's algorithm are built once per problem shape (and
// pointer alignment class, which the heuristic depends on) and cached in the context.
#include <cublasLt.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <unordered_map>

#include "errors/check.hpp"
#include "errors/check_libs.hpp"
#include "kernels/common/device.hpp"
#include "kernels/gemm/gemm.hpp"

namespace kiln::impl {
namespace {

// The largest power of two (at most 16) dividing the address: the alignment class the
// heuristic sees.
std::uint8_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<std::uintptr_t>(p);
  if (!v) return 16;
  std::uint8_t a = 1;
  while (a < 16 && v % (a * 2) == 0)
    a *= 2;
  return a;
}

struct PlanKey {
  std::int64_t m, n, k, lda, ldb, ldc, ldd, ldg;
  std::uint8_t trans_a, trans_b, cd_f32, has_c, has_bias, epilogue;
  std::uint8_t align_a, align_b, align_c, align_d, align_bias, align_aux;
  std::uint8_t padding[4];  // zeroed: the key is hashed and compared bytewise
  bool operator==(const PlanKey& o) const { return std::memcmp(this, &o, sizeof(*this)) == 0; }
};
static_assert(sizeof(PlanKey) == 8 * 8 + 16, "PlanKey has no padding (compared with memcmp)");

struct PlanKeyHash {
  std::size_t operator()(const PlanKey& k) const {
    const auto* bytes = reinterpret_cast<const unsigned char*>(&k);
    std::size_t h = 1469598103934665603ull;  // FNV-1a
    for (std::size_t i = 0; i < sizeof(k); ++i)
      h = (h ^ bytes[i]) * 1099511628211ull;
    return h;
  }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
  cublasStatus_t heuristic_status = CUBLAS_STATUS_SUCCESS;  // why not found, when not
  std::size_t workspace_bytes = 0;  // what cuBLASLt may use (the scratch excluded)

  void destroy() noexcept {
    if (desc) cublasLtMatmulDescDestroy(desc);
    for (auto* l : {a, b, c, d})
      if (l) cublasLtMatrixLayoutDestroy(l);
    desc = nullptr;
    a = b = c = d = nullptr;
  }
};

PlanKey key_of(const GemmProblem& p) {
  PlanKey k;
  std::memset(&k, 0, sizeof(k));
  k.m = p.m;
  k.n = p.n;
  k.k = p.k;
  k.lda = p.lda;
  k.ldb = p.ldb;
  k.ldc = p.c ? p.ldc : 0;
  k.ldd = p.ldd;
  k.ldg = (p.flags.gelu || p.flags.dgelu) ? p.ld_pre_gelu : 0;
  k.trans_a = p.trans_a;
  k.trans_b = p.trans_b;
  k.cd_f32 = p.cd_f32;
  k.has_c = p.c != nullptr;
  k.has_bias = p.flags.bias;
  k.epilogue = static_cast<std::uint8_t>(p.epilogue);
  k.align_a = alignment_of(p.a);
  k.align_b = alignment_of(p.b);
  k.align_c = alignment_of(p.c ? p.c : p.d);
  k.align_d = alignment_of(p.d);
  k.align_bias = alignment_of(p.bias);
  k.align_aux = alignment_of(p.flags.gelu ? static_cast<const void*>(p.pre_gelu_out) : p.pre_gelu);
  return k;
}

// The tail of the workspace holding cuBLASLt's bias gradient before kiln adds it.
std::size_t scratch_bytes(const GemmProblem& p) {
  if (!p.flags.bias_grad) return 0;
  return (static_cast<std::size_t>(p.m) * p.cd_bytes() + 255) / 256 * 256;
}

cublasLtEpilogue_t epilogue_of(const GemmProblem& p) {
  switch (p.epilogue) {
    case KILN_GEMM_EPILOGUE_BIAS:
      return CUBLASLT_EPILOGUE_BIAS;
    case KILN_GEMM_EPILOGUE_BIAS_GELU:
      return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    case KILN_GEMM_EPILOGUE_RESIDUAL:
      return p.flags.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    case KILN_GEMM_EPILOGUE_DGELU:
      return CUBLASLT_EPILOGUE_DGELU;
    case KILN_GEMM_EPILOGUE_BIAS_GRAD:
      return CUBLASLT_EPILOGUE_BGRADB;
    default:
      return CUBLASLT_EPILOGUE_DEFAULT;
  }
}

template <typename V>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const V& value) {
  KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

// The pointers of this call, set on the cached descriptor before the heuristic (the first time)
// and before every launch.
void set_pointers(cublasLtMatmulDesc_t desc, const GemmProblem& p, void* scratch) {
  if (p.flags.bias) set_desc(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, p.bias);
  if (p.flags.bias_grad) set_desc(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, scratch);
  if (p.flags.gelu) set_desc(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, p.pre_gelu_out);
  if (p.flags.dgelu) set_desc(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, p.pre_gelu);
}

void set_pref(cublasLtMatmulPreference_t pref, const GemmProblem& p, std::size_t workspace_bytes) {
  KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof(workspace_bytes)));
  // cuBLASLt's A is kiln's B and vice versa.
  const std::uint32_t align[4] = {alignment_of(p.b), alignment_of(p.a),
                                  alignment_of(p.c ? p.c : p.d), alignment_of(p.d)};
  const cublasLtMatmulPreferenceAttributes_t attrs[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    KILN_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, attrs[i], &align[i], sizeof(align[i])));
}

void build_plan(Plan& plan, cublasLtHandle_t handle, std::size_t workspace_bytes,
                const GemmProblem& p, void* scratch) {
  const cudaDataType_t cd = p.cd_f32 ? CUDA_R_32F : CUDA_R_16BF;
  KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt A = kiln B
  const cublasOperation_t op_b = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt B = kiln A
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, op_b);
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<std::uint32_t>(epilogue_of(p)));
  if (p.flags.gelu || p.flags.dgelu) {
    set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
             static_cast<std::int64_t>(p.ld_pre_gelu));
  }
  set_pointers(plan.desc, p, scratch);

  // Column-major shapes (rows, cols) of cuBLASLt's operands.
  const std::uint64_t m = p.n, n = p.m, k = p.k;
  KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_16BF, p.trans_b ? k : m,
                                               p.trans_b ? m : k, p.ldb));
  KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_16BF, p.trans_a ? n : k,
                                               p.trans_a ? k : n, p.lda));
  KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, cd, m, n, p.c ? p.ldc : p.ldd));
  KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.d, cd, m, n, p.ldd));

  plan.workspace_bytes =
      workspace_bytes > scratch_bytes(p) ? (workspace_bytes - scratch_bytes(p)) / 256 * 256 : 0;
  cublasLtMatmulPreference_t pref = nullptr;
  KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  try {
    set_pref(pref, p, plan.workspace_bytes);
    cublasLtMatmulHeuristicResult_t result{};
    int count = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
        handle, plan.desc, plan.a, plan.b, plan.c, plan.d, pref, 1, &result, &count);
    // cuBLASLt answers a combination it lacks with NOT_SUPPORTED, or for some epilogue and layout
    // combinations with INVALID_VALUE: both mean "no algorithm" (AUTO then takes another
    // backend; a forced cuBLASLt reports not_supported with this status).
    plan.heuristic_status = st;
    plan.found = st == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (st == CUBLAS_STATUS_SUCCESS && count > 0 && result.state != CUBLAS_STATUS_SUCCESS)
      plan.heuristic_status = result.state;
    if (st == CUBLAS_STATUS_SUCCESS && count == 0)
      plan.heuristic_status = CUBLAS_STATUS_NOT_SUPPORTED;
    if (plan.found) plan.algo = result.algo;
  } catch (...) {
    cublasLtMatmulPreferenceDestroy(pref);
    throw;
  }
  cublasLtMatmulPreferenceDestroy(pref);
}

}  // namespace

class CublasLtCache {
 public:
  ~CublasLtCache() {
    for (auto& [key, plan] : plans_)
      plan.destroy();
  }
  Plan& get(cublasLtHandle_t handle, std::size_t workspace_bytes, const GemmProblem& p,
            void* scratch) {
    const PlanKey key = key_of(p);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    Plan plan;
    try {
      build_plan(plan, handle, workspace_bytes, p, scratch);
    } catch (...) {
      plan.destroy();
      throw;
    }
    return plans_.emplace(key, plan).first->second;
  }

 private:
  std::unordered_map<PlanKey, Plan, PlanKeyHash> plans_;
};

CublasLtCache* cublaslt_cache_create() {
  return new CublasLtCache();
}
void cublaslt_cache_destroy(CublasLtCache* cache) noexcept {
  delete cache;
}

namespace {
// cuBLASLt documents the GELU aux matrix's leading dimension as "divisible by 8".
bool aux_ld_ok(const GemmProblem& p) {
  return !(p.flags.gelu || p.flags.dgelu) || p.ld_pre_gelu % 8 == 0;
}

// The scratch at the end of the workspace (256-byte aligned), where cuBLASLt writes the bias
// gradient before kiln adds it.
void* scratch_of(void* workspace, std::size_t workspace_bytes, const GemmProblem& p) {
  const std::size_t scratch = scratch_bytes(p);
  return scratch ? static_cast<char*>(workspace) + (workspace_bytes - scratch) / 256 * 256
                 : nullptr;
}

// The problem without its bias gradient: what cuBLASLt runs when it has no BGRADB algorithm
// (kiln then sums op(A)'s rows itself).
GemmProblem without_bias_grad(const GemmProblem& p) {
  GemmProblem q = p;
  q.epilogue = KILN_GEMM_EPILOGUE_NONE;
  q.flags.bias_grad = false;
  q.bias_grad = nullptr;
  return q;
}

void matmul(cublasLtHandle_t handle, Plan& plan, const GemmProblem& p, void* workspace,
            void* scratch, cudaStream_t stream) {
  set_pointers(plan.desc, p, scratch);
  KILN_CUBLAS_CHECK(cublasLtMatmul(handle, plan.desc, &p.alpha, p.b, plan.a, p.a, plan.b, &p.beta,
                                   p.c ? p.c : p.d, plan.c, p.d, plan.d, &plan.algo, workspace,
                                   plan.workspace_bytes, stream));
}

}  // namespace

bool cublaslt_supports(CublasLtCache& cache, void* handle, void* workspace,
                       std::size_t workspace_bytes, const GemmProblem& p) {
  const std::size_t scratch = scratch_bytes(p);
  if (!handle || !aux_ld_ok(p)) return false;
  auto* h = static_cast<cublasLtHandle_t>(handle);
  if ((!scratch || workspace_bytes >= scratch + 256) &&
      cache.get(h, workspace_bytes, p, scratch_of(workspace, workspace_bytes, p)).found)
    return true;
  return p.flags.bias_grad && cache.get(h, workspace_bytes, without_bias_grad(p), nullptr).found;
}

void gemm_cublaslt(CublasLtCache& cache, void* handle, void* workspace, std::size_t workspace_bytes,
                   const GemmProblem& p, cudaStream_t stream) {
  KILN_CHECK(handle != nullptr, Status::not_supported,
             "kiln_gemm: the cuBLASLt backend needs a context created with a cuBLASLt handle");
  KILN_CHECK(aux_ld_ok(p), Status::not_supported, "kiln_gemm: cuBLASLt needs ld_pre_gelu (",
             p.ld_pre_gelu, ") to be a multiple of 8");
  KILN_CHECK_ARG(workspace != nullptr || workspace_bytes == 0,
                 "kiln_gemm: the context's workspace is null but its size is ", workspace_bytes);
  auto* h = static_cast<cublasLtHandle_t>(handle);
  const std::size_t scratch = scratch_bytes(p);
  if (!scratch || workspace_bytes >= scratch + 256) {
    void* scratch_ptr = scratch_of(workspace, workspace_bytes, p);
    Plan& plan = cache.get(h, workspace_bytes, p, scratch_ptr);
    if (plan.found) {
      matmul(h, plan, p, workspace, scratch_ptr, stream);
      if (p.flags.bias_grad) bias_grad_accumulate(p.bias_grad, scratch_ptr, p.m, p.cd_f32, stream);
      return;
    }
    KILN_CHECK(p.flags.bias_grad, Status::not_supported,
               "kiln_gemm: cuBLASLt has no algorithm for M ", p.m, " N ", p.n, " K ", p.k,
               " trans_a ", p.trans_a, " trans_b ", p.trans_b, " epilogue ",
               kiln_gemm_epilogue_name(p.epilogue), " with ", p.cd_f32 ? "fp32" : "bf16",
               " C/D (heuristic: ", cublasLtGetStatusString(plan.heuristic_status), ")");
  }
  // No BGRADB algorithm for this layout or output type (or no room for its scratch): the plain
  // GEMM, then kiln's deterministic row sums of op(A), which may use the whole workspace once
  // the GEMM (earlier on the same stream) is done with it.
  const GemmProblem plain = without_bias_grad(p);
  Plan& plan = cache.get(h, workspace_bytes, plain, nullptr);
  KILN_CHECK(plan.found, Status::not_supported, "kiln_gemm: cuBLASLt has no algorithm for M ", p.m,
             " N ", p.n, " K ", p.k, " trans_a ", p.trans_a, " trans_b ", p.trans_b, " with ",
             p.cd_f32 ? "fp32" : "bf16",
             " C/D (heuristic: ", cublasLtGetStatusString(plan.heuristic_status), ")");
  matmul(h, plan, plain, workspace, nullptr, stream);
  op_a_row_sums_accumulate(p.bias_grad, p.cd_f32, p.a, p.trans_a, p.lda, p.m, p.k, workspace,
                           workspace_bytes, current_device_facts().multiprocessors, stream);
}

}  // namespace kiln::impl
