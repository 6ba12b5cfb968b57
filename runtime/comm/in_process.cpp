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

namespace kiln {
namespace impl {
namespace {

constexpr const char* kWho = "in-process communicator";

struct Slot {
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
      perform_device();
      device_->end();
    } else {
      perform_host();
    }
  }

  // Rank-order reduction of elements [begin, begin + n) of every rank's buffer into the buffers
  // of `outs`.
  void reduce_host(int64_t begin, int64_t n, const std::vector<int>& outs) {
    const Slot& a = slots_[0];
    if (n <= 0 || outs.empty()) return;
    const std::size_t bytes = bytes_of(n, a.dtype);
    scratch_.resize(bytes);
    std::memcpy(scratch_.data(), byte_ptr(slots_[0].data, begin, a.dtype), bytes);
    for (int q = 1; q < world_; ++q) {
      host_accumulate(scratch_.data(),
                      byte_ptr(slots_[static_cast<std::size_t>(q)].data, begin, a.dtype), n,
                      a.dtype, a.op);
    }
    host_finish(scratch_.data(), n, a.dtype, a.op, world_);
    for (int q : outs)
      std::memcpy(byte_ptr(slots_[static_cast<std::size_t>(q)].data, begin, a.dtype),
                  scratch_.data(), bytes);
  }

  void perform_host() {
    const Slot& a = slots_[0];
    const std::size_t row = bytes_of(a.count, a.dtype);
    switch (a.kind) {
      case CollectiveKind::all_reduce: {
        std::vector<int> all(static_cast<std::size_t>(world_));
        for (int q = 0; q < world_; ++q)
          all[static_cast<std::size_t>(q)] = q;
        reduce_host(0, a.count, all);
        return;
      }
      case CollectiveKind::reduce_scatter:
        for (int q = 0; q < world_; ++q) {
          const int64_t b0 = a.bounds[static_cast<std::size_t>(q)];
          reduce_host(b0, a.bounds[static_cast<std::size_t>(q) + 1] - b0, {q});
        }
        return;
      case CollectiveKind::all_gather:
        for (int q = 0; q < world_; ++q) {
          const char* block =
              byte_ptr(slots_[static_cast<std::size_t>(q)].data, q * a.count, a.dtype);
          for (int d = 0; d < world_; ++d) {
            if (d != q && row) {
              std::memcpy(byte_ptr(slots_[static_cast<std::size_t>(d)].data, q * a.count, a.dtype),
                          block, row);
            }
          }
        }
        return;
      case CollectiveKind::broadcast:
        for (int d = 0; d < world_; ++d) {
          if (d != a.root && row) {
            std::memcpy(slots_[static_cast<std::size_t>(d)].data,
                        slots_[static_cast<std::size_t>(a.root)].data, row);
          }
        }
        return;
      default:
        return;
    }
  }

