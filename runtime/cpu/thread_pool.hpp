// A fixed set of worker threads for the CPU backend's loops. Started once with the backend, so a
// training step creates no threads; parallel_for blocks until every chunk has run. Chunks are
// assigned statically (chunk i always covers the same range), so results never depend on timing.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln::impl {

class ThreadPool {
 public:
  // `threads` total workers including the caller (1: everything runs on the calling thread).
  // When the system refuses a thread (a pids limit, memory), the workers already started are
  // stopped and joined and kiln::Error names the thread that failed and why. `fail_at` (tests
  // only): creating worker `fail_at` fails as if the system had refused it.
  explicit ThreadPool(int threads, int fail_at = -1);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // The body of a parallel loop: body(part, begin, end) with part < size() distinct per range.
  using Body = std::function<void(int, int64_t, int64_t)>;

  // Runs body over [0, n) split into at most size() contiguous ranges, of which the calling
  // thread takes the first (part 0). Ranges smaller than `grain` are not split further. An
  // exception thrown by a body is rethrown here after every range finished.
  void parallel_for(int64_t n, int64_t grain, const Body& body);

 private:
  void worker(int index);
  void stop_and_join() noexcept;

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_cv_, done_cv_;
  const Body* body_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>> ranges_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace kiln::impl
