// Hostile and careless input (issue 13): sizes from options or files are bounded before anything
// is allocated, JSON integers must be integers, a thread pool that cannot start all its threads
// fails cleanly, a rank stuck outside any collective cannot hang run_in_process, a failed rank's
// own error is the one reported, and the temporaries of killed saves are cleaned up.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/communicator.hpp"
#include "kiln/io.hpp"
#include "kiln/limits.hpp"
#include "kiln/optimizer.h"
#include "kiln/trainer.hpp"
#include "runtime/cpu/thread_pool.hpp"
#include "tests/common/files.hpp"

namespace fs = std::filesystem;
using kiln::test::TempDir;

namespace {

kiln::ModelConfig tiny() {
  kiln::ModelConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.vocab_size = 29;
  c.max_seq_len = 8;
  return c.resolved();
}

kiln::TrainConfig train() {
  kiln::TrainConfig t;
  t.batch = 2;
  t.seq_len = 8;
  return t;
}

// The problem of f's kiln::Error, or "" when it did not throw one.
std::string error_of(const std::function<void()>& f, kiln::Status* status = nullptr) {
  try {
    f();
  } catch (const kiln::Error& e) {
    if (status) *status = e.status();
    return e.message();
  }
  return "";
}

// A checkpoint file taken apart (kiln's format, runtime/checkpoint.cpp) and put together again,
// so that a test can change its metadata and keep it well-formed (checksums, offsets).
struct CheckpointParts {
  nlohmann::json meta;
  struct Section {
    std::string name;
    uint32_t kind;
    std::string bytes;
  };
  std::vector<Section> sections;
};

template <typename T>
T load_at(const std::string& b, std::size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}

CheckpointParts read_parts(const fs::path& path) {
  const std::string b = kiln::test::read_bytes(path);
  CheckpointParts p;
  const auto count = load_at<uint32_t>(b, 12);
  const auto table = load_at<uint64_t>(b, 16), json = load_at<uint64_t>(b, 24);
  const auto json_bytes = load_at<uint64_t>(b, 32);
  p.meta = nlohmann::json::parse(b.substr(json, json_bytes));
  for (uint32_t i = 0; i < count; ++i) {
    const std::size_t e = table + i * 64;
    p.sections.push_back({std::string(b.c_str() + e), load_at<uint32_t>(b, e + 40),
                          b.substr(load_at<uint64_t>(b, e + 48), load_at<uint64_t>(b, e + 56))});
  }
  return p;
}

void write_parts(const fs::path& path, const CheckpointParts& p) {
  const std::string json = p.meta.dump();
  const uint32_t count = static_cast<uint32_t>(p.sections.size());
  auto align = [](uint64_t x) { return (x + 63) / 64 * 64; };
  std::string table(count * 64u, '\0');
  uint64_t offset = align(64 + table.size() + json.size());
  std::string payload;
  for (uint32_t i = 0; i < count; ++i) {
    const auto& s = p.sections[i];
    char* e = table.data() + i * 64;
    std::strncpy(e, s.name.c_str(), 39);
    const uint32_t crc = kiln::crc32c(s.bytes.data(), s.bytes.size());
    const uint64_t bytes = s.bytes.size();
    std::memcpy(e + 40, &s.kind, 4);
    std::memcpy(e + 44, &crc, 4);
    std::memcpy(e + 48, &offset, 8);
    std::memcpy(e + 56, &bytes, 8);
    payload.resize(offset - align(64 + table.size() + json.size()), '\0');
    payload += s.bytes;
    offset = align(offset + bytes);
  }
  std::string header(64, '\0');
  const uint32_t version = 1, json_crc = kiln::crc32c(json.data(), json.size());
  const uint32_t table_crc = kiln::crc32c(table.data(), table.size());
  const uint64_t table_offset = 64, json_offset = 64 + table.size(), json_bytes = json.size();
  std::string head_pad(align(json_offset + json_bytes) - (json_offset + json_bytes), '\0');
  const uint64_t file_bytes = json_offset + json_bytes + head_pad.size() + payload.size();
  std::memcpy(header.data(), "KILNCKPT", 8);
  std::memcpy(header.data() + 8, &version, 4);
  std::memcpy(header.data() + 12, &count, 4);
  std::memcpy(header.data() + 16, &table_offset, 8);
  std::memcpy(header.data() + 24, &json_offset, 8);
  std::memcpy(header.data() + 32, &json_bytes, 8);
  std::memcpy(header.data() + 40, &json_crc, 4);
  std::memcpy(header.data() + 44, &table_crc, 4);
  std::memcpy(header.data() + 48, &file_bytes, 8);
  kiln::test::write_bytes(path, header + table + json + head_pad + payload);
}

// A real checkpoint of the tiny model, its metadata changed by `edit`, at dir/name.
fs::path edited_checkpoint(const TempDir& dir, const std::string& name,
                           const std::function<void(nlohmann::json&)>& edit) {
  const fs::path good = dir / "good.ckpt";
  if (!fs::exists(good)) {
    kiln::Trainer t(tiny(), train(), kiln::make_cpu_backend(kiln::DType::f32, 1), 3);
    t.save_checkpoint(good, "{}");
  }
  CheckpointParts p = read_parts(good);
  edit(p.meta);
  write_parts(dir / name, p);
  return dir / name;
}

}  // namespace

