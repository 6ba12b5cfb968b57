// kiln_gemm's context and its backend dispatcher: forced, the measured winner, or the rule.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <mutex>

#include "kernels/gemm/gemm.hpp"
#include "kernels/gemm/gemm_winners.hpp"
#include "kiln/gemm.h"

// The context: what kiln_gemm_context_create was given, the cuBLASLt plans, the table.
struct kiln_gemm_context {
  void* cublaslt = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  std::mutex mutex;  // guards the cache and the table (and the descriptors' pointer attributes)
  kiln::impl::CublasLtCache* cache = nullptr;
  kiln::impl::GemmTable table;
  bool environment_table_read = false;  // KILN_GEMM_TABLE, read at the first AUTO call
};

namespace kiln::impl {

GemmBackend from_public(kiln_gemm_backend_t b);
kiln_gemm_backend_t to_public(GemmBackend b);

// Whether backend `b` can run on the current device in this build (throws no_device without a
// GPU).
bool backend_available(GemmBackend b);

// The rest take the context's lock held.
//
// Forced: that backend or an error. AUTO: the table's measured winner, else cuBLASLt (the
// measured-safe default), else the hand-written kernels.
GemmBackend select_backend(kiln_gemm_context& ctx, const GemmProblem& p,
                           kiln_gemm_backend_t requested);
void run_backend(kiln_gemm_context& ctx, GemmBackend b, const GemmProblem& p, cudaStream_t stream);
// Times every backend that takes `p` (median of a few runs on `stream`, synchronizing it) and
// returns the fastest.
GemmBackend fastest_backend(kiln_gemm_context& ctx, const GemmProblem& p, cudaStream_t stream);

}  // namespace kiln::impl
