#include "kernels/embedding/embedding_ref.hpp"

#include <algorithm>
#include <numeric>
#include <vector>

namespace kiln::ref {

template <typename Elem>
void embedding_fwd_ref(Elem* out, const std::int32_t* tokens, const Elem* wte, const Elem* wpe,
                       std::int64_t B, std::int64_t T, std::int64_t C) {
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t i = b * T + t;
      const Elem* e = wte + std::int64_t{tokens[i]} * C;
      Elem* o = out + i * C;
      if (!wpe) {
        std::copy(e, e + C, o);
        continue;
      }
      const Elem* p = wpe + t * C;
      for (std::int64_t c = 0; c < C; ++c)
        o[c] = Elem(double(e[c]) + double(p[c]));
    }
  }
}

template <typename Elem>
void embedding_bwd_ref(Elem* dwte, Elem* dwpe, const Elem* dout, const std::int32_t* tokens,
                       std::int64_t B, std::int64_t T, std::int64_t C) {
  const std::int64_t M = B * T;
  std::vector<double> acc(static_cast<std::size_t>(C));
  // dwpe: per position, over the batch in order.
  for (std::int64_t t = 0; dwpe && t < T; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (std::int64_t b = 0; b < B; ++b) {
      const Elem* g = dout + (b * T + t) * C;
      for (std::int64_t c = 0; c < C; ++c)
        acc[c] += double(g[c]);
    }
    for (std::int64_t c = 0; c < C; ++c)
      dwpe[t * C + c] = Elem(double(dwpe[t * C + c]) + acc[c]);
  }
  // dwte: group the positions by token (stable, so each group is in increasing position order).
  std::vector<std::int64_t> order(static_cast<std::size_t>(M));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t a, std::int64_t b) { return tokens[a] < tokens[b]; });
  for (std::int64_t k = 0; k < M;) {
    const std::int32_t v = tokens[order[k]];
    std::fill(acc.begin(), acc.end(), 0.0);
    for (; k < M && tokens[order[k]] == v; ++k) {
      const Elem* g = dout + order[k] * C;
      for (std::int64_t c = 0; c < C; ++c)
        acc[c] += double(g[c]);
    }
    Elem* w = dwte + std::int64_t{v} * C;
    for (std::int64_t c = 0; c < C; ++c)
      w[c] = Elem(double(w[c]) + acc[c]);
  }
}

template void embedding_fwd_ref<float>(float*, const std::int32_t*, const float*, const float*,
                                       std::int64_t, std::int64_t, std::int64_t);
template void embedding_fwd_ref<double>(double*, const std::int32_t*, const double*, const double*,
                                        std::int64_t, std::int64_t, std::int64_t);
template void embedding_bwd_ref<float>(float*, float*, const float*, const std::int32_t*,
                                       std::int64_t, std::int64_t, std::int64_t);
template void embedding_bwd_ref<double>(double*, double*, const double*, const std::int32_t*,
                                        std::int64_t, std::int64_t, std::int64_t);

}  // namespace kiln::ref