TEST_CASE("model sizes are bounded with overflow-checked arithmetic", "[hostile]") {
  auto refused = [](const std::function<void(kiln::ModelConfig&)>& edit) {
    kiln::ModelConfig m = tiny();
    edit(m);
    return error_of([&] { m.validate(); });
  };
  CHECK_THAT(refused([](auto& m) { m.n_layer = 1'000'000'000'000; }),
             Catch::Contains("n_layer 1000000000000 exceeds kiln's limit 16384"));
  CHECK_THAT(refused([](auto& m) { m.n_embd = 4'000'000'000; }), Catch::Contains("n_embd"));
  CHECK_THAT(refused([](auto& m) { m.max_seq_len = int64_t{1} << 40; }),
             Catch::Contains("max_seq_len 1099511627776 exceeds"));
  // Every dimension within its cap, the total not: refused before anything is laid out.
  CHECK_THAT(refused([](auto& m) {
               m.n_layer = kiln::limits::kMaxLayers;
               m.n_embd = kiln::limits::kMaxChannels;
               m.n_head = 64;
             }),
             Catch::Contains("parameter elements exceed"));
  CHECK_THROWS_AS(kiln::ParamLayout([] {
                    kiln::ModelConfig m = tiny();
                    m.n_layer = int64_t{1} << 40;
                    return m;
                  }()),
                  kiln::Error);
  CHECK(refused([](auto&) {}).empty());
  CHECK(tiny().num_parameters() > 0);

  CHECK_THAT(error_of([] { kiln::checked_mul(int64_t{1} << 40, int64_t{1} << 30, "x"); }),
             Catch::Contains("x overflows"));
  CHECK_THAT(error_of([] { kiln::checked_add(INT64_MAX, 1, "y"); }),
             Catch::Contains("y overflows"));

  // Activations of a training shape, the cache of a generator.
  kiln::ModelConfig wide = tiny();
  wide.n_embd = 1 << 16;
  wide.n_head = 64;
  wide.n_layer = 16;
  wide.max_seq_len = 1 << 16;
  kiln::TrainConfig big = train();
  big.batch = 1 << 14;
  big.seq_len = 1 << 16;
  CHECK_THAT(error_of([&] { big.validate(wide); }), Catch::Contains("activation"));
  CHECK_THAT(error_of([&] { wide.validate(); }), Catch::Equals(""));
  kiln::ModelConfig longer = tiny();
  longer.n_embd = 4096;
  longer.n_head = 32;
  longer.n_layer = 64;
  longer.max_seq_len = 1 << 24;
  CHECK_THAT(error_of([&] { longer.validate(); }), Catch::Equals(""));
  CHECK_THAT(error_of([&] { kiln::check_generation_limits(longer); }),
             Catch::Contains("generation: max_seq_len 16777216"));
  CHECK_NOTHROW(kiln::check_generation_limits(tiny()));
}

TEST_CASE("a checkpoint claiming a huge model is refused before allocation, naming file and field",
          "[hostile]") {
  TempDir dir;
  const fs::path layers = edited_checkpoint(
      dir, "layers.ckpt", [](nlohmann::json& j) { j["model"]["n_layer"] = 1'000'000'000'000; });
  std::vector<float> weights;
  kiln::Status status = kiln::Status::ok;
  const auto start = std::chrono::steady_clock::now();
  const std::string m = error_of([&] { kiln::read_checkpoint(layers, &weights); }, &status);
  CHECK(status == kiln::Status::data_error);
  CHECK_THAT(m, Catch::Contains("layers.ckpt") && Catch::Contains("n_layer 1000000000000"));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(60));
  // Within every limit but far more values than the file holds: refused by the section sizes,
  // before the weights' vector grows.
  const fs::path big = edited_checkpoint(dir, "big.ckpt", [](nlohmann::json& j) {
    j["model"]["n_layer"] = 4000;
    j["model"]["n_embd"] = 4096;
    j["model"]["n_head"] = 32;
    j.erase("param_count");
  });
  const std::string mb = error_of([&] { kiln::read_checkpoint(big, &weights); }, &status);
  CHECK(status == kiln::Status::data_error);
  CHECK_THAT(mb, Catch::Contains("big.ckpt") && Catch::Contains("values where"));
  CHECK(weights.capacity() == 0);
#ifdef KILN_GENERATE_EXE
  // The reproducer of issue 13: generate --checkpoint on that file gives one line and status 1.
  const fs::path log = dir / "log.txt";
  const int rc = std::system((std::string(KILN_GENERATE_EXE) + " --backend cpu --checkpoint '" +
                              layers.string() + "' > '" + log.string() + "' 2>&1")
                                 .c_str());
  CHECK(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 1);
  CHECK_THAT(kiln::test::read_bytes(log),
             Catch::Contains("layers.ckpt") && Catch::Contains("n_layer 1000000000000 exceeds"));
#endif
  const fs::path seq = edited_checkpoint(
      dir, "seq.ckpt", [](nlohmann::json& j) { j["model"]["max_seq_len"] = int64_t{1} << 40; });
  CHECK_THAT(error_of([&] { kiln::read_checkpoint(seq, &weights); }),
             Catch::Contains("seq.ckpt") && Catch::Contains("max_seq_len"));
}

TEST_CASE("checkpoint metadata: integers must be JSON integers in range, configs valid",
          "[hostile]") {
  TempDir dir;
  auto refused = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    return error_of([&] { kiln::read_checkpoint(edited_checkpoint(dir, name, edit), nullptr); });
  };
  CHECK_THAT(refused("h.ckpt", [](auto& j) { j["model"]["n_head"] = 1e181; }),
             Catch::Contains("h.ckpt") && Catch::Contains("'n_head' must be an integer"));
  CHECK_THAT(refused("l.ckpt", [](auto& j) { j["model"]["n_layer"] = 2.0; }),
             Catch::Contains("'n_layer' must be an integer"));
  CHECK_THAT(refused("m.ckpt", [](auto& j) { j["model"]["mask_token_id"] = 1e10; }),
             Catch::Contains("'mask_token_id'"));
  CHECK_THAT(refused("s.ckpt", [](auto& j) { j["step"] = -1; }), Catch::Contains("'step'"));
  CHECK_THAT(refused("seed.ckpt", [](auto& j) { j["train"]["seed"] = -5; }),
             Catch::Contains("'seed'"));
  CHECK_THAT(refused("b.ckpt", [](auto& j) { j["train"]["bucket_bytes"] = 0.5; }),
             Catch::Contains("'bucket_bytes'"));
  CHECK_THAT(refused("eps.ckpt", [](auto& j) { j["model"]["layernorm_eps"] = "small"; }),
             Catch::Contains("'layernorm_eps'"));
  // The training config is validated as a whole on load.
  CHECK_THAT(refused("t.ckpt", [](auto& j) { j["train"]["batch"] = 0; }),
             Catch::Contains("t.ckpt") && Catch::Contains("batch must be > 0"));
  CHECK_THAT(refused("T.ckpt", [](auto& j) { j["train"]["seq_len"] = 9; }),
             Catch::Contains("exceeds the model's max_seq_len"));
  CHECK_THAT(refused("p.ckpt", [](auto& j) { j["train"]["on_nonfinite"] = "explode"; }),
             Catch::Contains("on_nonfinite"));
  CHECK(refused("ok.ckpt", [](auto&) {}).empty());
}

TEST_CASE("a checkpoint index naming shard files outside its folder is refused", "[hostile]") {
  TempDir dir;
  for (const char* file : {"../outside", "/etc/passwd", "sub/shard", "..", ""}) {
    const std::string m = error_of([&] {
      kiln::read_checkpoint(
          edited_checkpoint(
              dir, "index.ckpt",
              [&](nlohmann::json& j) {
                j["shards"] = {{{"file", file}, {"rank", 0}, {"begin", 0}, {"end", 10}}};
              }),
          nullptr);
    });
    CHECK_THAT(m, Catch::Contains("shard file name '" + std::string(file) + "'"));
  }
}

TEST_CASE("thread counts are capped; a pool that cannot start a thread fails cleanly",
          "[hostile]") {
  CHECK_THAT(error_of([] { kiln::make_cpu_backend(kiln::DType::f32, 100000); }),
             Catch::Contains("cpu backend: threads must lie in [0, 1024] (got 100000"));
  CHECK_THAT(error_of([] { kiln::make_cpu_backend(kiln::DType::f32, -1); }),
             Catch::Contains("threads must lie in"));
  // Worker 5 of 7 is refused: the four started are stopped and joined (no deadlock, no
  // std::terminate), and the error names what failed.
  kiln::Status status = kiln::Status::ok;
  const std::string m = error_of([] { kiln::impl::ThreadPool pool(8, 5); }, &status);
  CHECK(status == kiln::Status::internal_error);
  CHECK_THAT(m, Catch::Contains("cannot start worker thread 5 of 7") &&
                    Catch::Contains("Resource temporarily unavailable"));
  kiln::impl::ThreadPool pool(3);
  std::vector<int> hit(3, 0);
  pool.parallel_for(3, 1, [&](int, int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      hit[static_cast<std::size_t>(i)] = 1;
  });
  CHECK(hit == std::vector<int>{1, 1, 1});
}

TEST_CASE("multi-tensor preparation refuses sizes whose chunk count overflows", "[hostile]") {
  kiln_adamw_tensor_t a{};
  a.master = a.m = a.v = reinterpret_cast<float*>(uintptr_t{0x10000});
  a.grad = a.master;
  a.n = std::numeric_limits<int64_t>::max() - 1;
  int64_t total = -1;
  CHECK(kiln_adamw_prepare(&a, 1, &total) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK(total == -1);
  kiln_norm_tensor_t n{reinterpret_cast<const float*>(uintptr_t{0x10000}),
                       std::numeric_limits<int64_t>::max(), 0};
  CHECK(kiln_global_norm_prepare(&n, 1, &total) == KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains("2^31 - 1 chunks"));
  CHECK(total == -1);
}

TEST_CASE("a rank stuck outside any collective cannot hang run_in_process", "[hostile]") {
  kiln::CommOptions o;
  o.timeout = std::chrono::milliseconds(300);
  std::vector<kiln::CommFailure> reports;
  o.on_failure = [&](const kiln::CommFailure& f) { reports.push_back(f); };
  // Rank 0 blocks until released (as on a FIFO nobody reads); rank 1 waits for it in a barrier.
  auto release = std::make_shared<std::promise<void>>();
  std::shared_future<void> released = release->get_future().share();
  const auto start = std::chrono::steady_clock::now();
  kiln::Status status = kiln::Status::ok;
  const std::string m = error_of(
      [&] {
        kiln::run_in_process(2, kiln::BackendKind::cpu, o, [released](kiln::Communicator& c) {
          if (c.rank() == 0) {
            released.wait();
            return;
          }
          c.barrier();
        });
      },
      &status);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  release->set_value();  // the detached rank ends; it owns what it uses
  CHECK(status == kiln::Status::timeout);
  CHECK_THAT(m, Catch::Contains("barrier #1 timed out") && Catch::Contains("rank 0") &&
                    Catch::Contains("rank(s) 0 did not end"));
  CHECK(seconds < 60);  // two deadlines of 0.3 s; generous for a loaded machine
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].rank == 1);
  CHECK(reports[0].operation == "barrier");
  CHECK(reports[0].status == kiln::Status::timeout);
}

