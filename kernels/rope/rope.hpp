// Rotary embedding's internal launcher. Arguments are checked by the C ABI (rope.cpp) first.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kiln/core.h"

namespace kiln::impl {

// The largest head dim served (kiln/rope.h): its half is the inv_freq table the kernels carry in
// their parameters (512 bytes, read from the constant bank).
constexpr std::int64_t kRopeMaxHeadDim = 256;

struct RopeArgs {
  void* x;  // (B, T, H, head_dim) dtype, strided as in kiln/rope.h
  std::int64_t B, T, H, stride_b, stride_t, pos_offset;
  int head_dim;
  float inv_freq[kRopeMaxHeadDim / 2];  // fp32, head_dim / 2 of them used
};

// transpose = false: the forward rotation; true: its transpose (the backward).
void rope(kiln_dtype_t dtype, const RopeArgs& args, bool transpose, cudaStream_t stream);

}  // namespace kiln::impl
