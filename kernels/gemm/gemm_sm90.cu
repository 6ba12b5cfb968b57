// The sm_90a GEMM's entry: picks the (trans_a, trans_b) instantiation. The kernel itself is in
// gemm_sm90.cuh, instantiated by gemm_{nn,nt,tn,tt}_sm90.cu.
#include "kernels/gemm/gemm_sm90.cuh"

namespace kiln::impl {

void gemm_sm90(const GemmProblem& p, int multiprocessors, cudaStream_t stream) {
  using namespace kiln::dev::sm90;
  if (p.trans_a)
    p.trans_b ? launch<true, true>(p, multiprocessors, stream)
              : launch<true, false>(p, multiprocessors, stream);
  else
    p.trans_b ? launch<false, true>(p, multiprocessors, stream)
              : launch<false, false>(p, multiprocessors, stream);
}

}  // namespace kiln::impl
