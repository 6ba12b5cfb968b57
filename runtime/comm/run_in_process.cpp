// kiln::run_in_process: N ranks of an in-process group as threads, a stuck rank left behind
// rather than waited for forever.
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kiln/limits.hpp"
#include "runtime/comm/comm_common.hpp"

namespace kiln {

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
