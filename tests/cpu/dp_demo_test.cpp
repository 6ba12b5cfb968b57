// train_gpt with data parallelism on the cpu backend, end to end: in-process ranks (--ranks)
// against one rank with the whole batch, two processes started by mpirun (MPI rendezvous, then
// the TCP rendezvous) against the in-process ranks (bitwise: both reduce in rank order), and a
// ZeRO-1 run interrupted and resumed at another world size.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/launch.hpp"
#include "kiln/trainer.hpp"
#include "runtime/comm/socket.hpp"
#include "tests/common/files.hpp"

using kiln::test::TempDir;

#if defined(KILN_TRAIN_GPT_EXE) && defined(KILN_TOKENIZE_EXE)

namespace {

using Result = kiln::test::CommandResult;

Result shell(const TempDir& dir, const std::string& cmd) {
  return kiln::test::run_command(dir, cmd);
}

std::string quote(const std::filesystem::path& p) {
  return kiln::test::quoted(p);
}

// A byte-level corpus of short sentences, tokenized into <dir>/data.
void make_data(const TempDir& dir) {
  std::ostringstream os;
  static const char* words[] = {"the cat", "a dog", "the sea", "my friend", "sees", "the moon"};
  for (int d = 0; d < 200; ++d) {
    for (int s = 0; s < 4; ++s)
      os << words[(d + s) % 6] << ' ' << words[(3 * d + s) % 6] << ' ' << words[(d * s) % 6]
         << ".\n";
    os << "%\n";
  }
  kiln::test::write_bytes(dir / "corpus.txt", os.str());
  const Result tok =
      shell(dir, quote(KILN_TOKENIZE_EXE) +
                     " --tokenizer byte --val-fraction 0.1 --separator % --quiet --out " +
                     quote(dir / "data") + " " + quote(dir / "corpus.txt"));
  REQUIRE(tok.status == 0);
}

std::string train(const TempDir& dir, const std::string& args, const char* lr = "3e-3") {
  return quote(KILN_TRAIN_GPT_EXE) + " --data " + quote(dir / "data") +
         " --backend cpu --model tiny --seq-len 32 --steps 6 --log-every 1 --lr " + lr + " " + args;
}

std::vector<float> weights(const std::filesystem::path& ckpt) {
  std::vector<float> w;
  kiln::read_checkpoint(ckpt, &w);
  return w;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
}

// Open MPI's mpirun, or why there is none.
std::string open_mpi_or_why(const TempDir& dir) {
  const Result v = shell(dir, "mpirun --version");
  if (v.status != 0) return "mpirun is not installed (Debian: openmpi-bin)";
  if (v.output.find("Open MPI") == std::string::npos) return "mpirun is not Open MPI's";
  return {};
}

}  // namespace

TEST_CASE("train_gpt --ranks trains as one rank with the whole batch", "[dp]") {
  TempDir dir;
  make_data(dir);
  const Result one =
      shell(dir, train(dir, "--threads 1 --batch 4 --checkpoint-dir " + quote(dir / "one")));
  INFO(one.output);
  REQUIRE(one.status == 0);
  const Result two = shell(
      dir, train(dir, "--threads 2 --batch 2 --ranks 2 --checkpoint-dir " + quote(dir / "two")));
  INFO(two.output);
  REQUIRE(two.status == 0);
  CHECK_THAT(two.output, Catch::Contains("data parallel: in-process (rank 0 of 2") &&
                             Catch::Contains("x 2 rank(s) = 128 tokens per step"));
  // Rank 0 alone speaks.
  CHECK(two.output.find("memory plan") == two.output.rfind("memory plan"));
  // The same training, up to the order of the f32 gradient sums...
  const auto a = weights(dir / "one" / "latest.ckpt"), b = weights(dir / "two" / "latest.ckpt");
  CHECK(max_abs_diff(a, b) < 5e-5);
  // ... and training it was: the weights moved far beyond that tolerance.
  const Result still =
      shell(dir, train(dir, "--threads 1 --batch 4 --checkpoint-dir " + quote(dir / "still"), "0"));
  REQUIRE(still.status == 0);
  CHECK(max_abs_diff(a, weights(dir / "still" / "latest.ckpt")) > 1e-3);
}

