// Rotary position embedding reference (the spec the CUDA kernels and the CPU backend follow):
// Hugging Face's rotate-half convention, in place, with kiln/rope.h's formulas and layout.
//
// Arithmetic in Acc. Acc = double (the default, the CPU backend and the finite-difference checks)
// takes the double inv_freq and the angle p * inv_freq in double. Acc = float is the GPU tests'
// same-precision baseline and follows the kernels' recipe: inv_freq rounded to fp32, the angle the
// fp32 product fp32(p) * inv_freq, its sine and cosine in fp32.
#pragma once

#include <cstdint>

#include "kiln/export.h"
#include "kiln/rope.h"

// Exported from the shared library (though not part of its public headers) so that the
// benchmarks, linked to it as a user would be, can spot-check results against the spec.
namespace kiln::ref {

// inv_freq: (head_dim / 2) out, double. The configuration is not checked here (the C ABI's
// kiln_rope_inv_freq checks it and returns the fp32 rounding of these values).
KILN_API void rope_inv_freq_ref(const kiln_rope_config_t& config, double* inv_freq);

// x: (B, T_, H, HD) in/out, element (b,t,h,i) at x[b*stride_b + t*stride_t + h*HD + i].
// fwd rotates by +a, bwd by -a (the transpose), each in place.
template <typename T, typename Acc = double>
KILN_API void rope_fwd_ref(T* x, std::int64_t B, std::int64_t T_, std::int64_t H,
                           std::int64_t stride_b, std::int64_t stride_t, std::int64_t pos_offset,
                           const kiln_rope_config_t& config);
template <typename T, typename Acc = double>
KILN_API void rope_bwd_ref(T* x, std::int64_t B, std::int64_t T_, std::int64_t H,
                           std::int64_t stride_b, std::int64_t stride_t, std::int64_t pos_offset,
                           const kiln_rope_config_t& config);

}  // namespace kiln::ref
