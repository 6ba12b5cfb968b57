// The in-process communicator: N ranks as threads of one process.
//
// A collective is a rendezvous: each rank posts its arguments in its slot and waits; the rank
// that arrives last (the leader) checks that every rank called the same collective with the same
// sizes, performs it for everyone, in rank order, and wakes the others. Host buffers are reduced
// by the leader's thread; device buffers by kernels the leader issues on the group's stream
// (in_process_cuda.cu). A rank waits at most the deadline for the others; past it the group
// fails, naming the ranks that never joined, every rank's collective throws, and
// CommOptions::on_failure is called once (so that a program can end even when the rank that never
// joined is stuck outside any collective, where nothing can reach it).
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <sstream>
#include <thread>

#include "kiln/limits.hpp"
#include "runtime/comm/comm_common.hpp"
#include "runtime/comm/in_process_cuda.hpp"
#include "runtime/comm/in_process_data.hpp"

namespace kiln {
namespace impl {
namespace {

constexpr const char* kWho = "in-process communicator";

using Slot = InProcessSlot;

class Group {
 public:
  Group(int world_size, BackendKind memory, const CommOptions& options)
      : world_(world_size), memory_(memory), options_(options) {
    slots_.resize(static_cast<std::size_t>(world_size));
    entered_.assign(static_cast<std::size_t>(world_size), 0);
    last_kind_.assign(static_cast<std::size_t>(world_size), CollectiveKind::barrier);
    present_.assign(static_cast<std::size_t>(world_size), false);
    if (memory == BackendKind::cuda) device_ = std::make_unique<InProcessDevice>(world_size);
  }

  int world_size() const { return world_; }
  BackendKind memory() const { return memory_; }

  // Runs one collective for `rank`; returns the reduced value for all_reduce_value. `sync`: the
  // rank's stream waits for the result (device memory).
  double run(int rank, Slot slot, bool sync) {
    std::unique_lock<std::mutex> lock(mutex_);
    throw_if_failed();
    const std::size_t r = static_cast<std::size_t>(rank);
    const int64_t seq = ++entered_[r];
    last_kind_[r] = slot.kind;
    if (device_ && slot.kind != CollectiveKind::barrier &&
        slot.kind != CollectiveKind::all_reduce_value) {
      try {
        device_->record_ready(rank, slot.stream);
      } catch (const Error& e) {
        fail(e.status(), cat(kWho, ": rank ", rank, ": ", e.message()));
        throw;
      }
    }
    slots_[r] = std::move(slot);
    present_[r] = true;
    if (++arrived_ == world_) {
      lead(seq);
    } else {
      const auto deadline = Clock::now() + options_.timeout;
      const bool done =
          cv_.wait_until(lock, deadline, [&] { return completed_ >= seq || failed_; });
      if (!done && !failed_) {
        const CollectiveKind kind = slots_[r].kind;
        fail(Status::timeout, timeout_message(rank, seq));
        const CommFailure report{rank, world_,          collective_name(kind),
                                 seq,  Status::timeout, failure_};
        lock.unlock();
        report_failure(report);
        lock.lock();
      }
      throw_if_failed();
    }
    const double value = value_;
    const CollectiveKind kind = slots_[r].kind;
    void* stream = slots_[r].stream;
    lock.unlock();
    if (device_ && sync && kind != CollectiveKind::barrier &&
        kind != CollectiveKind::all_reduce_value) {
      device_->wait_done(stream);
    }
    return value;
  }

  void wait_started(void* stream) {
    if (device_) device_->wait_done(stream);
  }

  void abort(int rank, const std::string& reason) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!failed_) {
      fail_locked(Status::internal_error, cat(kWho, ": rank ", rank, " left the group: ", reason));
      // The other ranks fail because this one did: its own error tells what happened.
      failure_remote_ = true;
    }
  }

  void check() {
    std::lock_guard<std::mutex> lock(mutex_);
    throw_if_failed();
  }

