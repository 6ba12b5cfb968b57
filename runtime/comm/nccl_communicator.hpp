// Internal: the NCCL communicator's class. Its definitions by job: nccl_communicator.cpp (the
// collectives and how they are issued and awaited), nccl_lifecycle.cpp (creation, the watchdog,
// failure and shutdown).
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "runtime/comm/comm_common.hpp"

namespace kiln::impl {

class NcclCommunicator final : public SyncOrStartCommunicator {
 public:
  static constexpr const char* kWho = "nccl communicator";

  NcclCommunicator(const ncclUniqueId& id, int rank, int world, int device,
                   const CommOptions& options);

  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  std::string description() const override;

  void all_gather(void* data, int64_t count, DType dtype, void* stream) override;

  void broadcast(void* data, int64_t count, DType dtype, int root, void* stream) override;

  void barrier() override { all_reduce_value(0.0, ReduceOp::sum); }

  double all_reduce_value(double value, ReduceOp op) override;

  void wait_started(void* stream) override;

  void check() override;

  void abort(const std::string& reason) override;

 private:
  struct Pending {
    int64_t seq;
    CollectiveKind kind;
    std::size_t bytes;
    cudaEvent_t done;
    Clock::time_point deadline;
  };

  void issue_all_reduce(void* data, int64_t count, DType dtype, ReduceOp op, void* stream,
                        bool sync) override;

  void issue_reduce_scatter(void* data, std::span<const int64_t> bounds, DType dtype, ReduceOp op,
                            void* stream, bool sync) override;

  // Issues one collective: orders the communicator's stream after `stream`'s work, calls `call`
  // under the NCCL lock, waits (bounded) until NCCL has enqueued it, records its completion for
  // the watchdog and, when `sync`, orders `stream` after it. Returns its sequence number.
  template <typename Call>
  int64_t issue(CollectiveKind kind, std::size_t bytes, void* stream, bool sync, Call&& call);

  // Non-blocking NCCL: a call may return before its work is on the stream; ncclCommGetAsyncError
  // leaves ncclInProgress once it is (or once it failed).
  void wait_enqueued(CollectiveKind kind, int64_t seq, Clock::time_point deadline);

  // Waits for `event` on the host, bounded by the deadline (the watchdog also watches).
  void wait_event(cudaEvent_t event, CollectiveKind kind, int64_t seq);

  void init(const ncclUniqueId& id);

  // The watchdog: retires completed collectives, fails the communicator when the oldest one
  // passes its deadline or NCCL reports an asynchronous error.
  void watch();

  // Records the first failure, aborts the NCCL communicator, calls the handler; throws when
  // `throw_now` (the calling thread is a collective that must not continue).
  void fail(Status status, const std::string& op, int64_t seq, const std::string& message,
            bool throw_now);

  cudaEvent_t take_event();

  // Orderly end: let the outstanding work finish (bounded), then finalise and destroy; abort
  // whatever cannot end in time. Never throws.
  void shutdown() noexcept;

  void release_cuda() noexcept;

  const int rank_, world_, device_;
  const CommOptions options_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr, marker_ = nullptr;
  double* scalar_device_ = nullptr;
  double* scalar_host_ = nullptr;
  std::atomic<int64_t> seq_{0};  // collectives issued (the calling thread; read by abort())

  std::mutex nccl_mutex_;  // every call into NCCL with comm_; taken before state_mutex_
  bool aborted_ = false;   // guarded by nccl_mutex_

  std::mutex state_mutex_;
  std::condition_variable state_cv_;
  std::deque<Pending> pending_;
  std::vector<cudaEvent_t> free_events_, all_events_;
  CollectiveKind last_kind_ = CollectiveKind::barrier;  // the last collective issued
  int64_t last_seq_ = 0;
  bool stop_ = false;
  bool failed_ = false;
  CommFailure failure_;
  std::thread watchdog_;
};

}  // namespace kiln::impl
