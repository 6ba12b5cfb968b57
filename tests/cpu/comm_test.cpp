// The communicators on the host: the in-process collectives against rank-order sums computed here
// (bitwise), their deadline naming the rank that never joined, mismatch and argument checks, the
// TCP rendezvous and the TCP communicator between threads on localhost (bitwise equal to the
// in-process one), and the launcher environments of mpirun, srun and torchrun.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>
#include <vector>

#include "kiln/communicator.hpp"
#include "kiln/launch.hpp"
#include "runtime/comm/socket.hpp"
#include "tests/common/support.hpp"

using kiln::BackendKind;
using kiln::CommOptions;
using kiln::Communicator;
using kiln::DType;
using kiln::ReduceOp;
using namespace std::chrono_literals;

namespace {

// Short deadlines where a test waits for one to pass; generous ones where it must not (a loaded
// CI machine may take a while to start a thread).
CommOptions quick(std::chrono::milliseconds timeout = 20s,
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
bool same_bits(const T* a, const T* b, std::size_t n) {
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

void in_process_ranks(int world, const std::function<void(Communicator&)>& body) {
  kiln::run_in_process(world, BackendKind::cpu, quick(), body);
}

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

// ---- TCP ----------------------------------------------------------------------------------------

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

// ---- launchers ----------------------------------------------------------------------------------

namespace {

kiln::LaunchInfo parse(const std::map<std::string, std::string>& env) {
  return kiln::parse_launch_environment([&](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
}

std::string parse_error(const std::map<std::string, std::string>& env) {
  try {
    parse(env);
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::invalid_argument);
    return e.message();
  }
  return "no error";
}

}  // namespace

TEST_CASE("launcher environments: none, mpirun, srun, torchrun", "[comm]") {
  SECTION("no launcher: one rank") {
    const auto l = parse({{"HOME", "/root"}});
    CHECK(l.launcher == kiln::Launcher::none);
    CHECK(l.rank == 0);
    CHECK(l.world_size == 1);
    CHECK(l.master_port == 0);
  }
  SECTION("mpirun (Open MPI)") {
    const auto l = parse({{"OMPI_COMM_WORLD_RANK", "5"},
                          {"OMPI_COMM_WORLD_SIZE", "8"},
                          {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                          {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                          // Under an allocation Slurm's variables describe mpirun's daemon.
                          {"SLURM_PROCID", "0"},
                          {"SLURM_STEP_ID", "0"},
                          {"SLURM_NTASKS", "2"}});
    CHECK(l.launcher == kiln::Launcher::mpirun);
    CHECK(l.rank == 5);
    CHECK(l.world_size == 8);
    CHECK(l.local_rank == 1);
    CHECK(l.local_world_size == 4);
    CHECK(l.master_addr.empty());
    CHECK(kiln::select_device(l, 4) == 1);
    CHECK(kiln::select_device(l, 1) == 0);
    const auto m = parse({{"OMPI_COMM_WORLD_RANK", "0"},
                          {"OMPI_COMM_WORLD_SIZE", "2"},
                          {"MASTER_ADDR", "head"},
                          {"MASTER_PORT", "29500"}});
    CHECK(m.master_addr == "head");
    CHECK(m.master_port == 29500);
  }
  SECTION("srun (Slurm)") {
    const auto l = parse({{"SLURM_PROCID", "6"},
                          {"SLURM_NTASKS", "16"},
                          {"SLURM_LOCALID", "2"},
                          {"SLURM_STEP_ID", "0"},
                          {"SLURM_STEP_NODELIST", "gpu[007-008,012],login1"},
                          {"SLURM_JOB_ID", "123456"}});
    CHECK(l.launcher == kiln::Launcher::srun);
    CHECK(l.rank == 6);
    CHECK(l.world_size == 16);
    CHECK(l.local_rank == 2);
    CHECK(l.master_addr == "gpu007");
    CHECK(l.master_port == 29500 + 456);
    const auto step = parse({{"SLURM_PROCID", "1"},
                             {"SLURM_NTASKS", "64"},
                             {"SLURM_STEP_NUM_TASKS", "4"},
                             {"SLURM_STEP_NODELIST", "n1"},
                             {"MASTER_ADDR", "n9"},
                             {"MASTER_PORT", "1234"}});
    CHECK(step.world_size == 4);
    CHECK(step.master_addr == "n9");
    CHECK(step.master_port == 1234);
    // A batch script (SLURM_PROCID without a step) is not an srun task.
    CHECK(parse({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}}).launcher == kiln::Launcher::none);
  }
  SECTION("torchrun --no-python") {
    const auto l = parse({{"RANK", "3"},
                          {"WORLD_SIZE", "16"},
                          {"LOCAL_RANK", "3"},
                          {"LOCAL_WORLD_SIZE", "8"},
                          {"MASTER_ADDR", "node0"},
                          {"MASTER_PORT", "29500"},
                          {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                          // torchrun started by srun: the agent's Slurm variables are ignored.
                          {"SLURM_PROCID", "0"},
                          {"SLURM_STEP_ID", "1"},
                          {"SLURM_NTASKS", "2"}});
    CHECK(l.launcher == kiln::Launcher::torchrun);
    CHECK(l.rank == 3);
    CHECK(l.world_size == 16);
    CHECK(l.local_rank == 3);
    CHECK(l.local_world_size == 8);
    CHECK(l.master_addr == "node0");
    CHECK(l.master_port == 29501);  // the agent's store holds MASTER_PORT
    const auto port = parse({{"RANK", "0"},
                             {"WORLD_SIZE", "2"},
                             {"MASTER_ADDR", "node0"},
                             {"MASTER_PORT", "29500"},
                             {"KILN_RENDEZVOUS_PORT", "40000"},
                             {"KILN_RENDEZVOUS", "tcp"}});
    CHECK(port.master_port == 40000);
    CHECK(port.rendezvous == kiln::RendezvousMethod::tcp);
    CHECK_THAT(port.describe(), Catch::Contains("torchrun: rank 0 of 2") &&
                                    Catch::Contains("rendezvous node0:40000"));
  }
  SECTION("bad values name the variable") {
    CHECK_THAT(parse_error({{"RANK", "three"}, {"WORLD_SIZE", "4"}}),
               Catch::Contains("RANK='three' is not an integer"));
    CHECK_THAT(parse_error({{"RANK", "4"}, {"WORLD_SIZE", "4"}}),
               Catch::Contains("rank 4 of a world of 4"));
    CHECK_THAT(parse_error({{"OMPI_COMM_WORLD_SIZE", "2"}}),
               Catch::Contains("OMPI_COMM_WORLD_RANK is not set"));
    CHECK_THAT(parse_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}),
               Catch::Contains("outside 1..65535"));
    CHECK_THAT(parse_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"KILN_RENDEZVOUS", "carrier"}}),
               Catch::Contains("KILN_RENDEZVOUS='carrier'"));
    CHECK_THAT(
        parse_error(
            {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}}),
        Catch::Contains("local rank 2 of 2"));
  }
  SECTION("devices by local rank") {
    kiln::LaunchInfo l;
    l.rank = 9;
    l.world_size = 16;
    l.local_rank = 9;
    try {
      kiln::select_device(l, 8);
      FAIL("no error");
    } catch (const kiln::Error& e) {
      CHECK_THAT(e.message(), Catch::Contains("local rank 9") && Catch::Contains("8 are visible"));
    }
    try {
      kiln::select_device(l, 0);
      FAIL("no error");
    } catch (const kiln::Error& e) {
      CHECK(e.status() == kiln::Status::no_device);
    }
  }
}