 private:
  // Holding the lock, with every rank's slot filled.
  void lead(int64_t seq) {
    try {
      validate(seq);
      perform();
    } catch (const Error& e) {
      if (!failed_) fail_locked(e.status(), e.message());
      arrived_ = 0;
      throw_if_failed();
    }
    arrived_ = 0;
    std::fill(present_.begin(), present_.end(), false);
    completed_ = seq;
    cv_.notify_all();
  }

  void validate(int64_t seq) {
    const Slot& a = slots_[0];
    for (int q = 1; q < world_; ++q) {
      const Slot& b = slots_[static_cast<std::size_t>(q)];
      std::string what;
      if (b.kind != a.kind) {
        what = cat("rank ", q, " called ", collective_name(b.kind), " where rank 0 called ",
                   collective_name(a.kind));
      } else if (b.count != a.count || b.dtype != a.dtype) {
        what =
            cat(collective_name(a.kind), ": rank ", q, " passed ", b.count, " x ",
                dtype_name(b.dtype), " where rank 0 passed ", a.count, " x ", dtype_name(a.dtype));
      } else if (b.op != a.op || b.root != a.root) {
        what = cat(collective_name(a.kind), ": rank ", q,
                   " passed another reduction or root than rank 0");
      } else if (b.bounds != a.bounds) {
        what = cat("reduce_scatter: rank ", q, " passed other bounds than rank 0");
      }
      if (!what.empty()) {
        KILN_CHECK_ARG(false, kWho, ": collective #", seq, " does not match across ranks: ", what);
      }
    }
  }

  void perform() {
    const Slot& a = slots_[0];
    value_ = 0;
    switch (a.kind) {
      case CollectiveKind::barrier:
        return;
      case CollectiveKind::all_reduce_value: {
        double acc = slots_[0].value;
        for (int q = 1; q < world_; ++q)
          acc = scalar_accumulate(acc, slots_[static_cast<std::size_t>(q)].value, a.op);
        value_ = scalar_finish(acc, a.op, world_);
        return;
      }
      default:
        break;
    }
    if (device_) {
      device_->begin();
      perform_device(*device_, slots_, world_);
      device_->end();
    } else {
      perform_host(slots_, world_, scratch_);
    }
  }

  std::string timeout_message(int rank, int64_t seq) const {
    std::ostringstream missing;
    int n = 0;
    for (int q = 0; q < world_; ++q) {
      if (present_[static_cast<std::size_t>(q)]) continue;
      const int64_t last = entered_[static_cast<std::size_t>(q)];
      missing << (n++ ? ", " : "") << "rank " << q << " (last joined collective #" << last;
      if (last > 0) missing << ", " << collective_name(last_kind_[static_cast<std::size_t>(q)]);
      missing << ")";
    }
    return cat(kWho, ": ", collective_name(slots_[static_cast<std::size_t>(rank)].kind), " #", seq,
               " timed out after ", format_seconds(options_.timeout), " on rank ", rank, ": ",
               missing.str(), " never joined it");
  }

  void fail(Status status, const std::string& message) { fail_locked(status, message); }
  // Without the lock: the handler may end the process, or call into the communicator.
  void report_failure(const CommFailure& report) const {
    if (!options_.on_failure) return;
    try {
      options_.on_failure(report);
    } catch (...) {
      // A handler that throws changes nothing: the collective throws the failure anyway.
    }
  }
  void fail_locked(Status status, const std::string& message) {
    if (failed_) return;
    failed_ = true;
    failure_status_ = status;
    failure_ = message;
    cv_.notify_all();
  }
  void throw_if_failed() const {
    if (failed_ && failure_remote_) throw RemoteError(failure_status_, failure_);
    if (failed_) throw_error(failure_status_, failure_, nullptr, nullptr, 0);
  }

