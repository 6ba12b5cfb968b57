// kiln_gemm: argument checks, the backend dispatcher (forced, measured table, rule), the tuning
// pass and the table's file format, and the C ABI.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/common/capi.hpp"
#include "kernels/common/check.hpp"
#include "kernels/common/device.hpp"
#include "kernels/gemm/gemm.hpp"

namespace kiln::impl {

// The problem as the table of measured winners knows it: the shape class, not the pointers.
using TableKey = std::tuple<std::int64_t, std::int64_t, std::int64_t, int, int, int, int, int>;
struct TableEntry {
  GemmBackend backend;
  std::string device;  // the device it was measured on
};

}  // namespace kiln::impl

// The context: what kiln_gemm_context_create was given, the cuBLASLt plans, the table.
struct kiln_gemm_context {
  void* cublaslt = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  std::mutex mutex;  // guards the cache and the table (and the descriptors' pointer attributes)
  kiln::impl::CublasLtCache* cache = nullptr;
  std::map<kiln::impl::TableKey, kiln::impl::TableEntry> table;
  bool environment_table_read = false;  // KILN_GEMM_TABLE (see load_environment_table)
};

namespace kiln::impl {
namespace {

constexpr const char* kOp = "kiln_gemm";

TableKey table_key(const GemmProblem& p) {
  return {p.m,           p.n, p.k, p.trans_a, p.trans_b, p.cd_f32, static_cast<int>(p.epilogue),
          p.c != nullptr};
}

GemmBackend from_public(kiln_gemm_backend_t b) {
  switch (b) {
    case KILN_GEMM_BACKEND_SM90:
      return GemmBackend::sm90;
    case KILN_GEMM_BACKEND_SM80:
      return GemmBackend::sm80;
    default:
      return GemmBackend::cublaslt;
  }
}
kiln_gemm_backend_t to_public(GemmBackend b) {
  switch (b) {
    case GemmBackend::sm90:
      return KILN_GEMM_BACKEND_SM90;
    case GemmBackend::sm80:
      return KILN_GEMM_BACKEND_SM80;
    default:
      return KILN_GEMM_BACKEND_CUBLASLT;
  }
}

std::string current_device_name() {
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  KILN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

// Why the hand-written kernels' 16-byte accesses (TMA boxes, cp.async) cannot take `p`.
std::string hand_written_rejects(const GemmProblem& p, const char* name) {
  auto row_bytes_ok = [](std::int64_t ld, std::size_t elem) { return (ld * elem) % 16 == 0; };
  auto aligned = [](const void* ptr, std::size_t bytes) { return is_aligned(ptr, bytes); };
  const std::size_t cd = p.cd_bytes();
  std::string why;
  auto fail = [&](const std::string& s) {
    if (why.empty()) why = std::string(name) + " needs " + s;
  };
  if (!row_bytes_ok(p.lda, 2)) fail(cat("lda * 2 bytes a multiple of 16 (lda = ", p.lda, ")"));
  if (!row_bytes_ok(p.ldb, 2)) fail(cat("ldb * 2 bytes a multiple of 16 (ldb = ", p.ldb, ")"));
  if (!row_bytes_ok(p.ldd, cd))
    fail(cat("ldd * ", cd, " bytes a multiple of 16 (ldd = ", p.ldd, ")"));
  if (p.c && !row_bytes_ok(p.ldc, cd))
    fail(cat("ldc * ", cd, " bytes a multiple of 16 (ldc = ", p.ldc, ")"));
  if ((p.flags.gelu || p.flags.dgelu) && !row_bytes_ok(p.ld_pre_gelu, 2))
    fail(cat("ld_pre_gelu * 2 bytes a multiple of 16 (ld_pre_gelu = ", p.ld_pre_gelu, ")"));
  if (!aligned(p.a, 16)) fail("a 16-byte aligned");
  if (!aligned(p.b, 16)) fail("b 16-byte aligned");
  if (!aligned(p.d, 16)) fail("d 16-byte aligned");
  if (p.c && !aligned(p.c, 16)) fail("c 16-byte aligned");
  if (p.flags.gelu && !aligned(p.pre_gelu_out, 16)) fail("pre_gelu_out 16-byte aligned");
  if (p.flags.dgelu && !aligned(p.pre_gelu, 16)) fail("pre_gelu 16-byte aligned");
  if (p.flags.bias && !aligned(p.bias, 4)) fail("bias 4-byte aligned");
  return why;
}

}  // namespace

const char* backend_name(GemmBackend b) {
  return kiln_gemm_backend_name(to_public(b));
}

std::string sm90_rejects_static(const GemmProblem& p) {
  return hand_written_rejects(p, "the sm90 backend");
}
std::string sm80_rejects_static(const GemmProblem& p) {
  return hand_written_rejects(p, "the sm80 backend");
}

namespace {

// Every check that needs no device, in the order a caller would fix them.
GemmProblem check_gemm_params(const kiln_gemm_params_t* params) {
  KILN_CHECK_ARG(params != nullptr, kOp, ": params is null");
  const kiln_gemm_params_t& q = *params;
  constexpr std::int64_t kMax = std::numeric_limits<std::int32_t>::max();
  KILN_CHECK_ARG(q.m >= 1 && q.n >= 1 && q.k >= 1, kOp, ": M, N, K must be >= 1 (got ", q.m, ", ",
                 q.n, ", ", q.k, ")");
  KILN_CHECK_ARG(q.m <= kMax && q.n <= kMax && q.k <= kMax, kOp, ": M, N, K must be < 2^31 (got ",
                 q.m, ", ", q.n, ", ", q.k, ")");
  KILN_CHECK_ARG(q.trans_a == 0 || q.trans_a == 1, kOp, ": trans_a must be 0 or 1 (got ", q.trans_a,
                 ")");
  KILN_CHECK_ARG(q.trans_b == 0 || q.trans_b == 1, kOp, ": trans_b must be 0 or 1 (got ", q.trans_b,
                 ")");
  KILN_CHECK_ARG(q.cd_dtype == KILN_DTYPE_BF16 || q.cd_dtype == KILN_DTYPE_F32, kOp,
                 ": cd_dtype must be KILN_DTYPE_BF16 or KILN_DTYPE_F32 (got ",
                 static_cast<int>(q.cd_dtype), ")");
  KILN_CHECK_ARG(
      q.epilogue >= KILN_GEMM_EPILOGUE_NONE && q.epilogue <= KILN_GEMM_EPILOGUE_BIAS_GRAD, kOp,
      ": unknown epilogue ", static_cast<int>(q.epilogue));
  KILN_CHECK_ARG(q.backend >= KILN_GEMM_BACKEND_AUTO && q.backend <= KILN_GEMM_BACKEND_SM80, kOp,
                 ": unknown backend ", static_cast<int>(q.backend));
  KILN_CHECK_ARG(std::isfinite(q.alpha) && std::isfinite(q.beta), kOp,
                 ": alpha and beta must be finite (got ", q.alpha, ", ", q.beta, ")");

  GemmProblem p;
  p.m = q.m;
  p.n = q.n;
  p.k = q.k;
  p.trans_a = q.trans_a;
  p.trans_b = q.trans_b;
  p.cd_f32 = q.cd_dtype == KILN_DTYPE_F32;
  p.alpha = q.alpha;
  p.beta = q.beta;
  p.epilogue = q.epilogue;
  const std::size_t cd = p.cd_bytes();

  KILN_CHECK_PTR(q.a, 2, kOp);
  KILN_CHECK_PTR(q.b, 2, kOp);
  KILN_CHECK_PTR(q.d, cd, kOp);
  p.a = q.a;
  p.b = q.b;
  p.d = q.d;
  p.lda = q.lda ? q.lda : (p.trans_a ? p.m : p.k);
  p.ldb = q.ldb ? q.ldb : (p.trans_b ? p.k : p.n);
  p.ldd = q.ldd ? q.ldd : p.n;
  KILN_CHECK_ARG(p.lda >= (p.trans_a ? p.m : p.k), kOp, ": lda ", p.lda,
                 " is shorter than a row of A (", p.trans_a ? p.m : p.k, ")");
  KILN_CHECK_ARG(p.ldb >= (p.trans_b ? p.k : p.n), kOp, ": ldb ", p.ldb,
                 " is shorter than a row of B (", p.trans_b ? p.k : p.n, ")");
  KILN_CHECK_ARG(p.ldd >= p.n, kOp, ": ldd ", p.ldd, " is shorter than a row of D (", p.n, ")");

  if (q.beta != 0) {
    KILN_CHECK_ARG(q.c != nullptr, kOp, ": beta is ", q.beta, " but c is null");
    KILN_CHECK_PTR(q.c, cd, kOp);
    p.c = q.c;
    p.ldc = q.ldc ? q.ldc : p.n;
    KILN_CHECK_ARG(p.ldc >= p.n, kOp, ": ldc ", p.ldc, " is shorter than a row of C (", p.n, ")");
    KILN_CHECK_ARG(p.c != p.d || p.ldc == p.ldd, kOp, ": c is d (in-place accumulation) but ldc ",
                   p.ldc, " != ldd ", p.ldd);
  }

  const bool needs_bf16 =
      q.epilogue == KILN_GEMM_EPILOGUE_BIAS || q.epilogue == KILN_GEMM_EPILOGUE_BIAS_GELU ||
      q.epilogue == KILN_GEMM_EPILOGUE_RESIDUAL || q.epilogue == KILN_GEMM_EPILOGUE_DGELU;
  KILN_CHECK_ARG(!needs_bf16 || !p.cd_f32, kOp, ": epilogue ", kiln_gemm_epilogue_name(q.epilogue),
                 " needs bf16 C/D (cd_dtype = f32 given)");
  switch (q.epilogue) {
    case KILN_GEMM_EPILOGUE_BIAS:
    case KILN_GEMM_EPILOGUE_BIAS_GELU:
      KILN_CHECK_PTR(q.bias, 2, kOp);
      break;
    case KILN_GEMM_EPILOGUE_RESIDUAL:
      KILN_CHECK_ARG(p.c != nullptr, kOp,
                     ": epilogue residual needs the residual as c with beta != 0");
      if (q.bias) KILN_CHECK_PTR(q.bias, 2, kOp);
      break;
    case KILN_GEMM_EPILOGUE_BIAS_GRAD:
      KILN_CHECK_PTR(q.bias_grad, cd, kOp);
      KILN_CHECK_ARG(q.alpha == 1.0f, kOp, ": epilogue bias_grad needs alpha = 1 (got ", q.alpha,
                     "): the bias gradient is the unscaled sum");
      p.flags.bias_grad = true;
      p.bias_grad = q.bias_grad;
      break;
    default:
      break;
  }
  if (q.epilogue == KILN_GEMM_EPILOGUE_BIAS || q.epilogue == KILN_GEMM_EPILOGUE_BIAS_GELU ||
      (q.epilogue == KILN_GEMM_EPILOGUE_RESIDUAL && q.bias)) {
    p.flags.bias = true;
    p.bias = q.bias;
  }
  if (q.epilogue == KILN_GEMM_EPILOGUE_BIAS_GELU || q.epilogue == KILN_GEMM_EPILOGUE_DGELU) {
    p.ld_pre_gelu = q.ld_pre_gelu ? q.ld_pre_gelu : p.n;
    KILN_CHECK_ARG(p.ld_pre_gelu >= p.n, kOp, ": ld_pre_gelu ", p.ld_pre_gelu,
                   " is shorter than a row (", p.n, ")");
    if (q.epilogue == KILN_GEMM_EPILOGUE_BIAS_GELU) {
      KILN_CHECK_PTR(q.pre_gelu_out, 2, kOp);
      p.flags.gelu = true;
      p.pre_gelu_out = q.pre_gelu_out;
    } else {
      KILN_CHECK_PTR(q.pre_gelu, 2, kOp);
      p.flags.dgelu = true;
      p.pre_gelu = q.pre_gelu;
    }
  }

  if (q.backend == KILN_GEMM_BACKEND_SM90) {
    const std::string why = sm90_rejects_static(p);
    KILN_CHECK_ARG(why.empty(), kOp, ": ", why);
  } else if (q.backend == KILN_GEMM_BACKEND_SM80) {
    const std::string why = sm80_rejects_static(p);
    KILN_CHECK_ARG(why.empty(), kOp, ": ", why);
  }
  return p;
}

bool backend_available(GemmBackend b) {
  switch (b) {
    case GemmBackend::sm90:
      return hopper_kernels_available();
    case GemmBackend::sm80:
      return current_device_facts().compute_major >= 8;
    case GemmBackend::cublaslt:
      current_device_facts();  // throws no_device without a GPU
      return true;
  }
  return false;
}

bool accepts(kiln_gemm_context& ctx, GemmBackend b, const GemmProblem& p) {
  switch (b) {
    case GemmBackend::sm90:
      return sm90_rejects_static(p).empty() && backend_available(b);
    case GemmBackend::sm80:
      return sm80_rejects_static(p).empty() && backend_available(b);
    case GemmBackend::cublaslt:
      return ctx.cublaslt != nullptr && backend_available(b) &&
             cublaslt_supports(*ctx.cache, ctx.cublaslt, ctx.workspace, ctx.workspace_bytes, p);
  }
  return false;
}

void load_environment_table(kiln_gemm_context& ctx);

// Forced: that backend or an error. AUTO: the table's measured winner, else cuBLASLt (the
// measured-safe default), else the hand-written kernels.
GemmBackend select(kiln_gemm_context& ctx, const GemmProblem& p, kiln_gemm_backend_t requested) {
  if (requested != KILN_GEMM_BACKEND_AUTO) {
    const GemmBackend b = from_public(requested);
    if (b == GemmBackend::cublaslt) {
      KILN_CHECK(ctx.cublaslt != nullptr, Status::not_supported, kOp,
                 ": the cuBLASLt backend needs a context created with a cuBLASLt handle");
      backend_available(b);
    } else {
      KILN_CHECK(backend_available(b), Status::not_supported, kOp, ": the ", backend_name(b),
                 " backend is not available on this device or in this build",
                 b == GemmBackend::sm90 ? " (it needs compute capability 9.0 and KILN_SM90A)"
                                        : " (it needs compute capability 8.0 or newer)");
    }
    return b;
  }
  load_environment_table(ctx);
  if (auto it = ctx.table.find(table_key(p)); it != ctx.table.end())
    if (accepts(ctx, it->second.backend, p)) return it->second.backend;
  for (GemmBackend b : {GemmBackend::cublaslt, GemmBackend::sm90, GemmBackend::sm80})
    if (accepts(ctx, b, p)) return b;
  throw_error(
      Status::not_supported,
      cat(kOp, ": no backend takes M ", p.m, " N ", p.n, " K ", p.k, " epilogue ",
          kiln_gemm_epilogue_name(p.epilogue), " on this device (",
          ctx.cublaslt ? "cuBLASLt has no algorithm" : "no cuBLASLt handle", "; ",
          sm90_rejects_static(p).empty() ? "sm90 unavailable" : sm90_rejects_static(p), "; ",
          sm80_rejects_static(p).empty() ? "sm80 unavailable" : sm80_rejects_static(p), ")"),
      nullptr, __FILE__, __LINE__);
}

void run(kiln_gemm_context& ctx, GemmBackend b, const GemmProblem& p, cudaStream_t stream) {
  switch (b) {
    case GemmBackend::cublaslt:
      gemm_cublaslt(*ctx.cache, ctx.cublaslt, ctx.workspace, ctx.workspace_bytes, p, stream);
      return;
    case GemmBackend::sm90:
#if defined(KILN_HAS_SM90A)
      gemm_sm90(p, current_device_facts().multiprocessors, stream);
      return;
#else
      throw_error(Status::not_supported, cat(kOp, ": this build has no sm_90a kernels"), nullptr,
                  __FILE__, __LINE__);
#endif
    case GemmBackend::sm80:
      gemm_sm80(p, stream);
      return;
  }
}

kiln_gemm_context& context_of(kiln_gemm_context_t* ctx) {
  KILN_CHECK_ARG(ctx != nullptr, kOp, ": context is null");
  return *ctx;
}

GemmBackend parse_backend(const std::string& name) {
  for (GemmBackend b : {GemmBackend::cublaslt, GemmBackend::sm90, GemmBackend::sm80})
    if (name == backend_name(b)) return b;
  throw_error(Status::data_error, cat("gemm table: unknown backend \"", name, "\""), nullptr,
              __FILE__, __LINE__);
}

int parse_epilogue(const std::string& name) {
  for (int e = KILN_GEMM_EPILOGUE_NONE; e <= KILN_GEMM_EPILOGUE_BIAS_GRAD; ++e)
    if (name == kiln_gemm_epilogue_name(static_cast<kiln_gemm_epilogue_t>(e))) return e;
  throw_error(Status::data_error, cat("gemm table: unknown epilogue \"", name, "\""), nullptr,
              __FILE__, __LINE__);
}

// The lines of a table file measured on a device named like the current one.
std::map<TableKey, TableEntry> read_table(const char* path) {
  std::ifstream in(path);
  KILN_CHECK(in.good(), kiln::Status::io_error, "kiln_gemm_table_load: cannot open ", path);
  const std::string device = current_device_name();
  std::map<TableKey, TableEntry> loaded;
  std::string text;
  int line_no = 0;
  while (std::getline(in, text)) {
    ++line_no;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const nlohmann::json j = nlohmann::json::parse(text);
      if (j.at("device").get<std::string>() != device) continue;
      const std::string cd = j.at("cd").get<std::string>();
      KILN_CHECK(cd == "bf16" || cd == "f32", kiln::Status::data_error, "unknown cd \"", cd, "\"");
      const TableKey key{j.at("m").get<std::int64_t>(),    j.at("n").get<std::int64_t>(),
                         j.at("k").get<std::int64_t>(),    j.at("trans_a").get<int>(),
                         j.at("trans_b").get<int>(),       cd == "f32",
                         parse_epilogue(j.at("epilogue")), j.at("beta_nonzero").get<bool>()};
      loaded[key] = TableEntry{parse_backend(j.at("backend").get<std::string>()), device};
    } catch (const nlohmann::json::exception& e) {
      throw_error(kiln::Status::data_error,
                  cat("kiln_gemm_table_load: ", path, " line ", line_no, ": ", e.what()), nullptr,
                  __FILE__, __LINE__);
    } catch (const kiln::Error& e) {
      throw_error(kiln::Status::data_error,
                  cat("kiln_gemm_table_load: ", path, " line ", line_no, ": ", e.message()),
                  nullptr, __FILE__, __LINE__);
    }
  }
  return loaded;
}

// KILN_GEMM_TABLE=FILE: the table AUTO starts from, read at a context's first AUTO call (not at
// creation, which touches no device). Called with the context's lock held.
void load_environment_table(kiln_gemm_context& ctx) {
  if (ctx.environment_table_read) return;
  ctx.environment_table_read = true;
  const char* path = std::getenv("KILN_GEMM_TABLE");
  if (!path || !*path) return;
  for (auto& [key, entry] : read_table(path))
    ctx.table.emplace(key, entry);  // entries set through the API win
}

}  // namespace
}  // namespace kiln::impl

