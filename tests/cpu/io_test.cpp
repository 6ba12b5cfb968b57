// Safe file I/O: CRC-32C, the atomic writer (old file intact on failure, no temporaries left),
// whole-file reads and memory maps, with errors that name the file.
#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kiln/io.hpp"
#include "runtime/io/io_internal.hpp"
#include "tests/common/files.hpp"
#include "tests/common/support.hpp"

using kiln::Status;
using kiln::test::TempDir;

namespace {

std::uint32_t crc_of(const std::string& s) {
  return kiln::crc32c(s.data(), s.size());
}

template <typename F>
kiln::Error error_of(F&& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return e;
  }
  FAIL("no kiln::Error thrown");
  return kiln::Error(Status::ok, "");
}

}  // namespace

TEST_CASE("crc32c matches the published check values", "[io]") {
  CHECK(crc_of("") == 0u);
  CHECK(crc_of("123456789") == 0xE3069283u);
  // RFC 3720 (iSCSI) B.4 test vectors.
  CHECK(crc_of(std::string(32, '\0')) == 0x8A9136AAu);
  CHECK(crc_of(std::string(32, '\xFF')) == 0x62A8AB43u);
  std::string up(32, '\0'), down(32, '\0');
  for (int i = 0; i < 32; ++i) {
    up[i] = static_cast<char>(i);
    down[i] = static_cast<char>(31 - i);
  }
  CHECK(crc_of(up) == 0x46DD794Eu);
  CHECK(crc_of(down) == 0x113FDB5Cu);
  CHECK(kiln::impl::crc32c_portable("123456789", 9) == 0xE3069283u);
}

TEST_CASE("crc32c is incremental and both paths agree at every length and offset", "[io]") {
  auto rng = kiln::test::make_rng(11);
  std::vector<unsigned char> data(4096 + 7);
  for (auto& b : data)
    b = static_cast<unsigned char>(rng());
  for (std::size_t offset = 0; offset < 8; ++offset) {
    for (std::size_t len : {0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 1000, 4096}) {
      const unsigned char* p = data.data() + offset;
      const std::uint32_t whole = kiln::crc32c(p, len);
      CHECK(kiln::impl::crc32c_portable(p, len) == whole);
      const std::size_t cut = len / 3;
      CHECK(kiln::crc32c(p + cut, len - cut, kiln::crc32c(p, cut)) == whole);
    }
  }
  // Long buffers take the three-stream path of the hardware CRC (blocks of 3 x 4 KiB).
  std::vector<unsigned char> big((1 << 20) + 29);
  for (auto& b : big)
    b = static_cast<unsigned char>(rng());
  for (std::size_t len : {std::size_t{12287}, std::size_t{12288}, std::size_t{12289},
                          std::size_t{24576 + 100}, big.size() - 5}) {
    for (std::size_t offset : {0, 3}) {
      const unsigned char* p = big.data() + offset;
      const std::uint32_t want = kiln::impl::crc32c_portable(p, len);
      CHECK(kiln::crc32c(p, len) == want);
      CHECK(kiln::crc32c(p + 5000, len - 5000, kiln::crc32c(p, 5000)) == want);
    }
  }
  // A single flipped bit changes the checksum.
  const std::uint32_t before = kiln::crc32c(data.data(), data.size());
  data[1234] ^= 0x10;
  CHECK(kiln::crc32c(data.data(), data.size()) != before);
}

TEST_CASE("the atomic writer creates and replaces files and leaves no temporary", "[io]") {
  TempDir dir;
  const auto path = dir / "model.bin";
  kiln::write_file_atomically(path, "first version");
  CHECK(kiln::test::read_bytes(path) == "first version");
  CHECK(dir.list() == std::vector<std::string>{"model.bin"});

  // Larger than the writer's buffer, in pieces of odd sizes, plus a patched header.
  std::string big(3 << 20, '\0');
  auto rng = kiln::test::make_rng(12);
  for (auto& c : big)
    c = static_cast<char>(rng());
  kiln::write_file_atomically(path, [&](kiln::AtomicFileWriter& w) {
    w.write("HDR?");
    std::size_t pos = 0, step = 1;
    while (pos < big.size()) {
      const std::size_t n = std::min(step, big.size() - pos);
      w.write(big.data() + pos, n);
      pos += n;
      step = step * 3 + 1;
    }
    CHECK(w.size() == big.size() + 4);
    w.patch(3, "!", 1);
  });
  CHECK(kiln::test::read_bytes(path) == "HDR!" + big);
  CHECK(dir.list() == std::vector<std::string>{"model.bin"});
}