  const int world_;
  const BackendKind memory_;
  const CommOptions options_;
  std::unique_ptr<InProcessDevice> device_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Slot> slots_;
  std::vector<int64_t> entered_;
  std::vector<CollectiveKind> last_kind_;
  std::vector<bool> present_;
  int arrived_ = 0;
  int64_t completed_ = 0;
  double value_ = 0;
  std::vector<char> scratch_;
  bool failed_ = false;
  bool failure_remote_ = false;
  Status failure_status_ = Status::ok;
  std::string failure_;
};

class InProcessCommunicator final : public SyncOrStartCommunicator {
 public:
  InProcessCommunicator(std::shared_ptr<Group> group, int rank)
      : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int world_size() const override { return group_->world_size(); }
  std::string description() const override {
    return cat("in-process (rank ", rank_, " of ", group_->world_size(), ", ",
               group_->memory() == BackendKind::cuda ? "device" : "host", " memory)");
  }

  void wait_started(void* stream) override { group_->wait_started(stream); }

  void all_gather(void* data, int64_t count, DType dtype, void* stream) override {
    check_count(kWho, "all_gather", count);
    group_->run(rank_, slot(CollectiveKind::all_gather, data, count, dtype, stream), true);
  }
  void broadcast(void* data, int64_t count, DType dtype, int root, void* stream) override {
    check_count(kWho, "broadcast", count);
    check_root(kWho, root, world_size());
    Slot s = slot(CollectiveKind::broadcast, data, count, dtype, stream);
    s.root = root;
    group_->run(rank_, std::move(s), true);
  }
  void barrier() override {
    Slot s;
    s.kind = CollectiveKind::barrier;
    group_->run(rank_, std::move(s), true);
  }
  double all_reduce_value(double value, ReduceOp op) override {
    Slot s;
    s.kind = CollectiveKind::all_reduce_value;
    s.op = op;
    s.value = value;
    return group_->run(rank_, std::move(s), true);
  }
  void check() override { group_->check(); }
  void abort(const std::string& reason) override { group_->abort(rank_, reason); }

 private:
  // A collective's slot: its kind, buffer and stream.
  static Slot slot(CollectiveKind kind, void* data, int64_t count, DType dtype, void* stream) {
    Slot s;
    s.kind = kind;
    s.data = data;
    s.count = count;
    s.dtype = dtype;
    s.stream = stream;
    return s;
  }

  void issue_all_reduce(void* data, int64_t count, DType dtype, ReduceOp op, void* stream,
                        bool sync) override {
    check_count(kWho, "all_reduce", count);
    check_reduce_dtype(kWho, dtype, false);
    Slot s = slot(CollectiveKind::all_reduce, data, count, dtype, stream);
    s.op = op;
    group_->run(rank_, std::move(s), sync);
  }
  void issue_reduce_scatter(void* data, std::span<const int64_t> bounds, DType dtype, ReduceOp op,
                            void* stream, bool sync) override {
    check_bounds(kWho, bounds, world_size());
    check_reduce_dtype(kWho, dtype, false);
    Slot s =
        slot(CollectiveKind::reduce_scatter, data, bounds.back() - bounds.front(), dtype, stream);
    s.bounds.assign(bounds.begin(), bounds.end());
    s.op = op;
    group_->run(rank_, std::move(s), sync);
  }

  std::shared_ptr<Group> group_;
  int rank_;
};

}  // namespace
}  // namespace impl

std::vector<std::unique_ptr<Communicator>> make_in_process_communicators(
    int world_size, BackendKind memory, const CommOptions& options) {
  KILN_CHECK_ARG(world_size >= 1, "in-process communicator: world_size must be >= 1 (got ",
                 world_size, ")");
  KILN_CHECK_ARG(options.timeout.count() > 0,
                 "in-process communicator: the timeout must be positive");
  auto group = std::make_shared<impl::Group>(world_size, memory, options);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < world_size; ++r)
    out.push_back(std::make_unique<impl::InProcessCommunicator>(group, r));
  return out;
}

}  // namespace kiln
