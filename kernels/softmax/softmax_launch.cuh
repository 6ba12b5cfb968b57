// Host-side dispatch of the softmax kernels by row width.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/common/check.hpp"
#include "kernels/common/rows.cuh"
#include "kernels/softmax/softmax_kernels.cuh"

namespace kiln::impl::softmax {

using namespace dev::softmax;

// Launches kernel<T, kLanes, kPacks> (picked by the row width) or the generic kernel.
template <typename T, typename Params, typename Pick, typename Generic>
void launch(const Params& p, Pick pick, Generic generic, cudaStream_t stream) {
  if (p.N == 0) return;
  constexpr int kPack = dev::Vec16<T>::kSize;
  const int vec = p.C / kPack;
  if (p.C % kPack == 0 && vec <= dev::kRowMaxPacks) {
    dev::with_row_mapping(vec, [&](auto lanes, auto packs) {
      constexpr int kLanes = decltype(lanes)::value, kPacks = decltype(packs)::value;
      auto kernel = pick(lanes, packs);
      if constexpr (kLanes > 0) {
        const std::int64_t rows = kWarpThreads / kLanes;
        kernel<<<static_cast<unsigned>((p.N + rows - 1) / rows), kWarpThreads, 0, stream>>>(p);
      } else {
        kernel<<<static_cast<unsigned>(p.N), dev::row_block_threads(vec, kPacks), 0, stream>>>(p);
      }
    });
  } else {
    const auto grid = static_cast<unsigned>(std::min<std::int64_t>(p.N, 1 << 20));
    generic<<<grid, kGenericThreads, 0, stream>>>(p);
  }
  KILN_LAUNCH_CHECK(stream);
}

}  // namespace kiln::impl::softmax
