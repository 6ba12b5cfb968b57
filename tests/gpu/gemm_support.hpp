// The harness of the GEMM GPU tests (gemm_*_test.cpp): a case (shape, layout, epilogue, dtype,
// strides) run on every backend, forced, against the double reference with the tolerance rule.
// Outputs are poisoned with NaN before each call, the inputs' padding holds NaN (a kernel reading
// past a row's end is caught) and a guard row follows D and pre_gelu_out (a kernel writing past M
// is caught).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "kiln/device.hpp"
#include "kiln/gemm.h"

namespace kiln::test::gemm {

using bf16 = __nv_bfloat16;

inline constexpr kiln_gemm_backend_t kBackends[] = {KILN_GEMM_BACKEND_CUBLASLT,
                                                    KILN_GEMM_BACKEND_SM90, KILN_GEMM_BACKEND_SM80};

// One device and GEMM context for the whole test program.
struct Env {
  kiln::Device device{0};
  kiln::GemmContext ctx{device.cublaslt(), device.workspace(), device.workspace_bytes()};
};
Env& env();

// Whether `b` runs here; on compute capability 9.0 with the sm_90a build kiln's own backends
// must (tests/gpu/paths.hpp): their absence fails the test instead of skipping it.
bool available(kiln_gemm_backend_t b);

struct GemmCase {
  std::string name;
  std::int64_t M = 0, N = 0, K = 0;
  bool ta = false, tb = false;
  kiln_gemm_epilogue_t epi = KILN_GEMM_EPILOGUE_NONE;
  bool f32 = false;  // C, D, bias_grad in fp32
  float alpha = 1, beta = 0;
  std::int64_t pad = 0;   // every leading dimension is the packed one + pad ...
  bool align = false;     // ... rounded up to a multiple of 8 elements (16-byte rows)
  bool in_place = false;  // c is d
  int sample_rows = 0;    // rows checked against the reference; 0 = all
  bool has_bias = true;   // for the residual epilogue (bias optional there)
};

std::string describe(const GemmCase& c);

// Runs `c` on every available backend (or only `only`) and checks each.
void check_case(const GemmCase& c, kiln_gemm_backend_t only = KILN_GEMM_BACKEND_AUTO);

// B * T of the GPT-2 layer cases: 8 x 1024, or 256 in quick mode.
std::int64_t tokens();

}  // namespace kiln::test::gemm
