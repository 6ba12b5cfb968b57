// Hostile and careless use of the demos (issue 13): every option out of range, NaN, non-integer
// or meaningless for the backend is refused with one line naming it; a failed --plot fails the
// run; a rank stuck outside any collective ends the job within its deadline (threads and TCP
// processes); a full disk fails a save clearly and keeps the old checkpoint; temporaries of killed
// saves do not stay.
#include <catch2/catch.hpp>

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/comm/socket.hpp"
#include "tests/common/files.hpp"

using kiln::test::TempDir;
namespace fs = std::filesystem;

#if defined(KILN_TRAIN_GPT_EXE) && defined(KILN_GENERATE_EXE) && defined(KILN_TOKENIZE_EXE) && \
    defined(KILN_INFO_EXE)

namespace {

struct Result {
  int status;
  std::string output;
  double seconds;
};

// Runs `cmd` under sh with a hard limit, so that a regression hangs nothing (status 124).
Result shell(const TempDir& dir, const std::string& cmd, int limit_s = 600) {
  const auto log = dir / "log.txt";
  const auto start = std::chrono::steady_clock::now();
  const std::string full = "timeout -s KILL " + std::to_string(limit_s) + " sh -c '" + cmd +
                           "' > " + log.string() + " 2>&1";
  const int rc = std::system(full.c_str());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::string out = kiln::test::read_bytes(log);
  fs::remove(log);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out, s};
}

// Paths here never hold quotes: TempDir names are plain.
std::string q(const fs::path& p) {
  // Appended piece by piece: g++ 12 warns (-Wrestrict, falsely) about "\"" + std::string.
  std::string s(1, '"');
  s += p.string();
  s += '"';
  return s;
}

void make_data(const TempDir& dir) {
  std::ostringstream os;
  static const char* words[] = {"the cat", "a dog", "the sea", "my friend", "sees", "the moon"};
  for (int d = 0; d < 150; ++d) {
    for (int s = 0; s < 3; ++s)
      os << words[(d + s) % 6] << ' ' << words[(3 * d + s) % 6] << ".\n";
    os << "%\n";
  }
  kiln::test::write_bytes(dir / "corpus.txt", os.str());
  const Result tok = shell(dir, std::string(KILN_TOKENIZE_EXE) +
                                    " --tokenizer byte --val-fraction 0.1 --separator % --quiet "
                                    "--out " +
                                    q(dir / "data") + " " + q(dir / "corpus.txt"));
  REQUIRE(tok.status == 0);
}

// The tiny model (train_gpt's default), 3 steps unless `args` say otherwise.
std::string train(const TempDir& dir, const std::string& args) {
  return std::string(KILN_TRAIN_GPT_EXE) + " --data " + q(dir / "data") +
         " --backend cpu --seq-len 16 --batch 2 " +
         (args.find("--steps") == std::string::npos ? "--steps 3 " : "") + args;
}

std::string train_any_backend(const TempDir& dir, const std::string& args) {
  return std::string(KILN_TRAIN_GPT_EXE) + " --data " + q(dir / "data") + " " + args;
}

int temporaries(const fs::path& dir) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    n += e.path().filename().string().find(".tmp.") != std::string::npos;
  return n;
}

}  // namespace

