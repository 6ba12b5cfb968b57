// kiln_gemm's C ABI: the context, the call, backend selection and tuning, the winners' table.
// The checks are gemm_args.cpp, the dispatcher gemm_dispatch.cpp, the table gemm_winners.cpp.
#include <memory>
#include <mutex>

#include "errors/capi.hpp"
#include "errors/check.hpp"
#include "kernels/gemm/gemm.hpp"
#include "kernels/gemm/gemm_dispatch.hpp"
#include "kernels/gemm/gemm_winners.hpp"

namespace kiln::impl {
namespace {

kiln_gemm_context& context_of(kiln_gemm_context_t* ctx) {
  KILN_CHECK_ARG(ctx != nullptr, "kiln_gemm: context is null");
  return *ctx;
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
    run_backend(ctx, select_backend(ctx, p, params->backend), p, stream);
  });
}

kiln_status_t kiln_gemm_select(kiln_gemm_context_t* context, const kiln_gemm_params_t* params,
                               kiln_gemm_backend_t* backend) {
  return capi_guard([&] {
    KILN_CHECK_ARG(backend != nullptr, "kiln_gemm_select: backend is null");
    kiln_gemm_context& ctx = context_of(context);
    const GemmProblem p = check_gemm_params(params);
    std::lock_guard<std::mutex> lock(ctx.mutex);
    *backend = to_public(select_backend(ctx, p, params->backend));
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
    const GemmBackend best = fastest_backend(ctx, p, stream);
    ctx.table[gemm_table_key(p)] = GemmTableEntry{best, current_device_name()};
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
    ctx.table[gemm_table_key(p)] = GemmTableEntry{from_public(backend), device};
  });
}

kiln_status_t kiln_gemm_table_save(kiln_gemm_context_t* context, const char* path) {
  return capi_guard([&] {
    kiln_gemm_context& ctx = context_of(context);
    KILN_CHECK_ARG(path != nullptr, "kiln_gemm_table_save: path is null");
    std::lock_guard<std::mutex> lock(ctx.mutex);
    write_gemm_table(ctx.table, path);
  });
}

kiln_status_t kiln_gemm_table_load(kiln_gemm_context_t* context, const char* path) {
  return capi_guard([&] {
    kiln_gemm_context& ctx = context_of(context);
    KILN_CHECK_ARG(path != nullptr, "kiln_gemm_table_load: path is null");
    const GemmTable loaded = read_gemm_table(path);
    std::lock_guard<std::mutex> lock(ctx.mutex);
    for (auto& [key, entry] : loaded)
      ctx.table[key] = entry;
  });
}

}  // extern "C"