TEST_CASE("run_in_process reports a failed rank's own error before the echo of it", "[hostile]") {
  kiln::CommOptions o;
  o.timeout = std::chrono::seconds(60);
  // Rank 0 repeats another rank's failure at once; rank 1's own error comes later.
  const std::string m = error_of([&] {
    kiln::run_in_process(2, kiln::BackendKind::cpu, o, [](kiln::Communicator& c) {
      if (c.rank() == 0) throw kiln::RemoteError(kiln::Status::io_error, "failed on rank 1");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      throw kiln::Error(kiln::Status::io_error, "cannot open 'shard.1'");
    });
  });
  CHECK(m == "cannot open 'shard.1'");
  // Through the group: rank 1 leaves with its error, rank 0's collective fails because of it.
  const std::string g = error_of([&] {
    kiln::run_in_process(2, kiln::BackendKind::cpu, o, [](kiln::Communicator& c) {
      if (c.rank() == 1) throw kiln::Error(kiln::Status::data_error, "the real problem");
      c.barrier();
    });
  });
  CHECK(g == "the real problem");
}

TEST_CASE("temporaries of killed saves are removed; live writers' are kept", "[hostile]") {
  TempDir dir;
  // A writer killed midway (as by kill -9) leaves its temporary behind.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    kiln::AtomicFileWriter w(dir / "latest.ckpt");
    w.write("partial", 7);
    w.write(std::string(1 << 20, 'x'));
    ::raise(SIGKILL);
    ::_exit(0);
  }
  int wstatus = 0;
  ::waitpid(child, &wstatus, 0);
  CHECK(WIFSIGNALED(wstatus));
  auto temporaries = [&] {
    int n = 0;
    for (const auto& name : dir.list())
      n += name.find(".tmp.") != std::string::npos;
    return n;
  };
  REQUIRE(temporaries() == 1);
  // A live writer of this process, and files of other names, are left alone.
  kiln::AtomicFileWriter live(dir / "other.ckpt");
  live.write("alive", 5);
  kiln::test::write_bytes(dir / ".notes.tmp.txt", "mine");
  kiln::test::write_bytes(dir / "data.tmp.1.2", "mine");
  CHECK(kiln::remove_stale_temporaries(dir.path()) == 1);
  CHECK(temporaries() == 3);  // the live one and the two foreign ones
  live.commit();
  CHECK(kiln::test::read_bytes(dir / "other.ckpt") == "alive");

  // A checkpoint save and a load clean their folder.
  kiln::Trainer t(tiny(), train(), kiln::make_cpu_backend(kiln::DType::f32, 1), 3);
  kiln::test::write_bytes(dir / ".latest.ckpt.tmp.999999.0", "stale");
  t.save_checkpoint(dir / "latest.ckpt", "{}");
  CHECK(!fs::exists(dir / ".latest.ckpt.tmp.999999.0"));
  kiln::test::write_bytes(dir / ".latest.ckpt.step00000001.rank00000-of-00002.tmp.7.3", "stale");
  kiln::read_checkpoint(dir / "latest.ckpt", nullptr);
  CHECK(!fs::exists(dir / ".latest.ckpt.step00000001.rank00000-of-00002.tmp.7.3"));
  CHECK(fs::exists(dir / ".notes.tmp.txt"));
  CHECK(kiln::remove_stale_temporaries(dir / "missing") == 0);
}
