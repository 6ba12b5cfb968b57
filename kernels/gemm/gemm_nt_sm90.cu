// The sm_90a GEMM for trans_a = false, trans_b = true (both output types, both tile widths).
#include "kernels/gemm/gemm_sm90.cuh"

namespace kiln::dev::sm90 {
template void launch<false, true>(const impl::GemmProblem&, int, cudaStream_t);
}  // namespace kiln::dev::sm90
