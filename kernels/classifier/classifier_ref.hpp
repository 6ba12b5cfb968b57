// CPU reference of the fused classifier (softmax + cross-entropy + its gradient): the spec the
// CUDA kernel is tested against and the op the CPU backend runs. Plain C++, accumulates in double
// (or in Acc, for the same-precision baseline of the GPU tests' tolerance rule).
#pragma once

#include <cstdint>

namespace kiln::ref {

// For each row r of logits (N, Vp) (row stride Vp >= V; only the first V columns are classes,
// the rest is padding that is never read):
//   losses[r]    = logsumexp(logits[r, 0:V]) - logits[r, targets[r]]
//   dlogits[r, j] = (softmax(logits[r, 0:V])[j] - (j == targets[r])) * dloss   for j < V
//   dlogits[r, j] = 0                                                           for V <= j < Vp
// A row whose target equals ignore_index has loss 0 and an all-zero gradient row. A target
// outside [0, V) that is not ignore_index gives loss NaN and NaN gradients over [0, V) (the GPU
// kernel does the same instead of reading out of bounds; the runtime validates targets on the
// host). Non-finite logits propagate: a NaN or +Inf logit makes the row's loss and gradient NaN.
// dlogits (overwritten) may alias logits exactly (in place). losses, dlogits: outputs;
// logits: (N, Vp); targets: (N). The mean loss is classifier_mean_loss_ref below; the runtime
// passes dloss = 1 / (number of rows whose target is not ignore_index).
template <typename T, typename Acc = double>
void classifier_ref(T* losses,                    // (N) out
                    T* dlogits,                   // (N, Vp) out, may equal logits
                    const T* logits,              // (N, Vp)
                    const std::int32_t* targets,  // (N)
                    std::int64_t N, std::int64_t V, std::int64_t Vp, double dloss,
                    std::int32_t ignore_index);

// sum(losses[r] for targets[r] != ignore_index) / count(targets[r] != ignore_index), summed in
// double; 0 when every row is ignored (PyTorch returns NaN there; a step with no targets
// contributes nothing).
template <typename T>
double classifier_mean_loss_ref(const T* losses,              // (N)
                                const std::int32_t* targets,  // (N)
                                std::int64_t N, std::int32_t ignore_index);

}  // namespace kiln::ref
