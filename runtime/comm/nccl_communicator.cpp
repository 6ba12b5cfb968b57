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

namespace kiln {
namespace impl {
namespace {

constexpr const char* kWho = "nccl communicator";

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

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const ncclUniqueId& id, int rank, int world, int device,
                   const CommOptions& options)
      : rank_(rank), world_(world), device_(device), options_(options) {
    KILN_CHECK_ARG(options.timeout.count() > 0 && options.rendezvous_timeout.count() > 0, kWho,
                   ": the timeouts must be positive");
    KILN_CUDA_CHECK(cudaSetDevice(device));
    try {
      int least = 0, greatest = 0;
      KILN_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
      // High priority: the reductions should not queue behind the compute stream's backlog.
      KILN_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, greatest));
      KILN_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
      KILN_CUDA_CHECK(cudaEventCreateWithFlags(&marker_, cudaEventDisableTiming));
      KILN_CUDA_CHECK(cudaMalloc(&scalar_device_, sizeof(double)));
      KILN_CUDA_CHECK(cudaMallocHost(&scalar_host_, sizeof(double)));
      init(id);
    } catch (...) {
      release_cuda();
      throw;
    }
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(state_mutex_);
      stop_ = true;
    }
    state_cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    shutdown();
    release_cuda();
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  std::string description() const override {
    return cat("nccl (rank ", rank_, " of ", world_, ", device ", device_, ")");
  }

  void all_reduce(void* data, int64_t count, DType dtype, ReduceOp op, void* stream) override {
    issue_all_reduce(data, count, dtype, op, stream, true);
  }
  void start_all_reduce(void* data, int64_t count, DType dtype, ReduceOp op,
                        void* stream) override {
    issue_all_reduce(data, count, dtype, op, stream, false);
  }
  void reduce_scatter(void* data, std::span<const int64_t> bounds, DType dtype, ReduceOp op,
                      void* stream) override {
    issue_reduce_scatter(data, bounds, dtype, op, stream, true);
  }
  void start_reduce_scatter(void* data, std::span<const int64_t> bounds, DType dtype, ReduceOp op,
                            void* stream) override {
    issue_reduce_scatter(data, bounds, dtype, op, stream, false);
  }

  void all_gather(void* data, int64_t count, DType dtype, void* stream) override {
    check_count(kWho, "all_gather", count);
    issue(CollectiveKind::all_gather, bytes_of(count, dtype) * world_, stream, true, [&] {
      // In place: this rank's block is already where the gathered result puts it.
      return ncclAllGather(byte_ptr(data, rank_ * count, dtype), data, static_cast<size_t>(count),
                           nccl_type(dtype), comm_, stream_);
    });
  }

  void broadcast(void* data, int64_t count, DType dtype, int root, void* stream) override {
    check_count(kWho, "broadcast", count);
    check_root(kWho, root, world_);
    issue(CollectiveKind::broadcast, bytes_of(count, dtype), stream, true, [&] {
      return ncclBroadcast(data, data, static_cast<size_t>(count), nccl_type(dtype), root, comm_,
                           stream_);
    });
  }

  void barrier() override { all_reduce_value(0.0, ReduceOp::sum); }

  double all_reduce_value(double value, ReduceOp op) override {
    *scalar_host_ = value;
    const int64_t seq =
        issue(CollectiveKind::all_reduce_value, sizeof(double), nullptr, false, [&] {
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

  void wait_started(void* stream) override {
    check();
    KILN_CUDA_CHECK(cudaEventRecord(marker_, stream_));
    KILN_CUDA_CHECK(cudaStreamWaitEvent(cs(stream), marker_, 0));
  }

  void check() override {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (failed_) throw_error(failure_.status, failure_.message, nullptr, nullptr, 0);
  }

  void abort(const std::string& reason) override {
    fail(Status::internal_error, "abort", seq_.load(),
         cat(kWho, ": rank ", rank_, " aborted: ", reason), false);
  }

 private:
  struct Pending {
    int64_t seq;
    CollectiveKind kind;
    std::size_t bytes;
    cudaEvent_t done;
    Clock::time_point deadline;
  };

  void issue_all_reduce(void* data, int64_t count, DType dtype, ReduceOp op, void* stream,
                        bool sync) {
    check_count(kWho, "all_reduce", count);
    check_reduce_dtype(kWho, dtype, true);
    issue(CollectiveKind::all_reduce, bytes_of(count, dtype), stream, sync, [&] {
      return ncclAllReduce(data, data, static_cast<size_t>(count), nccl_type(dtype), nccl_op(op),
                           comm_, stream_);
    });
  }

  void issue_reduce_scatter(void* data, std::span<const int64_t> bounds, DType dtype, ReduceOp op,
                            void* stream, bool sync) {
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
              return ncclReduceScatter(
                  byte_ptr(data, bounds[0], dtype),
                  byte_ptr(data, bounds[static_cast<std::size_t>(rank_)], dtype),
                  static_cast<size_t>(count), nccl_type(dtype), nccl_op(op), comm_, stream_);
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
  int64_t issue(CollectiveKind kind, std::size_t bytes, void* stream, bool sync, Call&& call) {
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
  void wait_enqueued(CollectiveKind kind, int64_t seq, Clock::time_point deadline) {
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
  void wait_event(cudaEvent_t event, CollectiveKind kind, int64_t seq) {
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

  void init(const ncclUniqueId& id) {
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const ncclResult_t r = ncclCommInitRankConfig(&comm_, world_, id, rank_, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      if (comm_) ncclCommAbort(comm_);
      comm_ = nullptr;
      KILN_CHECK(false, Status::nccl_error, kWho, ": rank ", rank_, " of ", world_,
                 ": ncclCommInitRankConfig failed: ", ncclGetErrorString(r), " (",
                 ncclGetLastError(nullptr), ")");
    }
    const auto deadline = Clock::now() + options_.rendezvous_timeout;
    for (;;) {
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state == ncclSuccess) return;
      if (state != ncclInProgress || Clock::now() > deadline) {
        const std::string why =
            state != ncclInProgress
                ? cat("failed: ", ncclGetErrorString(state), " (", ncclGetLastError(comm_), ")")
                : cat("did not complete within ", format_seconds(options_.rendezvous_timeout),
                      " (does every rank run, with a distinct device, and reach the others?)");
        ncclCommAbort(comm_);
        comm_ = nullptr;
        KILN_CHECK(false, state != ncclInProgress ? Status::nccl_error : Status::timeout, kWho,
                   ": rank ", rank_, " of ", world_, " on device ", device_, ": initialisation ",
                   why);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  // The watchdog: retires completed collectives, fails the communicator when the oldest one
  // passes its deadline or NCCL reports an asynchronous error.
  void watch() {
    cudaSetDevice(device_);
    const auto tick = std::min<std::chrono::milliseconds>(
        std::chrono::milliseconds(50), options_.timeout / 4 + std::chrono::milliseconds(1));
    std::unique_lock<std::mutex> lock(state_mutex_);
    while (!stop_ && !failed_) {
      state_cv_.wait_for(lock, tick);
      if (stop_ || failed_) break;
      std::string problem;
      Status status = Status::ok;
      int64_t seq = last_seq_;
      CollectiveKind kind = last_kind_;
      while (!pending_.empty()) {
        Pending& p = pending_.front();
        const cudaError_t e = cudaEventQuery(p.done);
        if (e == cudaSuccess) {
          free_events_.push_back(p.done);
          pending_.pop_front();
          continue;
        }
        if (e != cudaErrorNotReady) {
          cudaGetLastError();
          status = Status::cuda_error;
          problem = cat("failed on the device: ", cudaGetErrorString(e));
        } else if (Clock::now() > p.deadline) {
          status = Status::timeout;
          problem = cat("did not complete within ", format_seconds(options_.timeout),
                        " (a peer rank is missing, stuck or dead; ", pending_.size(),
                        " collective(s) outstanding)");
        }
        seq = p.seq;
        kind = p.kind;
        if (!problem.empty()) {
          problem = cat(kWho, ": ", collective_name(kind), " #", seq, " (", p.bytes,
                        " bytes) on rank ", rank_, " of ", world_, " ", problem);
        }
        break;
      }
      lock.unlock();
      if (problem.empty()) {
        ncclResult_t async = ncclSuccess;
        {
          std::lock_guard<std::mutex> nccl(nccl_mutex_);
          if (!aborted_) ncclCommGetAsyncError(comm_, &async);
        }
        if (async != ncclSuccess && async != ncclInProgress) {
          status = Status::nccl_error;
          problem = cat(kWho, ": rank ", rank_, " of ", world_,
                        ": NCCL reported an asynchronous error during or after ",
                        seq > 0 ? collective_name(kind) : "creation", " #", seq, ": ",
                        ncclGetErrorString(async));
        }
      }
      if (!problem.empty()) fail(status, collective_name(kind), seq, problem, false);
      lock.lock();
    }
  }

  // Records the first failure, aborts the NCCL communicator, calls the handler; throws when
  // `throw_now` (the calling thread is a collective that must not continue).
  void fail(Status status, const std::string& op, int64_t seq, const std::string& message,
            bool throw_now) {
    bool first = false;
    CommFailure f;
    {
      std::lock_guard<std::mutex> lock(state_mutex_);
      if (!failed_) {
        failed_ = true;
        first = true;
        failure_ = {rank_, world_, op, seq, status, message};
      }
      f = failure_;
    }
    state_cv_.notify_all();
    if (first) {
      {
        std::lock_guard<std::mutex> lock(nccl_mutex_);
        if (!aborted_ && comm_) ncclCommAbort(comm_);
        aborted_ = true;
      }
      if (options_.on_failure) options_.on_failure(f);
    }
    if (throw_now) throw_error(f.status, f.message, nullptr, nullptr, 0);
  }

  cudaEvent_t take_event() {
    {
      std::lock_guard<std::mutex> lock(state_mutex_);
      if (!free_events_.empty()) {
        cudaEvent_t e = free_events_.back();
        free_events_.pop_back();
        return e;
      }
    }
    cudaEvent_t e = nullptr;
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    all_events_.push_back(e);
    return e;
  }

  // Orderly end: let the outstanding work finish (bounded), then finalise and destroy; abort
  // whatever cannot end in time. Never throws.
  void shutdown() noexcept {
    if (aborted_ || !comm_) return;
    const auto deadline = Clock::now() + std::min<std::chrono::milliseconds>(
                                             options_.timeout, std::chrono::seconds(60));
    bool clean = cudaEventRecord(marker_, stream_) == cudaSuccess;
    while (clean) {
      const cudaError_t e = cudaEventQuery(marker_);
      if (e == cudaSuccess) break;
      if (e != cudaErrorNotReady || Clock::now() > deadline) clean = false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (clean) {
      ncclResult_t r = ncclCommFinalize(comm_);
      while (r == ncclSuccess || r == ncclInProgress) {
        ncclResult_t state = ncclSuccess;
        ncclCommGetAsyncError(comm_, &state);
        if (state == ncclSuccess) break;
        if (state != ncclInProgress || Clock::now() > deadline) {
          r = state == ncclInProgress ? ncclInternalError : state;
          break;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      clean = r == ncclSuccess || r == ncclInProgress;
    }
    if (clean) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
    comm_ = nullptr;
    aborted_ = true;
  }

  void release_cuda() noexcept {
    for (cudaEvent_t e : all_events_)
      cudaEventDestroy(e);
    all_events_.clear();
    if (ready_) cudaEventDestroy(ready_);
    if (marker_) cudaEventDestroy(marker_);
    if (scalar_device_) cudaFree(scalar_device_);
    if (scalar_host_) cudaFreeHost(scalar_host_);
    if (stream_) cudaStreamDestroy(stream_);
    ready_ = marker_ = nullptr;
    scalar_device_ = nullptr;
    scalar_host_ = nullptr;
    stream_ = nullptr;
  }

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

}  // namespace
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
