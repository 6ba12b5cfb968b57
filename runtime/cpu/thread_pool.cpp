#include "runtime/cpu/thread_pool.hpp"

#include <algorithm>
#include <system_error>

#include "errors/check.hpp"

namespace kiln::impl {

ThreadPool::ThreadPool(int threads, int fail_at) {
  const int n = std::max(1, threads);
  ranges_.resize(static_cast<std::size_t>(n));
  workers_.reserve(static_cast<std::size_t>(n - 1));
  for (int i = 1; i < n; ++i) {
    try {
      if (i == fail_at) {
        throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again));
      }
      workers_.emplace_back([this, i] { worker(i); });
    } catch (const std::exception& e) {
      // The started workers wait on this object's condition variable: stop and join them before
      // the constructor unwinds and destroys it.
      stop_and_join();
      throw_error(Status::internal_error,
                  cat("cpu backend: cannot start worker thread ", i, " of ", n - 1, " (", e.what(),
                      "); ask for fewer threads"),
                  nullptr, nullptr, 0);
    }
  }
}

ThreadPool::~ThreadPool() {
  stop_and_join();
}

void ThreadPool::stop_and_join() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_)
    t.join();
  workers_.clear();
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    std::pair<int64_t, int64_t> range;
    const Body* body = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      range = ranges_[static_cast<std::size_t>(index)];
      body = body_;
    }
    std::exception_ptr error;
    if (range.first < range.second) {
      try {
        (*body)(index, range.first, range.second);
      } catch (...) {
        error = std::current_exception();
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (error && !error_) error_ = error;
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const Body& body) {
  if (n <= 0) return;
  const int64_t max_parts = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  const int64_t parts = std::min<int64_t>(size(), max_parts);
  if (parts == 1 || workers_.empty()) {
    body(0, 0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (int64_t i = 0; i < size(); ++i) {
      const int64_t begin = i < parts ? n * i / parts : n;
      const int64_t end = i < parts ? n * (i + 1) / parts : n;
      ranges_[static_cast<std::size_t>(i)] = {begin, end};
    }
    body_ = &body;
    pending_ = static_cast<int>(workers_.size());
    error_ = nullptr;
    ++generation_;
  }
  start_cv_.notify_all();
  std::exception_ptr error;
  try {
    body(0, ranges_[0].first, ranges_[0].second);
  } catch (...) {
    error = std::current_exception();
  }
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  if (!error) error = error_;
  body_ = nullptr;
  if (error) std::rethrow_exception(error);
}

}  // namespace kiln::impl
