// The sm_90a GEMM for trans_a = false, trans_b = false (both output types, both tile widths).
#include "kernels/gemm/gemm_sm90.cuh"

namespace kiln::dev::sm90 {
template void launch<false, false>(const impl::GemmProblem&, int, cudaStream_t);
}  // namespace kiln::dev::sm90
