// Helpers of the communicator tests (comm_test.cpp: in-process ranks, comm_tcp_test.cpp: TCP
// between threads): deadlines, per-rank inputs, the rank-order reduction written out, and every
// collective checked bitwise against it.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "kiln/communicator.hpp"
#include "tests/common/support.hpp"

namespace kiln::test::comm {

using kiln::CommOptions;
using kiln::Communicator;
using kiln::DType;
using kiln::ReduceOp;
using namespace std::chrono_literals;

// Short deadlines where a test waits for one to pass; generous ones where it must not (a loaded
// CI machine may take a while to start a thread).
inline CommOptions quick(std::chrono::milliseconds timeout = 20s,
                         std::chrono::milliseconds rendezvous = 20s) {
  CommOptions o;
  o.timeout = timeout;
  o.rendezvous_timeout = rendezvous;
  return o;
}

// Each rank's input: fresh random values per rank (the same on every run of a seed).
template <typename T>
std::vector<std::vector<T>> inputs(int world, std::size_t n, uint64_t stream) {
  auto rng = kiln::test::make_rng(stream);
  std::uniform_real_distribution<double> d(-2.0, 2.0);
  std::vector<std::vector<T>> x(static_cast<std::size_t>(world), std::vector<T>(n));
  for (auto& v : x)
    for (auto& e : v)
      e = static_cast<T>(d(rng));
  return x;
}

// The rank-order reduction, written out: ((x0 + x1) + x2) ..., then / world for a mean.
template <typename T>
std::vector<T> expected(const std::vector<std::vector<T>>& x, ReduceOp op, std::size_t begin,
                        std::size_t end) {
  std::vector<T> out(x[0].begin() + static_cast<std::ptrdiff_t>(begin),
                     x[0].begin() + static_cast<std::ptrdiff_t>(end));
  for (std::size_t r = 1; r < x.size(); ++r) {
    for (std::size_t i = begin; i < end; ++i) {
      T& a = out[i - begin];
      a = op == ReduceOp::max ? std::max(a, x[r][i]) : static_cast<T>(a + x[r][i]);
    }
  }
  if (op == ReduceOp::mean) {
    for (T& a : out)
      a = a / static_cast<T>(x.size());
  }
  return out;
}

template <typename T>
inline bool same_bits(const T* a, const T* b, std::size_t n) {
  return std::memcmp(a, b, n * sizeof(T)) == 0;
}

template <typename T>
constexpr DType dtype_of() {
  return sizeof(T) == 8 ? DType::f64 : DType::f32;
}

// Every collective on `comms` (one per rank, each driven by its own thread) against the
// rank-order results computed here.
template <typename T>
void check_collectives(const std::function<void(int, std::function<void(Communicator&)>)>& on_ranks,
                       int world) {
  const std::size_t n = 1000;
  const DType dt = dtype_of<T>();
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::mean, ReduceOp::max}) {
    INFO("all_reduce " << kiln::reduce_op_name(op) << " " << kiln::dtype_name(dt));
    auto x = inputs<T>(world, n, 10 + static_cast<uint64_t>(op));
    const auto want = expected(x, op, 0, n);
    std::vector<int> ok(static_cast<std::size_t>(world), 0);
    on_ranks(world, [&](Communicator& c) {
      auto& mine = x[static_cast<std::size_t>(c.rank())];
      c.all_reduce(mine.data(), static_cast<int64_t>(n), dt, op, nullptr);
      ok[static_cast<std::size_t>(c.rank())] = same_bits(mine.data(), want.data(), n);
    });
    for (int r = 0; r < world; ++r)
      CHECK(ok[static_cast<std::size_t>(r)] == 1);
  }
  {
    INFO("reduce_scatter with ranges of different sizes, one empty");
    auto x = inputs<T>(world, n, 20);
    const auto y = x;
    std::vector<int64_t> bounds{5};
    for (int r = 0; r < world; ++r)
      bounds.push_back(bounds.back() + (r == 1 ? 0 : 17 * (r + 1)));
    std::vector<int> ok(static_cast<std::size_t>(world), 0);
    on_ranks(world, [&](Communicator& c) {
      auto& mine = x[static_cast<std::size_t>(c.rank())];
      c.start_reduce_scatter(mine.data(), bounds, dt, ReduceOp::sum, nullptr);
      c.wait_started(nullptr);
      const std::size_t b0 = static_cast<std::size_t>(bounds[static_cast<std::size_t>(c.rank())]);
      const std::size_t b1 =
          static_cast<std::size_t>(bounds[static_cast<std::size_t>(c.rank()) + 1]);
      const auto want = expected(y, ReduceOp::sum, b0, b1);
      ok[static_cast<std::size_t>(c.rank())] = same_bits(mine.data() + b0, want.data(), b1 - b0);
    });
    for (int r = 0; r < world; ++r)
      CHECK(ok[static_cast<std::size_t>(r)] == 1);
  }
  {
    INFO("all_gather, broadcast, all_reduce_value, barrier");
    const std::size_t block = 33;
    std::vector<std::vector<T>> g(static_cast<std::size_t>(world),
                                  std::vector<T>(block * static_cast<std::size_t>(world), T(-1)));
    for (int r = 0; r < world; ++r)
      for (std::size_t i = 0; i < block; ++i)
        g[static_cast<std::size_t>(r)][static_cast<std::size_t>(r) * block + i] =
            static_cast<T>(1000 * r + static_cast<int>(i));
    auto b = inputs<T>(world, 77, 30);
    const auto root_data = b[static_cast<std::size_t>(world - 1)];
    std::vector<double> sums(static_cast<std::size_t>(world)), means(sums), maxes(sums);
    on_ranks(world, [&](Communicator& c) {
      const std::size_t r = static_cast<std::size_t>(c.rank());
      c.all_gather(g[r].data(), static_cast<int64_t>(block), dt, nullptr);
      c.broadcast(b[r].data(), 77, dt, world - 1, nullptr);
      c.barrier();
      sums[r] = c.all_reduce_value(0.5 * static_cast<double>(r + 1), ReduceOp::sum);
      means[r] = c.all_reduce_value(static_cast<double>(r), ReduceOp::mean);
      maxes[r] = c.all_reduce_value(static_cast<double>(10 - r), ReduceOp::max);
    });
    for (int r = 0; r < world; ++r) {
      const std::size_t k = static_cast<std::size_t>(r);
      for (int q = 0; q < world; ++q)
        for (std::size_t i = 0; i < block; ++i)
          REQUIRE(g[k][static_cast<std::size_t>(q) * block + i] ==
                  static_cast<T>(1000 * q + static_cast<int>(i)));
      CHECK(same_bits(b[k].data(), root_data.data(), 77));
      CHECK(sums[k] == 0.25 * world * (world + 1));
      CHECK(means[k] == (world - 1) / 2.0);
      CHECK(maxes[k] == 10.0);
    }
  }
}

}  // namespace kiln::test::comm
