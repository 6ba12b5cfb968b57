// The in-process communicators: collectives against rank-order sums computed here (bitwise),
// their deadline naming the rank that never joined, mismatches, a failing rank, and argument
// checks. TCP between threads is in comm_tcp_test.cpp, launcher environments in launch_test.cpp.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "kiln/communicator.hpp"
#include "tests/cpu/comm_support.hpp"

using kiln::BackendKind;
using namespace kiln::test::comm;  // CommOptions, Communicator, DType, ReduceOp, 1s ...

namespace {

void in_process_ranks(int world, const std::function<void(Communicator&)>& body) {
  kiln::run_in_process(world, BackendKind::cpu, quick(), body);
}

}  // namespace

TEST_CASE("in-process collectives reduce in rank order, bitwise, on every rank", "[comm]") {
  for (int world : {1, 2, 3, 5}) {
    INFO("world " << world);
    check_collectives<float>(in_process_ranks, world);
    check_collectives<double>(in_process_ranks, world);
  }
}

TEST_CASE("an in-process rank that never joins is named when the deadline passes", "[comm]") {
  auto comms = kiln::make_in_process_communicators(3, BackendKind::cpu, quick(1000ms));
  std::vector<std::string> messages(3);
  std::vector<kiln::Status> statuses(3, kiln::Status::ok);
  std::vector<float> data(3 * 8, 1.0f);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      try {
        comms[static_cast<std::size_t>(r)]->barrier();  // #1: everyone
        comms[static_cast<std::size_t>(r)]->all_reduce(data.data() + 8 * r, 8, DType::f32,
                                                       ReduceOp::sum, nullptr);
      } catch (const kiln::Error& e) {
        messages[static_cast<std::size_t>(r)] = e.message();
        statuses[static_cast<std::size_t>(r)] = e.status();
      }
    });
  }
  comms[2]->barrier();  // rank 2 joins the first collective, then never the second
  for (auto& t : threads)
    t.join();
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(waited < 5.0);
  for (int r = 0; r < 2; ++r) {
    INFO(messages[static_cast<std::size_t>(r)]);
    CHECK(statuses[static_cast<std::size_t>(r)] == kiln::Status::timeout);
    CHECK_THAT(messages[static_cast<std::size_t>(r)],
               Catch::Contains("all_reduce #2") && Catch::Contains("rank 2") &&
                   Catch::Contains("never joined") && !Catch::Contains("rank 0 (") &&
                   !Catch::Contains("rank 1 ("));
  }
  // The late rank finds the group failed instead of waiting.
  try {
    comms[2]->all_reduce(data.data() + 16, 8, DType::f32, ReduceOp::sum, nullptr);
    FAIL("no error");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::timeout);
    CHECK_THAT(e.message(), Catch::Contains("rank 2"));
  }
}

TEST_CASE("in-process collectives that differ across ranks are reported, naming the rank",
          "[comm]") {
  std::vector<float> buf(4 * 3, 0.0f);
  try {
    in_process_ranks(3, [&](Communicator& c) {
      float* mine = buf.data() + 4 * c.rank();
      if (c.rank() == 1) {
        c.all_gather(mine, 1, DType::f32, nullptr);
      } else {
        c.all_reduce(mine, 3, DType::f32, ReduceOp::sum, nullptr);
      }
    });
    FAIL("no error");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::invalid_argument);
    CHECK_THAT(e.message(),
               Catch::Contains("rank 1 called all_gather where rank 0 called all_reduce"));
  }
  try {
    in_process_ranks(2, [&](Communicator& c) {
      c.all_reduce(buf.data() + 4 * c.rank(), c.rank() == 0 ? 3 : 4, DType::f32, ReduceOp::sum,
                   nullptr);
    });
    FAIL("no error");
  } catch (const kiln::Error& e) {
    CHECK_THAT(e.message(), Catch::Contains("rank 1 passed 4 x f32 where rank 0 passed 3 x f32"));
  }
}

TEST_CASE("a rank that fails makes the others fail at once, and its error is the one rethrown",
          "[comm]") {
  const auto start = std::chrono::steady_clock::now();
  try {
    kiln::run_in_process(4, BackendKind::cpu, quick(60s), [](Communicator& c) {
      if (c.rank() == 2) throw std::runtime_error("rank 2 ran out of data");
      c.barrier();
      c.barrier();
    });
    FAIL("no error");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("rank 2 ran out of data"));
  }
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 10.0);
}

TEST_CASE("communicator arguments are checked before anything is exchanged", "[comm]") {
  auto comms = kiln::make_in_process_communicators(2, BackendKind::cpu, quick(100ms));
  Communicator& c = *comms[0];
  std::vector<float> f(8);
  const std::vector<int64_t> short_bounds{0, 4};
  const std::vector<int64_t> decreasing{0, 5, 4};
  auto status = [](const std::function<void()>& call) {
    try {
      call();
    } catch (const kiln::Error& e) {
      return e.status();
    }
    return kiln::Status::ok;
  };
  CHECK(status([&] {
          c.reduce_scatter(f.data(), short_bounds, DType::f32, ReduceOp::sum, nullptr);
        }) == kiln::Status::invalid_argument);
  CHECK(status([&] {
          c.reduce_scatter(f.data(), decreasing, DType::f32, ReduceOp::sum, nullptr);
        }) == kiln::Status::invalid_argument);
  CHECK(status([&] { c.broadcast(f.data(), 8, DType::f32, 2, nullptr); }) ==
        kiln::Status::invalid_argument);
  CHECK(status([&] { c.all_reduce(f.data(), 4, DType::bf16, ReduceOp::sum, nullptr); }) ==
        kiln::Status::invalid_argument);
  CHECK(status([&] { c.all_reduce(f.data(), -1, DType::f32, ReduceOp::sum, nullptr); }) ==
        kiln::Status::invalid_argument);
  // None of those reached the rendezvous: rank 1 alone would otherwise have been waited for.
  CHECK(status([&] { comms[1]->check(); }) == kiln::Status::ok);
}