TEST_CASE("the demos refuse bad option values with one line naming the option", "[hostile]") {
  TempDir dir;
  make_data(dir);
  struct Case {
    std::string command, expect;
  };
  const std::string gen = std::string(KILN_GENERATE_EXE) + " --checkpoint none.ckpt ";
  const std::vector<Case> cases = {
      {train(dir, "--log-every 0"), "--log-every: must be an integer in [1, "},
      {train(dir, "--threads 100000"), "--threads: must be an integer in [0, 1024]"},
      {train(dir, "--comm-timeout nan"), "--comm-timeout: must be a finite number in (0, "},
      {train(dir, "--comm-timeout 1e300"), "--comm-timeout: must be a finite number"},
      {train(dir, "--bucket-mb nan"), "--bucket-mb: must be a finite number"},
      {train(dir, "--vocab -5"), "--vocab: must be an integer in [1, 2147483647]"},
      {train(dir, "--device -7"), "--device: must be an integer in [0, 4095]"},
      {train(dir, "--device 0"), "--device: means nothing with --backend cpu"},
      {train(dir, "--cuda-graph"), "--cuda-graph: means nothing with --backend cpu"},
      {train(dir, "--layers 100000000000 --dry-run"), "--layers: must be an integer in [1, 16384]"},
      {train(dir, "--batch 1.5"), "--batch: must be an integer"},
      {train(dir, "--steps 1e3"), "--steps: must be an integer"},
      {train(dir, "--lr nan"), "--lr: must be a finite number in [0, 10]"},
      {train(dir, "--beta2 1"), "--beta2: must be a finite number in [0, 1)"},
      {train(dir, "--top-p 0"), "--top-p: must be a finite number in (0, 1]"},
      {train(dir, "--seed -1"), "--seed: must be an integer in [0, 2^64)"},
      {train(dir, "--mask-fraction 0.2"), "--mask-fraction: means nothing without --encoder"},
      {train(dir, "--checkpoint-every 5"), "--checkpoint-every: means nothing without"},
      {train(dir, "--resume x.ckpt --layers 3"), "--layers: means nothing with --resume"},
      {train_any_backend(dir, "--backend cuda --threads 2"), "--threads: means nothing with"},
      {gen + "--heads -3", "--heads: must be an integer in [1, 4096]"},
      {gen + "--heads 3", "--heads: means nothing with --checkpoint"},
      {gen + "--backend cpu --device 1", "--device: means nothing with --backend cpu"},
      {gen + "--temperature inf", "--temperature: must be a finite number"},
      {std::string(KILN_TOKENIZE_EXE) + " --out o x --val-fraction nan", "--val-fraction: must"},
  };
  for (const Case& c : cases) {
    const Result r = shell(dir, c.command);
    INFO(c.command << "\n" << r.output);
    CHECK(r.status != 0);
    CHECK_THAT(r.output, Catch::Contains(c.expect));
  }
  // Within every per-option range, but too big a model: the library's limit, before any work.
  const Result big =
      shell(dir, train(dir, "--layers 16384 --channels 262144 --heads 64 --dry-run"));
  CHECK(big.status == 1);
  CHECK_THAT(big.output, Catch::Contains("parameter elements exceed kiln's limit"));

  const Result info = shell(dir, std::string(KILN_INFO_EXE) + " --bogus");
  CHECK(info.status == 2);
  CHECK_THAT(info.output, Catch::Contains("unknown argument '--bogus'"));
}

TEST_CASE("a failed --plot write fails the run after training", "[hostile]") {
  TempDir dir;
  make_data(dir);
  const Result r = shell(dir, train(dir, "--threads 1 --plot " + q(dir / "no" / "such" / "a.png")));
  INFO(r.output);
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("done: 3 steps") && Catch::Contains("a.png"));
}

TEST_CASE("train_gpt --ranks: a rank stuck outside any collective ends the job in time",
          "[hostile]") {
  TempDir dir;
  make_data(dir);
  // Rank 0 opens its metrics file, a FIFO nobody reads: open() blocks, outside any collective.
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  const Result r = shell(
      dir, train(dir, "--threads 2 --ranks 2 --comm-timeout 2 --metrics " + q(dir / "fifo")), 300);
  INFO(r.output);
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("rank 1 of 2") && Catch::Contains("timed out after 2 s") &&
                           Catch::Contains("rank 0 (last joined collective"));
  CHECK(r.seconds < 240);  // the deadline is 2 s: generous for a loaded machine
}