  void perform_device() {
    const Slot& a = slots_[0];
    const std::size_t row = bytes_of(a.count, a.dtype);
    auto inputs = [&](int64_t begin) {
      std::vector<const void*> in(static_cast<std::size_t>(world_));
      for (int q = 0; q < world_; ++q)
        in[static_cast<std::size_t>(q)] =
            byte_ptr(slots_[static_cast<std::size_t>(q)].data, begin, a.dtype);
      return in;
    };
    switch (a.kind) {
      case CollectiveKind::all_reduce: {
        std::vector<void*> out(static_cast<std::size_t>(world_));
        for (int q = 0; q < world_; ++q)
          out[static_cast<std::size_t>(q)] = slots_[static_cast<std::size_t>(q)].data;
        device_->reduce(inputs(0), out, a.count, a.dtype, a.op);
        return;
      }
      case CollectiveKind::reduce_scatter:
        for (int q = 0; q < world_; ++q) {
          const int64_t b0 = a.bounds[static_cast<std::size_t>(q)];
          device_->reduce(inputs(b0),
                          {byte_ptr(slots_[static_cast<std::size_t>(q)].data, b0, a.dtype)},
                          a.bounds[static_cast<std::size_t>(q) + 1] - b0, a.dtype, a.op);
        }
        return;
      case CollectiveKind::all_gather:
        for (int q = 0; q < world_; ++q) {
          const char* block =
              byte_ptr(slots_[static_cast<std::size_t>(q)].data, q * a.count, a.dtype);
          for (int d = 0; d < world_; ++d) {
            if (d != q) {
              device_->copy(
                  byte_ptr(slots_[static_cast<std::size_t>(d)].data, q * a.count, a.dtype), block,
                  row);
            }
          }
        }
        return;
      case CollectiveKind::broadcast:
        for (int d = 0; d < world_; ++d) {
          if (d != a.root) {
            device_->copy(slots_[static_cast<std::size_t>(d)].data,
                          slots_[static_cast<std::size_t>(a.root)].data, row);
          }
        }
        return;
      default:
        return;
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

class InProcessCommunicator final : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<Group> group, int rank)
      : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int world_size() const override { return group_->world_size(); }
  std::string description() const override {
    return cat("in-process (rank ", rank_, " of ", group_->world_size(), ", ",
               group_->memory() == BackendKind::cuda ? "device" : "host", " memory)");
  }

  void all_reduce(void* data, int64_t count, DType dtype, ReduceOp op, void* stream) override {
    reduce(data, count, dtype, op, stream, true);
  }
  void start_all_reduce(void* data, int64_t count, DType dtype, ReduceOp op,
                        void* stream) override {
    reduce(data, count, dtype, op, stream, false);
  }
  void reduce_scatter(void* data, std::span<const int64_t> bounds, DType dtype, ReduceOp op,
                      void* stream) override {
    scatter(data, bounds, dtype, op, stream, true);
  }
  void start_reduce_scatter(void* data, std::span<const int64_t> bounds, DType dtype, ReduceOp op,
                            void* stream) override {
    scatter(data, bounds, dtype, op, stream, false);
  }
  void wait_started(void* stream) override { group_->wait_started(stream); }

  void all_gather(void* data, int64_t count, DType dtype, void* stream) override {
    check_count(kWho, "all_gather", count);
    Slot s;
    s.kind = CollectiveKind::all_gather;
    s.data = data;
    s.count = count;
    s.dtype = dtype;
    s.stream = stream;
    group_->run(rank_, std::move(s), true);
  }
  void broadcast(void* data, int64_t count, DType dtype, int root, void* stream) override {
    check_count(kWho, "broadcast", count);
    check_root(kWho, root, world_size());
    Slot s;
    s.kind = CollectiveKind::broadcast;
    s.data = data;
    s.count = count;
    s.dtype = dtype;
    s.root = root;
    s.stream = stream;
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
  void reduce(void* data, int64_t count, DType dtype, ReduceOp op, void* stream, bool sync) {
    check_count(kWho, "all_reduce", count);
    check_reduce_dtype(kWho, dtype, false);
    Slot s;
    s.kind = CollectiveKind::all_reduce;
    s.data = data;
    s.count = count;
    s.dtype = dtype;
    s.op = op;
    s.stream = stream;
    group_->run(rank_, std::move(s), sync);
  }
  void scatter(void* data, std::span<const int64_t> bounds, DType dtype, ReduceOp op, void* stream,
               bool sync) {
    check_bounds(kWho, bounds, world_size());
    check_reduce_dtype(kWho, dtype, false);
    Slot s;
    s.kind = CollectiveKind::reduce_scatter;
    s.data = data;
    s.count = bounds.back() - bounds.front();
    s.bounds.assign(bounds.begin(), bounds.end());
    s.dtype = dtype;
    s.op = op;
    s.stream = stream;
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

namespace {

// What the rank threads of run_in_process share. Owned jointly by the caller and every thread, so
// that a thread left running after run_in_process returned (see below) touches nothing freed.
struct RankThreads {
  std::vector<std::unique_ptr<Communicator>> comms;
  std::function<void(Communicator&)> body;
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::exception_ptr> errors;  // by rank
  std::vector<bool> done;
  int running = 0;
  int failed = 0;
};

void rank_main(const std::shared_ptr<RankThreads>& s, int r) {
  Communicator& c = *s->comms[static_cast<std::size_t>(r)];
  std::exception_ptr error;
  try {
    s->body(c);
  } catch (const std::exception& e) {
    error = std::current_exception();
    c.abort(e.what());
  } catch (...) {
    error = std::current_exception();
    c.abort("an exception that is not a std::exception");
  }
  std::lock_guard<std::mutex> lock(s->mutex);
  s->errors[static_cast<std::size_t>(r)] = error;
  s->done[static_cast<std::size_t>(r)] = true;
  --s->running;
  if (error) ++s->failed;
  s->cv.notify_all();
}

// An error that only repeats another rank's (RemoteError) yields to the rank's own.
std::exception_ptr pick_error(const std::vector<std::exception_ptr>& errors) {
  std::exception_ptr remote;
  for (const std::exception_ptr& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const RemoteError&) {
      if (!remote) remote = e;
    } catch (...) {
      return e;
    }
  }
  return remote;
}

}  // namespace

void run_in_process(int world_size, BackendKind memory, const CommOptions& options,
                    const std::function<void(Communicator&)>& body) {
  check_thread_count(world_size, "run_in_process: world_size");
  auto s = std::make_shared<RankThreads>();
  s->comms = make_in_process_communicators(world_size, memory, options);
  s->body = body;
  s->errors.resize(static_cast<std::size_t>(world_size));
  s->done.assign(static_cast<std::size_t>(world_size), false);
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size; ++r) {
    try {
      {
        std::lock_guard<std::mutex> lock(s->mutex);
        ++s->running;
      }
      threads.emplace_back([s, r] { rank_main(s, r); });
    } catch (const std::exception& e) {
      // The ranks started fail at their first collective instead of waiting for this one.
      std::lock_guard<std::mutex> lock(s->mutex);
      --s->running;
      s->errors[static_cast<std::size_t>(r)] = std::make_exception_ptr(
          Error(Status::internal_error,
                impl::cat("run_in_process: cannot start rank ", r, "'s thread: ", e.what())));
      ++s->failed;
      s->comms[static_cast<std::size_t>(r)]->abort("its thread could not be started");
      break;
    }
  }
  // Every rank ends, or one fails: the others then fail at their next collective (the group is
  // aborted) and end within a deadline; a rank that does not (blocked outside any collective, where
  // nothing can reach it) is left running, detached, and named in the error.
  std::unique_lock<std::mutex> lock(s->mutex);
  s->cv.wait(lock, [&] { return s->running == 0 || s->failed > 0; });
  if (s->running > 0) {
    s->cv.wait_for(lock, options.timeout, [&] { return s->running == 0; });
  }
  std::string stuck;
  for (std::size_t r = 0; r < threads.size(); ++r) {
    if (s->done[r]) {
      threads[r].join();
    } else {
      stuck += impl::cat(stuck.empty() ? "" : ", ", r);
      threads[r].detach();
    }
  }
  const std::exception_ptr error = pick_error(s->errors);
  lock.unlock();
  if (stuck.empty()) {
    if (error) std::rethrow_exception(error);
    return;
  }
  std::string what = "an exception that is not a std::exception";
  Status status = Status::internal_error;
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    what = e.message();
    status = e.status();
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  throw Error(status, impl::cat(what, " (rank(s) ", stuck, " did not end within ",
                                impl::format_seconds(options.timeout),
                                " after the failure and were left running)"));
}

}  // namespace kiln
