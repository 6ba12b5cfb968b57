// kiln::Communicator: the training schedule's only way to talk to other ranks (data
// parallelism), and the implementations kiln ships:
//
//   SingleRankCommunicator   one rank: every collective is the identity.
//   NCCL                     one process per GPU, device memory (make_nccl_communicator, or
//                            make_communicator in kiln/launch.hpp, which also finds the rank).
//   TCP                      one process per rank, host memory: the cpu backend across processes
//                            (make_tcp_communicator). A star through rank 0; a reference path,
//                            simple and exact rather than fast.
//   in-process               N ranks as threads of one process (make_in_process_communicators,
//                            run_in_process): host memory for the cpu backend, or the device
//                            memory of one GPU holding N logical ranks.
//
// Determinism. The in-process and TCP communicators reduce in rank order (x0 + x1 + ... then / N
// for a mean) with the element type's own arithmetic, so their results are bitwise reproducible
// and equal to each other; every rank receives the same bits. NCCL's order depends on its
// algorithm, but every rank receives the same result.
//
// Failure model. Every collective has a deadline (CommOptions::timeout, default 10 minutes).
// The synchronous communicators (in-process, TCP) throw kiln::Error from the collective that
// missed it: Status::timeout, naming the operation, its sequence number and the rank(s) that did
// not join. NCCL's collectives are asynchronous, so a watchdog thread watches each one; when one
// passes its deadline or NCCL reports an asynchronous error, the watchdog aborts the NCCL
// communicator (which releases kernels stuck waiting for a peer), records the failure so that
// every later call throws it, and calls CommOptions::on_failure once, from the watchdog thread.
// The library never prints and never exits: a program decides what a failure means. A trainer
// that should die with the job (so that mpirun / srun / torchrun tear the other ranks down)
// installs a handler that reports the failure and ends the process with a non-zero status
// (train_gpt does, with std::_Exit(1) after printing CommFailure::message).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/error.hpp"
#include "kiln/export.h"
#include "kiln/model.hpp"

namespace kiln {

enum class ReduceOp {
  sum,
  mean,  // the sum divided by the world size
  max,
};
KILN_API const char* reduce_op_name(ReduceOp op);

// Thrown by a rank whose collective failed because another rank failed (that rank left the group,
// or could not write its part of a checkpoint): the other rank's own error tells what happened,
// and run_in_process reports it in preference to this one.
class KILN_API RemoteError : public Error {
 public:
  using Error::Error;
};

// What a communicator reports when a collective fails or misses its deadline.
struct CommFailure {
  int rank = 0;  // the reporting rank
  int world_size = 0;
  std::string operation;       // "all_reduce", "reduce_scatter", "init", ...
  int64_t sequence = 0;        // 1-based number of the collective on this communicator
  Status status = Status::ok;  // timeout, nccl_error, cuda_error, ...
  std::string message;         // the whole story, one line, naming rank, operation and sequence
};

struct CommOptions {
  // Deadline of every collective, from the moment it is issued.
  std::chrono::milliseconds timeout = std::chrono::minutes(10);
  // Deadline of the creation: every rank joining the rendezvous and the communicator's setup.
  std::chrono::milliseconds rendezvous_timeout = std::chrono::minutes(10);
  // Called once when an asynchronous communicator (NCCL) fails, or when a collective of the
  // in-process communicator misses its deadline (the rank that never joined may be stuck where
  // nothing reaches it; only the program can end it); see the failure model above.
  std::function<void(const CommFailure&)> on_failure;
};

// Every collective is called by every rank in the same order with the same sizes (a rank that
// calls a different operation or size is reported by the communicators that can see it).
//
// Memory and streams: `data` is host memory for the cpu-side communicators (in-process on cpu,
// TCP) and device memory for NCCL and the in-process communicator on a GPU; `stream` is the
// cudaStream_t (nullptr: the legacy default stream) the data is ordered on, ignored for host
// memory. A collective runs after the work issued on `stream` before it, and the work issued on
// `stream` after it sees its result; the host does not wait (except for host memory, where the
// call returns when done). Only the start_* variants leave `stream` free to run ahead.
//
// Element types: reductions take f32 and f64 (NCCL also bf16); all_gather and broadcast move
// any type.
class KILN_API Communicator {
 public:
  virtual ~Communicator();

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // For people: e.g. "nccl (rank 3 of 8, device 3)".
  virtual std::string description() const = 0;

