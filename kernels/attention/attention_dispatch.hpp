// The head dims kiln's own attention kernels (sm_80, sm_90a) are built for, the tile choices that
// depend on the head dim, and the one dispatch from a runtime head dim to a kernel instantiation.
//
// Adding a head dim touches two places: the list (HeadDims) and the tile functions below (a head
// dim they do not know gets 0, which the kernels' static_asserts reject at compile time). A head
// dim outside the list is an error (Status::not_supported) at dispatch, never a silent fallback.
// The public entry points send such head dims to cuDNN (attention.cpp, resolve).
//
// Plain C++ (the tile functions are also __host__ __device__ under nvcc), so
// tests/cpu/attention_dispatch_test.cpp checks the dispatch on the CPU.
#pragma once

#include <string>

#include "errors/check.hpp"

#if defined(__CUDACC__)
#define KILN_ATTN_TILE __host__ __device__ __forceinline__ constexpr
#else
#define KILN_ATTN_TILE inline constexpr
#endif

namespace kiln::attn {

template <int... kHds>
struct HeadDimList {
  static constexpr int kCount = sizeof...(kHds);
  static constexpr int kValues[kCount] = {kHds...};
};
// The head dims every kiln attention kernel (forward and backward, sm_80 and sm_90a) is
// instantiated for.
using HeadDims = HeadDimList<64, 128>;

// Whether kiln's kernels serve head dim `hd` (otherwise only cuDNN does).
inline constexpr bool served_head_dim(int hd) {
  for (int d : HeadDims::kValues)
    if (d == hd) return true;
  return false;
}

// "64, 128": for messages.
inline std::string head_dims_text() {
  std::string text;
  for (int d : HeadDims::kValues)
    text += (text.empty() ? "" : ", ") + std::to_string(d);
  return text;
}

// ---- tile choices (0: no kernel for this head dim) ----------------------------------------------
// Written as switches, not tables: device code may call them with a runtime argument.

// sm_80 forward: keys per block beside the 128 query rows of a CTA. Per thread, S takes keys / 2
// and O hd / 2 fp32 registers (two m16 tiles a warp): 64 + 64 at HD 128, 64 + 32 at HD 64.
KILN_ATTN_TILE int sm80_fwd_keys(int hd) {
  switch (hd) {
    case 64:
      return 128;
    case 128:
      return 64;
    default:
      return 0;
  }
}

// sm_90a backward: queries per block beside a consumer warpgroup's 64 keys. S^T and dP^T take
// queries / 2 registers each, dK and dV hd / 2 each: 64 queries at HD 128, 128 at HD 64, both
// within the consumers' 232 registers. queries x hd is two 64 x 64 dQ parts (one a warpgroup;
// attention_sm90_layout.hpp, dq_part_*).
KILN_ATTN_TILE int sm90_bwd_queries(int hd) {
  switch (hd) {
    case 64:
      return 128;
    case 128:
      return 64;
    default:
      return 0;
  }
}

// ---- dispatch -----------------------------------------------------------------------------------

namespace detail {
template <typename F, int kFirst, int... kRest>
decltype(auto) dispatch_head_dim(int hd, F& f, HeadDimList<kFirst, kRest...>) {
  if (hd == kFirst) return f.template operator()<kFirst>();
  if constexpr (sizeof...(kRest) > 0) {
    return dispatch_head_dim(hd, f, HeadDimList<kRest...>{});
  } else {
    impl::throw_error(Status::not_supported,
                      impl::cat("attention: head_dim ", hd, " has no kernel of kiln's (they take ",
                                head_dims_text(), "; cuDNN may)"),
                      "served_head_dim(hd)", __FILE__, __LINE__);
  }
}
}  // namespace detail

// Calls f.template operator()<HD>() (e.g. a lambda [&]<int HD>() { ... }) for the listed head dim
// equal to `hd` and returns its result; throws not_supported for any other.
template <typename F>
decltype(auto) dispatch_head_dim(int hd, F&& f) {
  return detail::dispatch_head_dim(hd, f, HeadDims{});
}

}  // namespace kiln::attn

#undef KILN_ATTN_TILE
