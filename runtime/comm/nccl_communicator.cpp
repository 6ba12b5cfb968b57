// The NCCL communicator: one process per GPU, collectives on a stream of its own, a watchdog.
//
// Creation is non-blocking (ncclCommInitRankConfig with blocking = 0): every NCCL call returns at
// once, possibly with ncclInProgress, and ncclCommGetAsyncError says when the call's work is
// enqueued (or has failed). kiln polls it with a deadline, so no call can hang the host, and the
// watchdog can take the NCCL lock between two polls to abort a communicator that a rank stopped
// serving.
//
// Ordering: a collective records an event on the caller's stream; the communicator's stream waits
// for it, runs the NCCL call, and records a completion event that the watchdog polls and the
// caller's stream waits for (except for the start_* variants, which wait_started() joins).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "errors/check_libs.hpp"
#include "kiln/launch.hpp"
#include "runtime/comm/comm_common.hpp"
#include "runtime/comm/nccl_communicator.hpp"

namespace kiln {
namespace impl {
namespace {

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::bf16:
      return ncclBfloat16;
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::mean:
      return ncclAvg;
    case ReduceOp::max:
      return ncclMax;
  }
  return ncclSum;
}

cudaStream_t cs(void* s) {
  return static_cast<cudaStream_t>(s);
}

}  // namespace

std::string NcclCommunicator::description() const {
  return cat("nccl (rank ", rank_, " of ", world_, ", device ", device_, ")");
}

void NcclCommunicator::all_gather(void* data, int64_t count, DType dtype, void* stream) {
  check_count(kWho, "all_gather", count);
  issue(CollectiveKind::all_gather, bytes_of(count, dtype) * world_, stream, true, [&] {
    // In place: this rank's block is already where the gathered result puts it.
    return ncclAllGather(byte_ptr(data, rank_ * count, dtype), data, static_cast<size_t>(count),
                         nccl_type(dtype), comm_, stream_);
  });
}

void NcclCommunicator::broadcast(void* data, int64_t count, DType dtype, int root, void* stream) {
  check_count(kWho, "broadcast", count);
  check_root(kWho, root, world_);
  issue(CollectiveKind::broadcast, bytes_of(count, dtype), stream, true, [&] {
    return ncclBroadcast(data, data, static_cast<size_t>(count), nccl_type(dtype), root, comm_,
                         stream_);
  });
}

double NcclCommunicator::all_reduce_value(double value, ReduceOp op) {
  *scalar_host_ = value;
  const int64_t seq = issue(CollectiveKind::all_reduce_value, sizeof(double), nullptr, false, [&] {
    const cudaError_t e = cudaMemcpyAsync(scalar_device_, scalar_host_, sizeof(double),
                                          cudaMemcpyHostToDevice, stream_);
    if (e != cudaSuccess) return ncclUnhandledCudaError;
    return ncclAllReduce(scalar_device_, scalar_device_, 1, ncclFloat64, nccl_op(op), comm_,
                         stream_);
  });
  KILN_CUDA_CHECK(cudaMemcpyAsync(scalar_host_, scalar_device_, sizeof(double),
                                  cudaMemcpyDeviceToHost, stream_));
  KILN_CUDA_CHECK(cudaEventRecord(marker_, stream_));
  wait_event(marker_, CollectiveKind::all_reduce_value, seq);
  return *scalar_host_;
}

void NcclCommunicator::wait_started(void* stream) {
  check();
  KILN_CUDA_CHECK(cudaEventRecord(marker_, stream_));
  KILN_CUDA_CHECK(cudaStreamWaitEvent(cs(stream), marker_, 0));
}

void NcclCommunicator::check() {
  std::lock_guard<std::mutex> lock(state_mutex_);
  if (failed_) throw_error(failure_.status, failure_.message, nullptr, nullptr, 0);
}

void NcclCommunicator::abort(const std::string& reason) {
  fail(Status::internal_error, "abort", seq_.load(),
       cat(kWho, ": rank ", rank_, " aborted: ", reason), false);
}

void NcclCommunicator::issue_all_reduce(void* data, int64_t count, DType dtype, ReduceOp op,
                                        void* stream, bool sync) {
  check_count(kWho, "all_reduce", count);
  check_reduce_dtype(kWho, dtype, true);
  issue(CollectiveKind::all_reduce, bytes_of(count, dtype), stream, sync, [&] {
    return ncclAllReduce(data, data, static_cast<size_t>(count), nccl_type(dtype), nccl_op(op),
                         comm_, stream_);
  });
}

void NcclCommunicator::issue_reduce_scatter(void* data, std::span<const int64_t> bounds,
                                            DType dtype, ReduceOp op, void* stream, bool sync) {
  check_bounds(kWho, bounds, world_);
  check_reduce_dtype(kWho, dtype, true);
  const int64_t count = bounds[1] - bounds[0];
  bool even = true;
  for (int q = 0; q < world_; ++q) {
    even = even &&
           bounds[static_cast<std::size_t>(q) + 1] - bounds[static_cast<std::size_t>(q)] == count;
  }
  issue(CollectiveKind::reduce_scatter, bytes_of(bounds.back() - bounds.front(), dtype), stream,
        sync, [&]() -> ncclResult_t {
          if (even) {
            // In place: NCCL's receive buffer is this rank's block of the send buffer.
            return ncclReduceScatter(byte_ptr(data, bounds[0], dtype),
                                     byte_ptr(data, bounds[static_cast<std::size_t>(rank_)], dtype),
                                     static_cast<size_t>(count), nccl_type(dtype), nccl_op(op),
                                     comm_, stream_);
          }
          // Ranges of different sizes: one reduce to each owner, grouped into one launch.
          ncclResult_t r = ncclGroupStart();
          for (int q = 0; q < world_ && (r == ncclSuccess || r == ncclInProgress); ++q) {
            const int64_t b0 = bounds[static_cast<std::size_t>(q)];
            const int64_t n = bounds[static_cast<std::size_t>(q) + 1] - b0;
            if (n == 0) continue;
            void* p = byte_ptr(data, b0, dtype);
            r = ncclReduce(p, p, static_cast<size_t>(n), nccl_type(dtype), nccl_op(op), q, comm_,
                           stream_);
          }
          const ncclResult_t e = ncclGroupEnd();
          return (r == ncclSuccess || r == ncclInProgress) ? e : r;
        });
}

