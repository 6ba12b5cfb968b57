// Internal launchers of the embedding (arguments already checked by embedding.cpp).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace kiln::impl {

// M = B * T >= 1 tokens; C a multiple of 8; pointers 16-byte aligned.
void embedding_fwd(__nv_bfloat16* out,          // (B, T, C)
                   const std::int32_t* tokens,  // (B, T)
                   const __nv_bfloat16* wte,    // (V, C)
                   const __nv_bfloat16* wpe,    // (maxT, C), or null: no positions
                   std::int64_t B, std::int64_t T, std::int64_t C, std::int64_t V,
                   cudaStream_t stream);

// Where the backward's scratch arrays lie in its workspace (offsets in bytes, 256-aligned).
struct EmbeddingBwdWorkspace {
  std::size_t keys_in = 0, values_in = 0, keys_out = 0, values_out = 0;  // (M) int32 each
  std::size_t sort_temp = 0, sort_temp_bytes = 0;                        // the radix sort's
  std::size_t total = 0;
};
// Needs the current device (the sort's temporary storage depends on its tuning).
EmbeddingBwdWorkspace embedding_bwd_workspace(std::int64_t M, std::int64_t V);

// Sorts the occurrences by token: keys_out (M) ids (V for an id outside [0, V), sorted last),
// values_out (M) their positions b * T + t, ascending within each id.
void embedding_sort_tokens(void* workspace, const EmbeddingBwdWorkspace& layout,
                           const std::int32_t* tokens, std::int64_t M, std::int64_t V,
                           cudaStream_t stream);

void embedding_bwd(float* dwte,                 // (V, C) +=
                   float* dwpe,                 // (maxT, C) +=, rows 0..T-1; or null
                   const __nv_bfloat16* dout,   // (B, T, C)
                   const std::int32_t* tokens,  // (B, T)
                   std::int64_t B, std::int64_t T, std::int64_t C, std::int64_t V, void* workspace,
                   const EmbeddingBwdWorkspace& layout, cudaStream_t stream);

}  // namespace kiln::impl