TEST_CASE("train_gpt under mpirun: two processes equal two in-process ranks, bitwise", "[dp]") {
  TempDir dir;
  if (const std::string why = open_mpi_or_why(dir); !why.empty()) KILN_SKIP(why);
  make_data(dir);
  const std::string common = "--threads 1 --batch 2 --eval-every 3 --eval-batches 2";
  const Result threads =
      shell(dir, train(dir, common + " --ranks 2 --checkpoint-dir " + quote(dir / "threads")));
  INFO(threads.output);
  REQUIRE(threads.status == 0);
  // As root (containers, CI) Open MPI wants both flags; oversubscribe: CI machines have 2 cores.
  const std::string mpirun = "mpirun --allow-run-as-root --oversubscribe -np 2 ";
  if (kiln::built_with_mpi()) {
    // The MPI rendezvous (rank 0's TCP address broadcast by MPI).
    const Result mpi =
        shell(dir, mpirun + train(dir, common + " --checkpoint-dir " + quote(dir / "mpi")));
    INFO(mpi.output);
    REQUIRE(mpi.status == 0);
    CHECK_THAT(mpi.output, Catch::Contains("data parallel: tcp (rank 0 of 2") &&
                               Catch::Contains("mpirun: rank 0 of 2"));
    CHECK(kiln::test::read_bytes(dir / "mpi" / "latest.ckpt") ==
          kiln::test::read_bytes(dir / "threads" / "latest.ckpt"));
  }
  // The TCP rendezvous between processes (no MPI), at a free port on localhost.
  const int port = [] {
    kiln::impl::Socket s = kiln::impl::listen_on(0);
    return kiln::impl::local_port(s);
  }();
  const Result tcp = shell(dir, mpirun + "-x KILN_RENDEZVOUS=tcp -x MASTER_ADDR=127.0.0.1 -x " +
                                    "MASTER_PORT=" + std::to_string(port) + " " +
                                    train(dir, common + " --checkpoint-dir " + quote(dir / "tcp")));
  INFO(tcp.output);
  REQUIRE(tcp.status == 0);
  CHECK_THAT(tcp.output, Catch::Contains("rendezvous 127.0.0.1:" + std::to_string(port)));
  CHECK(kiln::test::read_bytes(dir / "tcp" / "latest.ckpt") ==
        kiln::test::read_bytes(dir / "threads" / "latest.ckpt"));
}

TEST_CASE("train_gpt --zero1 stopped on 2 ranks resumes on 3 and on 1", "[dp]") {
  TempDir dir;
  make_data(dir);
  const Result full = shell(dir, train(dir,
                                       "--threads 2 --batch 3 --ranks 2 --zero1 "
                                       "--checkpoint-dir " +
                                           quote(dir / "full")));
  INFO(full.output);
  REQUIRE(full.status == 0);
  for (int world : {3, 1}) {
    INFO("resumed on " << world);
    const auto ck = dir / ("ck" + std::to_string(world));
    const Result first = shell(dir, train(dir,
                                          "--threads 2 --batch 3 --ranks 2 --zero1 "
                                          "--stop-at 3 --checkpoint-dir " +
                                              quote(ck)));
    REQUIRE(first.status == 0);
    // The same global batch of 6 sequences on the new world size.
    const Result second =
        shell(dir, train(dir, "--threads 2 --batch " + std::to_string(6 / world) + " --ranks " +
                                  std::to_string(world) + (world > 1 ? " --zero1" : "") +
                                  " --resume auto --checkpoint-dir " + quote(ck)));
    INFO(second.output);
    REQUIRE(second.status == 0);
    CHECK_THAT(second.output, Catch::Contains("resuming from") &&
                                  Catch::Contains("continuing at step 3 with batch"));
    CHECK(max_abs_diff(weights(ck / "latest.ckpt"), weights(dir / "full" / "latest.ckpt")) < 5e-5);
  }
}

#endif
