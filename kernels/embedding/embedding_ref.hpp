// CPU reference of the token + position embedding: the spec the CUDA kernels are tested against
// and the op the CPU backend runs. Plain C++, accumulates in double.
#pragma once

#include <cstdint>

namespace kiln::ref {

// out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :]   (sum in double, then rounded to Elem), or
// wte[tokens[b, t], :] itself when wpe is null (a model without a position table).
// Every token must lie in [0, V) of wte (V, C) and T <= maxT of wpe (maxT, C): the reference does
// not check (the runtime validates token ids on the host, where the data loader produced them).
template <typename Elem>
void embedding_fwd_ref(Elem* out,                   // (B, T, C) out
                       const std::int32_t* tokens,  // (B, T)
                       const Elem* wte,             // (V, C)
                       const Elem* wpe,             // (maxT, C), rows 0..T-1 read; or null
                       std::int64_t B, std::int64_t T, std::int64_t C);

// Accumulates (+=) the parameter gradients:
//   dwte[v, :] += sum over (b, t) with tokens[b, t] == v of dout[b, t, :]
//   dwpe[t, :] += sum over b of dout[b, t, :]          (skipped when dwpe is null)
// Each row's sum is formed in double in increasing (b, t) order and added once, so the result
// does not depend on how occurrences are grouped. Tokens must lie in [0, V) as above.
template <typename Elem>
void embedding_bwd_ref(Elem* dwte,                  // (V, C) in/out
                       Elem* dwpe,                  // (maxT, C) in/out, rows 0..T-1; or null
                       const Elem* dout,            // (B, T, C)
                       const std::int32_t* tokens,  // (B, T)
                       std::int64_t B, std::int64_t T, std::int64_t C);

}  // namespace kiln::ref