  // data (count) := reduction over the ranks of data (count), in place.
  virtual void all_reduce(void* data, int64_t count, DType dtype, ReduceOp op, void* stream) = 0;
  // In place over the elements [bounds[0], bounds[world_size]) of data: rank r's range
  // [bounds[r], bounds[r + 1]) (bounds non-decreasing, world_size + 1 offsets in elements;
  // ranges may be empty and of different sizes) receives the reduction over the ranks of that
  // range. A rank's elements outside its own range are left unspecified.
  virtual void reduce_scatter(void* data, std::span<const int64_t> bounds, DType dtype, ReduceOp op,
                              void* stream) = 0;
  // In place: data holds world_size blocks of `count` elements; rank r contributes block r and
  // every rank receives every block.
  virtual void all_gather(void* data, int64_t count, DType dtype, void* stream) = 0;
  // data (count) := rank `root`'s data (count).
  virtual void broadcast(void* data, int64_t count, DType dtype, int root, void* stream) = 0;
  // Returns when every rank has called it (host-side; device work is not waited for).
  virtual void barrier() = 0;
  // The reduction over the ranks of one host value; waits.
  virtual double all_reduce_value(double value, ReduceOp op) = 0;

  // Overlap with compute: as all_reduce / reduce_scatter, started after the work issued so far on
  // `stream`, but `stream` does not wait for them: the work issued on it afterwards runs
  // alongside. `data` must not be touched until wait_started(stream) has ordered the rest of
  // `stream` after every operation started so far. Communicators without a stream of their own
  // run them synchronously.
  virtual void start_all_reduce(void* data, int64_t count, DType dtype, ReduceOp op, void* stream);
  virtual void start_reduce_scatter(void* data, std::span<const int64_t> bounds, DType dtype,
                                    ReduceOp op, void* stream);
  virtual void wait_started(void* stream);

  // Throws the recorded failure (see the failure model), if there is one.
  virtual void check();
  // Tears the communicator down after an error on this rank: any collective of any rank of the
  // group that is waiting, or comes later, fails instead of waiting for this rank. Idempotent.
  virtual void abort(const std::string& reason);
};

// One rank: averaging over one rank is the identity, so nothing is done.
class KILN_API SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string description() const override { return "single rank"; }
  void all_reduce(void*, int64_t, DType, ReduceOp, void*) override {}
  void reduce_scatter(void*, std::span<const int64_t> bounds, DType, ReduceOp, void*) override;
  void all_gather(void*, int64_t, DType, void*) override {}
  void broadcast(void*, int64_t, DType, int root, void*) override;
  void barrier() override {}
  double all_reduce_value(double value, ReduceOp) override { return value; }
};

// ---- in-process ranks -----------------------------------------------------------------------

// `world_size` communicators sharing one group, rank r at index r; each is used from its own
// thread. `memory`: BackendKind::cpu for host buffers, BackendKind::cuda for device buffers of
// the device current on the calling threads (one device for the whole group: N logical ranks on
// one GPU; at most 64 of them). Collectives wait at most options.timeout for every rank to join,
// then throw Status::timeout naming the ranks that did not.
KILN_API std::vector<std::unique_ptr<Communicator>> make_in_process_communicators(
    int world_size, BackendKind memory = BackendKind::cpu, const CommOptions& options = {});

// Runs body(communicator) on world_size new threads, rank r on the r-th, and waits for them all.
// When a rank throws, its communicator is aborted so that the other ranks fail at their next
// collective instead of waiting out the deadline; then the error is rethrown: a rank's own error
// in preference to a RemoteError that only repeats it. A rank that has not ended options.timeout
// after the first failure (blocked outside any collective, where nothing can reach it) is not
// waited for: its thread is detached, still running, and the error names it. The caller should
// then end the process soon (as train_gpt does): the detached thread still uses `body`'s
// captures. world_size lies in [1, limits::kMaxThreads].
KILN_API void run_in_process(int world_size, BackendKind memory, const CommOptions& options,
                             const std::function<void(Communicator&)>& body);

}  // namespace kiln
