// The launcher environments of mpirun, srun and torchrun (rank, world, local rank, rendezvous),
// Slurm host lists, and what the rendezvous asks for when it has no endpoint.
#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <string>

#include "kiln/communicator.hpp"
#include "kiln/launch.hpp"
#include "tests/cpu/comm_support.hpp"

using kiln::test::comm::quick;
using namespace std::chrono_literals;

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