using namespace kiln::impl;

extern "C" {

void kiln_gemm_params_init(kiln_gemm_params_t* p) {
  if (!p) return;
  *p = kiln_gemm_params_t{};
  p->alpha = 1.0f;
  p->beta = 0.0f;
  p->cd_dtype = KILN_DTYPE_BF16;
  p->epilogue = KILN_GEMM_EPILOGUE_NONE;
  p->backend = KILN_GEMM_BACKEND_AUTO;
}

kiln_status_t kiln_gemm_context_create(kiln_gemm_context_t** out, cublasLtContext* cublaslt,
                                       void* workspace, size_t workspace_bytes) {
  return capi_guard([&] {
    KILN_CHECK_ARG(out != nullptr, "kiln_gemm_context_create: context is null");
    *out = nullptr;
    KILN_CHECK_ARG(workspace != nullptr || workspace_bytes == 0,
                   "kiln_gemm_context_create: workspace is null but workspace_bytes is ",
                   workspace_bytes);
    KILN_CHECK_ARG(is_aligned(workspace, 256), "kiln_gemm_context_create: workspace ", workspace,
                   " is not 256-byte aligned");
    auto ctx = std::make_unique<kiln_gemm_context>();
    ctx->cublaslt = cublaslt;
    ctx->workspace = workspace;
    ctx->workspace_bytes = workspace_bytes;
    ctx->cache = cublaslt_cache_create();
    *out = ctx.release();
  });
}

void kiln_gemm_context_destroy(kiln_gemm_context_t* ctx) {
  if (!ctx) return;
  cublaslt_cache_destroy(ctx->cache);
  delete ctx;
}

kiln_status_t kiln_gemm(kiln_gemm_context_t* context, const kiln_gemm_params_t* params,
                        cudaStream_t stream) {
  return capi_guard([&] {
    kiln_gemm_context& ctx = context_of(context);
    const GemmProblem p = check_gemm_params(params);
    std::lock_guard<std::mutex> lock(ctx.mutex);
    run(ctx, select(ctx, p, params->backend), p, stream);
  });
}

kiln_status_t kiln_gemm_select(kiln_gemm_context_t* context, const kiln_gemm_params_t* params,
                               kiln_gemm_backend_t* backend) {
  return capi_guard([&] {
    KILN_CHECK_ARG(backend != nullptr, "kiln_gemm_select: backend is null");
    kiln_gemm_context& ctx = context_of(context);
    const GemmProblem p = check_gemm_params(params);
    std::lock_guard<std::mutex> lock(ctx.mutex);
    *backend = to_public(select(ctx, p, params->backend));
  });
}

kiln_status_t kiln_gemm_backend_available(kiln_gemm_backend_t backend, int* available) {
  return capi_guard([&] {
    KILN_CHECK_ARG(available != nullptr, "kiln_gemm_backend_available: available is null");
    KILN_CHECK_ARG(backend >= KILN_GEMM_BACKEND_AUTO && backend <= KILN_GEMM_BACKEND_SM80,
                   "kiln_gemm_backend_available: unknown backend ", static_cast<int>(backend));
    *available = 0;
    *available = backend == KILN_GEMM_BACKEND_AUTO ? 1 : backend_available(from_public(backend));
  });
}

const char* kiln_gemm_backend_name(kiln_gemm_backend_t backend) {
  switch (backend) {
    case KILN_GEMM_BACKEND_AUTO:
      return "auto";
    case KILN_GEMM_BACKEND_CUBLASLT:
      return "cublaslt";
    case KILN_GEMM_BACKEND_SM90:
      return "sm90";
    case KILN_GEMM_BACKEND_SM80:
      return "sm80";
  }
  return "unknown";
}

const char* kiln_gemm_epilogue_name(kiln_gemm_epilogue_t epilogue) {
  switch (epilogue) {
    case KILN_GEMM_EPILOGUE_NONE:
      return "none";
    case KILN_GEMM_EPILOGUE_BIAS:
      return "bias";
    case KILN_GEMM_EPILOGUE_BIAS_GELU:
      return "bias_gelu";
    case KILN_GEMM_EPILOGUE_RESIDUAL:
      return "residual";
    case KILN_GEMM_EPILOGUE_DGELU:
      return "dgelu";
    case KILN_GEMM_EPILOGUE_BIAS_GRAD:
      return "bias_grad";
  }
  return "unknown";
}

kiln_status_t kiln_gemm_tune(kiln_gemm_context_t* context, const kiln_gemm_params_t* params,
                             cudaStream_t stream, kiln_gemm_backend_t* chosen) {
  return capi_guard([&] {
    kiln_gemm_context& ctx = context_of(context);
    const GemmProblem p = check_gemm_params(params);
    std::lock_guard<std::mutex> lock(ctx.mutex);
    cudaEvent_t start = nullptr, stop = nullptr;
    KILN_CUDA_CHECK(cudaEventCreate(&start));
    std::unique_ptr<CUevent_st, void (*)(cudaEvent_t)> start_guard(
        start, [](cudaEvent_t e) { cudaEventDestroy(e); });
    KILN_CUDA_CHECK(cudaEventCreate(&stop));
    std::unique_ptr<CUevent_st, void (*)(cudaEvent_t)> stop_guard(
        stop, [](cudaEvent_t e) { cudaEventDestroy(e); });
    constexpr int kWarmup = 2, kReps = 7;
    double best_ms = std::numeric_limits<double>::infinity();
    GemmBackend best = GemmBackend::cublaslt;
    bool any = false;
    for (GemmBackend b : {GemmBackend::cublaslt, GemmBackend::sm90, GemmBackend::sm80}) {
      if (!accepts(ctx, b, p)) continue;
      for (int i = 0; i < kWarmup; ++i)
        run(ctx, b, p, stream);
      std::vector<float> ms;
      for (int i = 0; i < kReps; ++i) {
        KILN_CUDA_CHECK(cudaEventRecord(start, stream));
        run(ctx, b, p, stream);
        KILN_CUDA_CHECK(cudaEventRecord(stop, stream));
        KILN_CUDA_CHECK(cudaEventSynchronize(stop));
        float t = 0;
        KILN_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
        ms.push_back(t);
      }
      std::sort(ms.begin(), ms.end());
      const double median = ms[ms.size() / 2];
      if (median < best_ms) {
        best_ms = median;
        best = b;
      }
      any = true;
    }
    KILN_CHECK(any, kiln::Status::not_supported, "kiln_gemm_tune: no backend takes this problem");
    ctx.table[table_key(p)] = TableEntry{best, current_device_name()};
    if (chosen) *chosen = to_public(best);
  });
}

kiln_status_t kiln_gemm_table_set(kiln_gemm_context_t* context, const kiln_gemm_params_t* params,
                                  kiln_gemm_backend_t backend) {
  return capi_guard([&] {
    kiln_gemm_context& ctx = context_of(context);
    const GemmProblem p = check_gemm_params(params);
    KILN_CHECK_ARG(backend >= KILN_GEMM_BACKEND_CUBLASLT && backend <= KILN_GEMM_BACKEND_SM80,
                   "kiln_gemm_table_set: backend must be a concrete backend (got ",
                   kiln_gemm_backend_name(backend), ")");
    const std::string device = current_device_name();
    std::lock_guard<std::mutex> lock(ctx.mutex);
    ctx.table[table_key(p)] = TableEntry{from_public(backend), device};
  });
}

kiln_status_t kiln_gemm_table_save(kiln_gemm_context_t* context, const char* path) {
  return capi_guard([&] {
    kiln_gemm_context& ctx = context_of(context);
    KILN_CHECK_ARG(path != nullptr, "kiln_gemm_table_save: path is null");
    std::lock_guard<std::mutex> lock(ctx.mutex);
    std::ofstream out(path, std::ios::trunc);
    KILN_CHECK(out.good(), kiln::Status::io_error, "kiln_gemm_table_save: cannot open ", path);
    for (const auto& [key, entry] : ctx.table) {
      const auto& [m, n, k, ta, tb, f32, epilogue, has_c] = key;
      nlohmann::json line = {
          {"device", entry.device},
          {"m", m},
          {"n", n},
          {"k", k},
          {"trans_a", ta},
          {"trans_b", tb},
          {"cd", f32 ? "f32" : "bf16"},
          {"epilogue", kiln_gemm_epilogue_name(static_cast<kiln_gemm_epilogue_t>(epilogue))},
          {"beta_nonzero", has_c != 0},
          {"backend", backend_name(entry.backend)}};
      out << line.dump() << "\n";
    }
    KILN_CHECK(out.good(), kiln::Status::io_error, "kiln_gemm_table_save: writing ", path,
               " failed");
  });
}

kiln_status_t kiln_gemm_table_load(kiln_gemm_context_t* context, const char* path) {
  return capi_guard([&] {
    kiln_gemm_context& ctx = context_of(context);
    KILN_CHECK_ARG(path != nullptr, "kiln_gemm_table_load: path is null");
    const auto loaded = read_table(path);
    std::lock_guard<std::mutex> lock(ctx.mutex);
    for (auto& [key, entry] : loaded)
      ctx.table[key] = entry;
  });
}

}  // extern "C"
