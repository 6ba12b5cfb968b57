// The TCP rendezvous and the TCP communicator between threads on localhost: the payload reaches
// every rank, silent ranks are named, and the collectives equal the in-process ones, bitwise.
#include <catch2/catch.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kiln/communicator.hpp"
#include "kiln/launch.hpp"
#include "runtime/comm/socket.hpp"
#include "tests/cpu/comm_support.hpp"

using namespace kiln::test::comm;  // CommOptions, Communicator, DType, ReduceOp, 1s ...

namespace {

int free_port() {
  kiln::impl::Socket s = kiln::impl::listen_on(0);
  return kiln::impl::local_port(s);
}

kiln::LaunchInfo localhost(int rank, int world, int port) {
  kiln::LaunchInfo l;
  l.rank = rank;
  l.world_size = world;
  l.local_rank = rank;
  l.local_world_size = world;
  l.master_addr = "127.0.0.1";
  l.master_port = port;
  l.rendezvous = kiln::RendezvousMethod::tcp;
  return l;
}

// TCP communicators between threads: one per rank, made concurrently (rank 0 listens on a fresh
// port), then `body` on each rank's thread.
void tcp_ranks(int world, const std::function<void(Communicator&)>& body,
               CommOptions options = quick()) {
  const int port = free_port();
  std::vector<std::unique_ptr<Communicator>> comms(static_cast<std::size_t>(world));
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        comms[static_cast<std::size_t>(r)] =
            kiln::make_tcp_communicator(localhost(r, world, port), options);
        body(*comms[static_cast<std::size_t>(r)]);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
        if (comms[static_cast<std::size_t>(r)]) comms[static_cast<std::size_t>(r)]->abort(e.what());
      }
    });
  }
  for (auto& t : threads)
    t.join();
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r);
    REQUIRE(errors[static_cast<std::size_t>(r)].empty());
  }
}

}  // namespace

TEST_CASE("the TCP rendezvous delivers rank 0's payload to every thread on localhost", "[comm]") {
  const int world = 4, port = free_port();
  std::string payload(300, '\0');
  for (std::size_t i = 0; i < payload.size(); ++i)
    payload[i] = static_cast<char>(i * 7);
  std::vector<std::string> got(world);
  std::vector<std::thread> threads;
  for (int r = world - 1; r >= 0; --r) {  // the others start before rank 0 listens
    threads.emplace_back([&, r] {
      got[static_cast<std::size_t>(r)] = kiln::rendezvous_broadcast(
          localhost(r, world, port), r == 0 ? payload : std::string("ignored"), quick());
    });
  }
  for (auto& t : threads)
    t.join();
  for (const auto& g : got)
    CHECK(g == payload);
}

TEST_CASE("a TCP rendezvous names the ranks that never connect", "[comm]") {
  const int world = 3, port = free_port();
  std::string rank0_error, rank1_error;
  std::thread rank1([&] {
    try {
      kiln::rendezvous_broadcast(localhost(1, world, port), "", quick(20s, 20s));
    } catch (const kiln::Error& e) {
      rank1_error = e.message();
    }
  });
  try {
    kiln::rendezvous_broadcast(localhost(0, world, port), "id", quick(20s, 1500ms));
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::timeout);
    rank0_error = e.message();
  }
  rank1.join();
  CHECK_THAT(rank0_error, Catch::Contains("rank(s) 2 of 3 did not connect"));
  CHECK_THAT(rank1_error, Catch::Contains("rank 0"));
  // A rank with nobody listening names the endpoint it tried.
  try {
    kiln::rendezvous_broadcast(localhost(2, world, free_port()), "", quick(20s, 300ms));
    FAIL("no error");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::timeout);
    CHECK_THAT(e.message(), Catch::Contains("could not reach rank 0's rendezvous at 127.0.0.1:"));
  }
}

TEST_CASE("TCP communicators between threads give the in-process results, bitwise", "[comm]") {
  for (int world : {2, 3}) {
    INFO("world " << world);
    check_collectives<float>(
        [](int w, std::function<void(Communicator&)> body) { tcp_ranks(w, body); }, world);
    check_collectives<double>(
        [](int w, std::function<void(Communicator&)> body) { tcp_ranks(w, body); }, world);
  }
}

TEST_CASE("a TCP communicator names the rank that never joins, on every rank", "[comm]") {
  const int world = 3, port = free_port();
  std::vector<std::string> messages(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        // Rank 0's deadline passes first: rank 1 must learn the cause from rank 0.
        auto c =
            kiln::make_tcp_communicator(localhost(r, world, port), quick(r == 0 ? 1000ms : 20s));
        c->barrier();
        if (r == 2) {
          // Rank 2 stays connected but never joins the second collective.
          std::this_thread::sleep_for(2500ms);
          return;
        }
        std::vector<float> x(16, 1.0f);
        c->all_reduce(x.data(), 16, DType::f32, ReduceOp::sum, nullptr);
      } catch (const kiln::Error& e) {
        messages[static_cast<std::size_t>(r)] = e.message();
      }
    });
  }
  for (auto& t : threads)
    t.join();
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r << ": " << messages[static_cast<std::size_t>(r)]);
    // Rank 0 sees the silence itself; rank 1 learns it from rank 0's error frame.
    CHECK_THAT(messages[static_cast<std::size_t>(r)],
               Catch::Contains("all_reduce #2") && Catch::Contains("rank 2 sent nothing"));
  }
}