TEST_CASE("TCP processes: a rank stuck outside any collective ends the job in time", "[hostile]") {
  TempDir dir;
  make_data(dir);
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  const int port = [] {
    kiln::impl::Socket s = kiln::impl::listen_on(0);
    return kiln::impl::local_port(s);
  }();
  const std::string env =
      "KILN_RENDEZVOUS=tcp MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) +
      " WORLD_SIZE=2 ";
  // Rank 0 blocks on the FIFO; rank 1 must report it within its deadline and exit non-zero, so
  // that a launcher (mpirun, srun, torchrun) ends the job; the test plays the launcher's part.
  const std::string common = " --threads 1 --comm-timeout 10 --steps 50";
  const Result r =
      shell(dir,
            "RANK=0 " + env + train(dir, common + " --metrics " + q(dir / "fifo")) + " & p=$!; " +
                "RANK=1 " + env + train(dir, common) + "; s=$?; kill -9 $p; exit $s",
            300);
  INFO(r.output);
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("tcp communicator") && Catch::Contains("rank 0"));
  CHECK(r.seconds < 240);
}

TEST_CASE("a full disk fails the save with a clear error and keeps the old checkpoint",
          "[hostile]") {
  TempDir dir;
  make_data(dir);
  const fs::path ck = dir / "ck";
  REQUIRE(shell(dir, train(dir, "--threads 1 --checkpoint-dir " + q(ck))).status == 0);
  const std::string old = kiln::test::read_bytes(ck / "latest.ckpt");
  const std::string more = " --threads 1 --steps 5 --resume auto --checkpoint-dir ";

  // A file-size limit (every system): the write fails with EFBIG instead of a signal.
  const std::string limit = "trap \"\" XFSZ; ulimit -f " + std::to_string(old.size() / 1024) + "; ";
  const Result r = shell(dir, limit + train(dir, more + q(ck)));
  INFO(r.output);
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("cannot write") && Catch::Contains("latest.ckpt") &&
                           Catch::Contains("File too large"));
  CHECK(kiln::test::read_bytes(ck / "latest.ckpt") == old);
  CHECK(temporaries(ck) == 0);

  // A small file system, where one can be mounted (root, and a kernel that lets us).
  const fs::path small = dir / "small";
  fs::create_directories(small);
  const std::string size = "size=" + std::to_string(old.size() * 3 / 2 + 65536);
  if (::mount("tmpfs", small.c_str(), "tmpfs", 0, size.c_str()) != 0) {
    WARN("no tmpfs could be mounted here (not root?): the file-size limit stood in for it");
    return;
  }
  struct Unmount {
    fs::path p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{small};
  fs::create_directories(small / "ck");
  fs::copy_file(ck / "latest.ckpt", small / "ck" / "latest.ckpt");
  const Result full = shell(dir, train(dir, more + q(small / "ck")));
  INFO(full.output);
  CHECK(full.status == 1);
  CHECK_THAT(full.output, Catch::Contains("No space left on device"));
  CHECK(kiln::test::read_bytes(small / "ck" / "latest.ckpt") == old);
  CHECK(temporaries(small / "ck") == 0);
}

TEST_CASE("temporaries of killed saves go at the next run's load or save", "[hostile]") {
  TempDir dir;
  make_data(dir);
  const fs::path ck = dir / "ck";
  // A run killed while it checkpoints every step (whether a temporary is left depends on when
  // the kill lands), and a temporary as a killed save of an earlier run leaves it.
  const Result killed = shell(dir,
                              train(dir,
                                    "--threads 1 --steps 100000 --checkpoint-every 1 "
                                    "--checkpoint-dir " +
                                        q(ck)) +
                                  " & p=$!; while [ ! -f " + q(ck / "latest.ckpt") +
                                  " ]; do sleep 0.1; done; sleep 0.5; kill -9 $p; wait $p",
                              300);
  REQUIRE(fs::exists(ck / "latest.ckpt"));
  kiln::test::write_bytes(ck / ".latest.ckpt.tmp.4242.17", std::string(4096, 'x'));
  const Result resumed = shell(
      dir,
      train(dir, "--threads 1 --steps 100000 --stop-at 1 --resume auto --checkpoint-dir " + q(ck)));
  INFO(killed.output << resumed.output);
  CHECK(resumed.status == 0);
  CHECK(temporaries(ck) == 0);
}

#else

TEST_CASE("the demos refuse bad option values with one line naming the option", "[hostile]") {
  KILN_SKIP(
      "train_gpt, generate, kiln_tokenize or kiln_info was not built (CLI11 or libpng missing)");
}

#endif
