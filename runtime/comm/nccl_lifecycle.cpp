// The NCCL communicator's life: non-blocking creation polled against a deadline, the watchdog
// that retires collectives and fails the communicator when one is late or NCCL reports an error,
// and an orderly (bounded) shutdown.
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

namespace kiln::impl {

NcclCommunicator::NcclCommunicator(const ncclUniqueId& id, int rank, int world, int device,
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

NcclCommunicator::~NcclCommunicator() {
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    stop_ = true;
  }
  state_cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  shutdown();
  release_cuda();
}

void NcclCommunicator::init(const ncclUniqueId& id) {
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
void NcclCommunicator::watch() {
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
void NcclCommunicator::fail(Status status, const std::string& op, int64_t seq,
                            const std::string& message, bool throw_now) {
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

cudaEvent_t NcclCommunicator::take_event() {
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
void NcclCommunicator::shutdown() noexcept {
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

void NcclCommunicator::release_cuda() noexcept {
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

}  // namespace kiln::impl