TEST_CASE("a write that fails midway leaves the old file intact and no temporary", "[io]") {
  TempDir dir;
  const auto path = dir / "ckpt.bin";
  kiln::write_file_atomically(path, "the good checkpoint");
  const std::string chunk(700 * 1024, 'x');  // several chunks: bytes reach the temporary on disk
  std::filesystem::path temp_seen;
  CHECK_THROWS_WITH(kiln::write_file_atomically(path,
                                                [&](kiln::AtomicFileWriter& w) {
                                                  for (int i = 0; i < 5; ++i)
                                                    w.write(chunk);
                                                  temp_seen = w.temp_path();
                                                  REQUIRE(std::filesystem::exists(temp_seen));
                                                  CHECK(std::filesystem::file_size(temp_seen) > 0);
                                                  throw std::runtime_error("simulated crash");
                                                }),
                    "simulated crash");
  CHECK(kiln::test::read_bytes(path) == "the good checkpoint");
  CHECK(!std::filesystem::exists(temp_seen));
  CHECK(dir.list() == std::vector<std::string>{"ckpt.bin"});

  // A writer dropped without commit() (an exception unwinding through the caller) likewise.
  {
    kiln::AtomicFileWriter w(path);
    w.write("half");
  }
  CHECK(kiln::test::read_bytes(path) == "the good checkpoint");
  CHECK(dir.list() == std::vector<std::string>{"ckpt.bin"});

  // A new file that fails midway does not appear at all.
  CHECK_THROWS(kiln::write_file_atomically(dir / "new.bin", [](kiln::AtomicFileWriter& w) {
    w.write("partial");
    throw std::runtime_error("no");
  }));
  CHECK(dir.list() == std::vector<std::string>{"ckpt.bin"});
}

TEST_CASE("the atomic writer rejects misuse and unwritable places with clear errors", "[io]") {
  TempDir dir;
  const auto missing = dir / "no-such-dir" / "file.bin";
  const kiln::Error e = error_of([&] { kiln::AtomicFileWriter w(missing); });
  CHECK(e.status() == Status::io_error);
  CHECK_THAT(e.message(),
             Catch::Contains(missing.string()) && Catch::Contains("No such file or directory"));

  kiln::AtomicFileWriter w(dir / "a.bin");
  w.write("abc");
  const kiln::Error p = error_of([&] { w.patch(2, "xy", 2); });
  CHECK(p.status() == Status::invalid_argument);
  CHECK_THAT(p.message(), Catch::Contains("not all written yet"));
  w.commit();
  CHECK(kiln::test::read_bytes(dir / "a.bin") == "abc");
  const kiln::Error again = error_of([&] { w.write("more"); });
  CHECK(again.status() == Status::invalid_argument);
  CHECK_THAT(again.message(), Catch::Contains("already committed"));
  CHECK(dir.list() == std::vector<std::string>{"a.bin"});
}

TEST_CASE("read_file and MappedFile return the bytes or name the missing file", "[io]") {
  TempDir dir;
  std::string bytes = std::string("a\0b\xff", 4) + std::string(10000, 'z');
  kiln::test::write_bytes(dir / "f.bin", bytes);
  CHECK(kiln::read_file(dir / "f.bin") == bytes);

  kiln::MappedFile m(dir / "f.bin");
  REQUIRE(m.size() == bytes.size());
  CHECK(std::memcmp(m.data(), bytes.data(), bytes.size()) == 0);
  kiln::MappedFile moved = std::move(m);
  CHECK(moved.size() == bytes.size());
  CHECK(m.size() == 0);  // NOLINT(bugprone-use-after-move): the moved-from map is empty

  kiln::test::write_bytes(dir / "empty", "");
  CHECK(kiln::read_file(dir / "empty").empty());
  CHECK(kiln::MappedFile(dir / "empty").size() == 0);

  const auto missing = dir / "missing.json";
  for (const kiln::Error& e : {error_of([&] { kiln::read_file(missing); }),
                               error_of([&] { kiln::MappedFile x(missing); })}) {
    CHECK(e.status() == Status::io_error);
    CHECK_THAT(e.message(), Catch::Contains(kiln::test::quoted(missing)) &&
                                Catch::Contains("No such file or directory"));
  }
  const kiln::Error d = error_of([&] { kiln::read_file(dir.path()); });
  CHECK(d.status() == Status::io_error);
  CHECK_THAT(d.message(), Catch::Contains("not a regular file"));
}
