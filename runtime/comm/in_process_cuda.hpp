// Internal: the device side of the in-process communicator on a GPU (runtime/comm/in_process.cpp).
// All ranks' buffers live on one device. The rank that completes a collective's rendezvous (the
// leader) issues the whole collective on the group's own stream, after every rank's "ready"
// event; each rank's stream then waits for the group's "done" event. The group stream serialises
// the collectives, so waiting for the last one waits for all.
#pragma once

#include <cstdint>
#include <vector>

#include "kiln/communicator.hpp"

namespace kiln::impl {

// At most this many logical ranks share a device (the kernel takes their pointers by value).
inline constexpr int kMaxInProcessDeviceRanks = 64;

class InProcessDevice {
 public:
  explicit InProcessDevice(int world_size);
  ~InProcessDevice();
  InProcessDevice(const InProcessDevice&) = delete;
  InProcessDevice& operator=(const InProcessDevice&) = delete;

  // Rank `rank`'s data is ready once the work issued so far on `stream` is done.
  void record_ready(int rank, void* stream);
  // Leader: the group stream waits for every rank's ready event.
  void begin();
  // Leader, after begin(): for every element i < n, out[o][i] = the rank-order reduction over r of
  // in[r][i] (in.size() == world size), divided by the world size for a mean, in the element type.
  void reduce(const std::vector<const void*>& in, const std::vector<void*>& out, int64_t n,
              DType dtype, ReduceOp op);
  void copy(void* dst, const void* src, std::size_t bytes);
  // Leader: records the done event after everything begin() ordered.
  void end();
  // `stream` waits for the last collective the group issued.
  void wait_done(void* stream);

 private:
  void create();
  int world_;
  bool created_ = false;
  void* stream_ = nullptr;  // cudaStream_t of the group
  void* done_ = nullptr;    // cudaEvent_t
  std::vector<void*> ready_;
};

}  // namespace kiln::impl
