// Internal: pieces of a layer's forward pass that the training step and the generator run alike.
#pragma once

#include <cstdint>

#include "kiln/backend.hpp"
#include "kiln/model.hpp"

namespace kiln::impl {

// The MLP over `rows` tokens: fch (rows, F) = in (rows, C) @ fc_w^T + fc_b; act (rows, Hm) =
// SwiGLU(fch), or for GELU act = GELU(fch) written by the GEMM's epilogue beside fch (the
// pre-activation the backward reads); out (rows, C) = act @ proj_w^T + proj_b.
inline void mlp_fwd(Backend& be, MlpKind mlp, void* out, void* fch, void* act, const void* in,
                    const void* fc_w, const void* fc_b, const void* proj_w, const void* proj_b,
                    int64_t rows, int64_t C, int64_t F, int64_t Hm) {
  if (mlp == MlpKind::swiglu) {
    be.linear_fwd(fch, nullptr, in, fc_w, fc_b, rows, C, F);
    be.swiglu_fwd(act, fch, rows, Hm);
  } else {
    be.linear_fwd(act, fch, in, fc_w, fc_b, rows, C, F);
  }
  be.linear_fwd(out, nullptr, act, proj_w, proj_b, rows, Hm, C);
}

}  // namespace kiln::impl
