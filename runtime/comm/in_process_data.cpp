// The data movement of the in-process collectives: rank-order host reductions on the leader's
// thread, or the leader's kernels and copies on the group's stream for device buffers.
#include "runtime/comm/in_process_data.hpp"

#include <cstring>

namespace kiln::impl {
namespace {

using Slot = InProcessSlot;

// Rank-order reduction of elements [begin, begin + n) of every rank's buffer into the buffers
// of `outs`.
void reduce_host(const std::vector<Slot>& slots, int world, std::vector<char>& scratch,
                 int64_t begin, int64_t n, const std::vector<int>& outs) {
  const Slot& a = slots[0];
  if (n <= 0 || outs.empty()) return;
  const std::size_t bytes = bytes_of(n, a.dtype);
  scratch.resize(bytes);
  std::memcpy(scratch.data(), byte_ptr(slots[0].data, begin, a.dtype), bytes);
  for (int q = 1; q < world; ++q) {
    host_accumulate(scratch.data(),
                    byte_ptr(slots[static_cast<std::size_t>(q)].data, begin, a.dtype), n, a.dtype,
                    a.op);
  }
  host_finish(scratch.data(), n, a.dtype, a.op, world);
  for (int q : outs)
    std::memcpy(byte_ptr(slots[static_cast<std::size_t>(q)].data, begin, a.dtype), scratch.data(),
                bytes);
}

}  // namespace

void perform_host(const std::vector<Slot>& slots, int world, std::vector<char>& scratch) {
  const Slot& a = slots[0];
  const std::size_t row = bytes_of(a.count, a.dtype);
  switch (a.kind) {
    case CollectiveKind::all_reduce: {
      std::vector<int> all(static_cast<std::size_t>(world));
      for (int q = 0; q < world; ++q)
        all[static_cast<std::size_t>(q)] = q;
      reduce_host(slots, world, scratch, 0, a.count, all);
      return;
    }
    case CollectiveKind::reduce_scatter:
      for (int q = 0; q < world; ++q) {
        const int64_t b0 = a.bounds[static_cast<std::size_t>(q)];
        reduce_host(slots, world, scratch, b0, a.bounds[static_cast<std::size_t>(q) + 1] - b0, {q});
      }
      return;
    case CollectiveKind::all_gather:
      for (int q = 0; q < world; ++q) {
        const char* block = byte_ptr(slots[static_cast<std::size_t>(q)].data, q * a.count, a.dtype);
        for (int d = 0; d < world; ++d) {
          if (d != q && row) {
            std::memcpy(byte_ptr(slots[static_cast<std::size_t>(d)].data, q * a.count, a.dtype),
                        block, row);
          }
        }
      }
      return;
    case CollectiveKind::broadcast:
      for (int d = 0; d < world; ++d) {
        if (d != a.root && row) {
          std::memcpy(slots[static_cast<std::size_t>(d)].data,
                      slots[static_cast<std::size_t>(a.root)].data, row);
        }
      }
      return;
    default:
      return;
  }
}

void perform_device(InProcessDevice& device, const std::vector<Slot>& slots, int world) {
  const Slot& a = slots[0];
  const std::size_t row = bytes_of(a.count, a.dtype);
  auto inputs = [&](int64_t begin) {
    std::vector<const void*> in(static_cast<std::size_t>(world));
    for (int q = 0; q < world; ++q)
      in[static_cast<std::size_t>(q)] =
          byte_ptr(slots[static_cast<std::size_t>(q)].data, begin, a.dtype);
    return in;
  };
  switch (a.kind) {
    case CollectiveKind::all_reduce: {
      std::vector<void*> out(static_cast<std::size_t>(world));
      for (int q = 0; q < world; ++q)
        out[static_cast<std::size_t>(q)] = slots[static_cast<std::size_t>(q)].data;
      device.reduce(inputs(0), out, a.count, a.dtype, a.op);
      return;
    }
    case CollectiveKind::reduce_scatter:
      for (int q = 0; q < world; ++q) {
        const int64_t b0 = a.bounds[static_cast<std::size_t>(q)];
        device.reduce(inputs(b0), {byte_ptr(slots[static_cast<std::size_t>(q)].data, b0, a.dtype)},
                      a.bounds[static_cast<std::size_t>(q) + 1] - b0, a.dtype, a.op);
      }
      return;
    case CollectiveKind::all_gather:
      for (int q = 0; q < world; ++q) {
        const char* block = byte_ptr(slots[static_cast<std::size_t>(q)].data, q * a.count, a.dtype);
        for (int d = 0; d < world; ++d) {
          if (d != q) {
            device.copy(byte_ptr(slots[static_cast<std::size_t>(d)].data, q * a.count, a.dtype),
                        block, row);
          }
        }
      }
      return;
    case CollectiveKind::broadcast:
      for (int d = 0; d < world; ++d) {
        if (d != a.root) {
          device.copy(slots[static_cast<std::size_t>(d)].data,
                      slots[static_cast<std::size_t>(a.root)].data, row);
        }
      }
      return;
    default:
      return;
  }
}

}  // namespace kiln::impl
