// Internal: the data movement of the in-process communicator's collectives, once every rank has
// posted its slot (the rendezvous itself: in_process.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/comm/comm_common.hpp"
#include "runtime/comm/in_process_cuda.hpp"

namespace kiln::impl {

// One rank's arguments to a collective.
struct InProcessSlot {
  CollectiveKind kind = CollectiveKind::barrier;
  void* data = nullptr;
  int64_t count = 0;
  DType dtype = DType::f32;
  ReduceOp op = ReduceOp::sum;
  int root = 0;
  std::vector<int64_t> bounds;
  void* stream = nullptr;
  double value = 0;
};

// Performs the collective the slots (one per rank, all alike) describe on host buffers, reducing in
// rank order on the calling thread; `scratch` is reused between calls.
void perform_host(const std::vector<InProcessSlot>& slots, int world, std::vector<char>& scratch);
// The same on device buffers, by kernels and copies `device` issues on its stream.
void perform_device(InProcessDevice& device, const std::vector<InProcessSlot>& slots, int world);

}  // namespace kiln::impl
