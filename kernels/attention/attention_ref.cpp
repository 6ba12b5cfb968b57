#include "kernels/attention/attention_ref.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace kiln::ref {
namespace {

inline int64_t at(const AttentionStrides& s, int64_t b, int64_t t, int64_t h) {
  return b * s.batch + t * s.token + h * s.head;
}

// Softmax probabilities of query row i (keys 0..last) into p; returns the log-sum-exp of the
// scaled scores, or -inf when the row sees no key.
template <typename T>
double row_softmax(std::vector<double>& p, const T* qi, const T* k, const AttentionStrides& ks,
                   int64_t b, int64_t hk, int64_t last, int64_t HD, double scale) {
  p.assign(static_cast<size_t>(std::max<int64_t>(last + 1, 0)), 0.0);
  if (last < 0) return -std::numeric_limits<double>::infinity();
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j <= last; ++j) {
    const T* kj = k + at(ks, b, j, hk);
    double s = 0;
    for (int64_t d = 0; d < HD; ++d)
      s += static_cast<double>(qi[d]) * static_cast<double>(kj[d]);
    p[j] = s * scale;
    mx = std::max(mx, p[j]);
  }
  double sum = 0;
  for (auto& x : p) {
    x = std::exp(x - mx);
    sum += x;
  }
  for (auto& x : p)
    x /= sum;
  return mx + std::log(sum);
}

}  // namespace

template <typename T>
void attention_fwd_ref(T* out, T* lse, const T* q, const T* k, const T* v, int64_t B, int64_t Tq,
                       int64_t Tk, int64_t NHq, int64_t NHkv, int64_t HD, double scale, bool causal,
                       const AttentionLayout& L) {
  const int64_t group = NHq / NHkv;
  std::vector<double> p, acc(static_cast<size_t>(HD));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < NHq; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t last = attention_last_key(i, Tq, Tk, causal);
        const double l = row_softmax(p, q + at(L.q, b, i, h), k, L.k, b, hk, last, HD, scale);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j <= last; ++j) {
          const T* vj = v + at(L.v, b, j, hk);
          for (int64_t d = 0; d < HD; ++d)
            acc[d] += p[j] * static_cast<double>(vj[d]);
        }
        T* oi = out + at(L.o, b, i, h);
        for (int64_t d = 0; d < HD; ++d)
          oi[d] = static_cast<T>(acc[d]);
        if (lse) lse[(b * NHq + h) * Tq + i] = static_cast<T>(l);
      }
    }
}

template <typename T>
void attention_bwd_ref(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                       int64_t B, int64_t Tq, int64_t Tk, int64_t NHq, int64_t NHkv, int64_t HD,
                       double scale, bool causal, const AttentionLayout& L) {
  const int64_t group = NHq / NHkv;
  // dK and dV sum over query heads and rows: accumulate in double, contiguous, then store.
  const auto kv_index = [&](int64_t b, int64_t j, int64_t hk) {
    return ((b * Tk + j) * NHkv + hk) * HD;
  };
  std::vector<double> dk_acc(static_cast<size_t>(B * Tk * NHkv * HD), 0.0);
  std::vector<double> dv_acc(dk_acc.size(), 0.0);
  std::vector<double> p, dp, dq_acc(static_cast<size_t>(HD));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < NHq; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t last = attention_last_key(i, Tq, Tk, causal);
        const T* qi = q + at(L.q, b, i, h);
        const T* doi = dout + at(L.o, b, i, h);
        row_softmax(p, qi, k, L.k, b, hk, last, HD, scale);
        // dP[j] = dO_i . V_j; D = sum_j P[j] dP[j] (= dO_i . O_i).
        dp.assign(p.size(), 0.0);
        double D = 0;
        for (int64_t j = 0; j <= last; ++j) {
          const T* vj = v + at(L.v, b, j, hk);
          double s = 0;
          for (int64_t d = 0; d < HD; ++d)
            s += static_cast<double>(doi[d]) * static_cast<double>(vj[d]);
          dp[j] = s;
          D += p[j] * s;
        }
        std::fill(dq_acc.begin(), dq_acc.end(), 0.0);
        for (int64_t j = 0; j <= last; ++j) {
          const double ds = p[j] * (dp[j] - D) * scale;  // gradient of the raw score q.k
          const T* kj = k + at(L.k, b, j, hk);
          double* dkj = dk_acc.data() + kv_index(b, j, hk);
          double* dvj = dv_acc.data() + kv_index(b, j, hk);
          for (int64_t d = 0; d < HD; ++d) {
            dq_acc[d] += ds * static_cast<double>(kj[d]);
            dkj[d] += ds * static_cast<double>(qi[d]);
            dvj[d] += p[j] * static_cast<double>(doi[d]);
          }
        }
        T* dqi = dq + at(L.q, b, i, h);
        for (int64_t d = 0; d < HD; ++d)
          dqi[d] = static_cast<T>(dq_acc[d]);
      }
    }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < Tk; ++j)
      for (int64_t hk = 0; hk < NHkv; ++hk) {
        T* dkj = dk + at(L.k, b, j, hk);
        T* dvj = dv + at(L.v, b, j, hk);
        const double* sk = dk_acc.data() + kv_index(b, j, hk);
        const double* sv = dv_acc.data() + kv_index(b, j, hk);
        for (int64_t d = 0; d < HD; ++d) {
          dkj[d] = static_cast<T>(sk[d]);
          dvj[d] = static_cast<T>(sv[d]);
        }
      }
}

#define KILN_ATTENTION_REF_INSTANTIATE(T)                                                         \
  template void attention_fwd_ref<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,      \
                                     int64_t, int64_t, int64_t, int64_t, double, bool,            \
                                     const AttentionLayout&);                                     \
  template void attention_bwd_ref<T>(T*, T*, T*, const T*, const T*, const T*, const T*, int64_t, \
                                     int64_t, int64_t, int64_t, int64_t, int64_t, double, bool,   \
                                     const AttentionLayout&);
KILN_ATTENTION_REF_INSTANTIATE(float)
KILN_ATTENTION_REF_INSTANTIATE(double)
#undef KILN_ATTENTION_REF_INSTANTIATE

}  // namespace kiln::ref