// Issues one collective: orders the communicator's stream after `stream`'s work, calls `call`
// under the NCCL lock, waits (bounded) until NCCL has enqueued it, records its completion for
// the watchdog and, when `sync`, orders `stream` after it. Returns its sequence number.
template <typename Call>
int64_t NcclCommunicator::issue(CollectiveKind kind, std::size_t bytes, void* stream, bool sync,
                                Call&& call) {
  check();
  const int64_t seq = ++seq_;
  const bool has_stream = kind != CollectiveKind::all_reduce_value;
  if (has_stream) {
    KILN_CUDA_CHECK(cudaEventRecord(ready_, cs(stream)));
    KILN_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
  }
  const auto deadline = Clock::now() + options_.timeout;
  ncclResult_t r = ncclSuccess;
  std::string detail;
  {
    std::lock_guard<std::mutex> lock(nccl_mutex_);
    if (!aborted_) {
      r = call();
      if (r != ncclSuccess && r != ncclInProgress) detail = ncclGetLastError(comm_);
    }
  }
  if (r != ncclSuccess && r != ncclInProgress) {
    fail(Status::nccl_error, collective_name(kind), seq,
         cat(kWho, ": ", collective_name(kind), " #", seq, " on rank ", rank_,
             " failed: ", ncclGetErrorString(r), " (", detail, ")"),
         true);
  }
  wait_enqueued(kind, seq, deadline);
  cudaEvent_t done = take_event();
  KILN_CUDA_CHECK(cudaEventRecord(done, stream_));
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    pending_.push_back({seq, kind, bytes, done, deadline});
    last_kind_ = kind;
    last_seq_ = seq;
  }
  state_cv_.notify_all();
  if (sync && has_stream) KILN_CUDA_CHECK(cudaStreamWaitEvent(cs(stream), done, 0));
  return seq;
}

// Non-blocking NCCL: a call may return before its work is on the stream; ncclCommGetAsyncError
// leaves ncclInProgress once it is (or once it failed).
void NcclCommunicator::wait_enqueued(CollectiveKind kind, int64_t seq, Clock::time_point deadline) {
  for (int spin = 0;; ++spin) {
    check();
    ncclResult_t state = ncclSuccess;
    {
      std::lock_guard<std::mutex> lock(nccl_mutex_);
      if (aborted_) break;
      ncclCommGetAsyncError(comm_, &state);
    }
    if (state == ncclSuccess) return;
    if (state != ncclInProgress) {
      fail(Status::nccl_error, collective_name(kind), seq,
           cat(kWho, ": ", collective_name(kind), " #", seq, " on rank ", rank_, ": ",
               ncclGetErrorString(state)),
           true);
    }
    if (Clock::now() > deadline) {
      fail(Status::timeout, collective_name(kind), seq,
           cat(kWho, ": ", collective_name(kind), " #", seq, " on rank ", rank_,
               " was not even enqueued after ", format_seconds(options_.timeout),
               " (a peer rank is missing or stuck)"),
           true);
    }
    if (spin > 64) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  check();
}

// Waits for `event` on the host, bounded by the deadline (the watchdog also watches).
void NcclCommunicator::wait_event(cudaEvent_t event, CollectiveKind kind, int64_t seq) {
  const auto deadline = Clock::now() + options_.timeout;
  for (int spin = 0;; ++spin) {
    check();
    const cudaError_t e = cudaEventQuery(event);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) KILN_CUDA_CHECK(e);
    if (Clock::now() > deadline) {
      fail(Status::timeout, collective_name(kind), seq,
           cat(kWho, ": ", collective_name(kind), " #", seq, " on rank ", rank_,
               " did not complete within ", format_seconds(options_.timeout)),
           true);
    }
    if (spin > 64) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace impl

std::unique_ptr<Communicator> make_nccl_communicator(const LaunchInfo& launch, int device,
                                                     const CommOptions& options) {
  KILN_CHECK_ARG(device >= 0, "nccl communicator: device must be >= 0 (got ", device, ")");
  KILN_CUDA_CHECK(cudaSetDevice(device));
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (launch.world_size > 1 && std::getenv("NCCL_COMM_ID") != nullptr) {
    // NCCL's own bootstrap: every rank derives the same id from NCCL_COMM_ID.
    KILN_NCCL_CHECK(ncclGetUniqueId(&id));
  } else {
    std::string payload;
    if (launch.rank == 0) {
      KILN_NCCL_CHECK(ncclGetUniqueId(&id));
      payload.assign(reinterpret_cast<const char*>(&id), sizeof id);
    }
    payload = rendezvous_broadcast(launch, payload, options);
    KILN_CHECK(payload.size() == sizeof id, Status::io_error,
               "nccl communicator: the rendezvous delivered ", payload.size(),
               " bytes where an NCCL unique id has ", sizeof id);
    std::memcpy(&id, payload.data(), sizeof id);
  }
  return std::make_unique<impl::NcclCommunicator>(id, launch.rank, launch.world_size, device,
                                                  options);
}

}  // namespace kiln