TEST_CASE("Slurm host lists: the first host", "[comm]") {
  CHECK(kiln::slurm_first_host("node1") == "node1");
  CHECK(kiln::slurm_first_host("node[07-09,12],gpu3") == "node07");
  CHECK(kiln::slurm_first_host("gpu3,node[1-2]") == "gpu3");
  CHECK(kiln::slurm_first_host("rack[1-2]-n[03,05]") == "rack1-n03");
  CHECK(kiln::slurm_first_host(" a[5] ") == "a5");
  for (const char* bad : {"", "node[1-2", "node]1", "node[a-b]"}) {
    INFO(bad);
    CHECK_THROWS_AS(kiln::slurm_first_host(bad), kiln::Error);
  }
}

TEST_CASE("without an endpoint or MPI the rendezvous says what to set", "[comm]") {
  kiln::LaunchInfo l;
  l.launcher = kiln::Launcher::torchrun;
  l.rank = 1;
  l.world_size = 2;
  l.rendezvous = kiln::RendezvousMethod::tcp;
  try {
    kiln::rendezvous_broadcast(l, "", quick(100ms));
    FAIL("no error");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::invalid_argument);
    CHECK_THAT(e.message(), Catch::Contains("set MASTER_ADDR and MASTER_PORT"));
  }
}
