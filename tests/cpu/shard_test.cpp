// Token shards: round trips in both dtypes, and every kind of damage rejected with an error that
// names the file.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "kiln/data.hpp"
#include "tests/common/files.hpp"
#include "tests/common/support.hpp"

using kiln::Status;
using kiln::TokenDtype;
using kiln::TokenShard;
using kiln::test::TempDir;

namespace {

std::vector<std::int32_t> random_tokens(std::size_t n, std::int32_t vocab, std::uint64_t stream) {
  auto rng = kiln::test::make_rng(stream);
  std::uniform_int_distribution<std::int32_t> d(0, vocab - 1);
  std::vector<std::int32_t> v(n);
  for (auto& t : v)
    t = d(rng);
  return v;
}

kiln::Error open_error(const std::filesystem::path& path, bool verify = true) {
  try {
    TokenShard s(path, verify);
  } catch (const kiln::Error& e) {
    return e;
  }
  FAIL("the shard opened");
  return kiln::Error(Status::ok, "");
}

// Overwrites `bytes` at `offset` of the file.
void poke(const std::filesystem::path& path, std::size_t offset, std::string_view bytes) {
  std::string s = kiln::test::read_bytes(path);
  REQUIRE(offset + bytes.size() <= s.size());
  s.replace(offset, bytes.size(), bytes);
  kiln::test::write_bytes(path, s);
}

}  // namespace

TEST_CASE("token shards round-trip in uint16 and uint32", "[shard]") {
  TempDir dir;
  for (const std::int32_t vocab : {257, 50257, 65536, 70000, 1 << 30}) {
    const auto tokens = random_tokens(100003, vocab, static_cast<std::uint64_t>(vocab));
    const auto path = dir / (std::to_string(vocab).append(".bin"));
    {
      kiln::TokenShardWriter w(path, vocab, vocab - 1);
      // In uneven pieces, across the writer's internal chunking.
      std::size_t pos = 0, step = 1;
      while (pos < tokens.size()) {
        const std::size_t n = std::min(step, tokens.size() - pos);
        w.write(std::span(tokens).subspan(pos, n));
        pos += n;
        step = step * 5 + 3;
      }
      CHECK(w.size() == static_cast<std::int64_t>(tokens.size()));
      w.commit();
    }
    const TokenShard s(path);
    CHECK(s.size() == static_cast<std::int64_t>(tokens.size()));
    CHECK(s.dtype() == (vocab <= 65536 ? TokenDtype::u16 : TokenDtype::u32));
    CHECK(s.vocab_size() == vocab);
    CHECK(s.eot_token() == vocab - 1);
    CHECK(std::filesystem::file_size(path) ==
          TokenShard::kHeaderBytes + tokens.size() * static_cast<std::size_t>(s.dtype()));
    CHECK(s.read_all() == tokens);
    std::vector<std::int32_t> part(1000);
    s.read(5000, part);
    CHECK(std::equal(part.begin(), part.end(), tokens.begin() + 5000));
  }
  // An empty shard and one without an end-of-text token.
  kiln::write_token_shard(dir / "empty.bin", {}, 10);
  const TokenShard e(dir / "empty.bin");
  CHECK(e.size() == 0);
  CHECK(e.eot_token() == -1);
  CHECK(e.read_all().empty());
}

TEST_CASE("the shard writer rejects bad tokens and settings before writing", "[shard]") {
  TempDir dir;
  const std::vector<std::int32_t> bad = {1, 2, 300};
  CHECK_THROWS_WITH(kiln::write_token_shard(dir / "x.bin", bad, 257),
                    Catch::Contains("token 300 (at 2) is outside the vocabulary [0, 257)"));
  const std::vector<std::int32_t> negative = {-1};
  CHECK_THROWS_AS(kiln::write_token_shard(dir / "x.bin", negative, 257), kiln::Error);
  CHECK_THROWS_WITH(kiln::TokenShardWriter(dir / "x.bin", 70000, -1, TokenDtype::u16),
                    Catch::Contains("does not fit uint16"));
  CHECK_THROWS_WITH(kiln::TokenShardWriter(dir / "x.bin", 100, 100),
                    Catch::Contains("eot_token 100 is outside"));
  // Nothing was left behind by the failed writers.
  CHECK(dir.list().empty());
}

TEST_CASE("damaged shards are rejected with errors naming the file", "[shard]") {
  TempDir dir;
  const auto tokens = random_tokens(5000, 50257, 3);
  const auto good = dir / "good.bin";
  kiln::write_token_shard(good, tokens, 50257, 50256);
  const std::string bytes = kiln::test::read_bytes(good);
  const auto path = dir / "bad.bin";
  const std::string name = kiln::test::quoted(path);

  SECTION("truncated") {
    kiln::test::write_bytes(path, bytes.substr(0, bytes.size() - 3));
    const kiln::Error e = open_error(path);
    CHECK(e.status() == Status::data_error);
    CHECK_THAT(e.message(), Catch::Contains(name) && Catch::Contains("truncated") &&
                                Catch::Contains("5000 tokens"));
  }
  SECTION("truncated inside the header") {
    kiln::test::write_bytes(path, bytes.substr(0, 40));
    CHECK_THAT(open_error(path).message(),
               Catch::Contains(name) && Catch::Contains("shorter than the 64-byte header"));
  }
  SECTION("trailing bytes") {
    kiln::test::write_bytes(path, bytes + "xx");
    CHECK_THAT(open_error(path).message(),
               Catch::Contains(name) && Catch::Contains("longer than its header says"));
  }
  SECTION("wrong magic") {
    kiln::test::write_bytes(path, bytes);
    poke(path, 0, "GGUF");
    const kiln::Error e = open_error(path);
    CHECK(e.status() == Status::data_error);
    CHECK_THAT(e.message(), Catch::Contains(name) && Catch::Contains("not a kiln token shard"));
  }
  SECTION("wrong version") {
    kiln::test::write_bytes(path, bytes);
    poke(path, 8, std::string("\x02\0\0\0", 4));
    CHECK_THAT(open_error(path).message(), Catch::Contains(name) &&
                                               Catch::Contains("format version 2") &&
                                               Catch::Contains("reads version 1"));
  }
  SECTION("corrupt header") {
    kiln::test::write_bytes(path, bytes);
    poke(path, 16, std::string("\x10", 1));  // token count
    CHECK_THAT(open_error(path).message(),
               Catch::Contains(name) && Catch::Contains("corrupt header"));
  }
  SECTION("corrupt payload") {
    std::string b = bytes;
    b[TokenShard::kHeaderBytes + 777] ^= 0x01;
    kiln::test::write_bytes(path, b);
    const kiln::Error e = open_error(path);
    CHECK(e.status() == Status::data_error);
    CHECK_THAT(e.message(), Catch::Contains(name) && Catch::Contains("payload checksum"));
    // Unverified, it opens; verify() then finds the damage.
    const TokenShard s(path, /*verify=*/false);
    CHECK_THROWS_WITH(s.verify(), Catch::Contains("payload checksum"));
  }
  SECTION("token outside the vocabulary, checksum not verified") {
    std::string b = bytes;
    b[TokenShard::kHeaderBytes + 2 * 10] = '\xFF';
    b[TokenShard::kHeaderBytes + 2 * 10 + 1] = '\xFF';  // 65535 >= 50257
    kiln::test::write_bytes(path, b);
    const TokenShard s(path, /*verify=*/false);
    std::vector<std::int32_t> out(20);
    try {
      s.read(0, out);
      FAIL("read a token outside the vocabulary");
    } catch (const kiln::Error& e) {
      CHECK(e.status() == Status::data_error);
      CHECK_THAT(e.message(),
                 Catch::Contains(name) && Catch::Contains("token 65535 at position 10"));
    }
  }
  SECTION("not there") {
    const kiln::Error e = open_error(dir / "absent.bin");
    CHECK(e.status() == Status::io_error);
    CHECK_THAT(e.message(), Catch::Contains("absent.bin") && Catch::Contains("No such file"));
  }
  SECTION("reads outside the shard") {
    const TokenShard s(good);
    std::vector<std::int32_t> out(10);
    CHECK_THROWS_WITH(s.read(4995, out), Catch::Contains("[4995, 5005) are outside [0, 5000)"));
  }
}

TEST_CASE("find_shards lists one split's shards in name order", "[shard]") {
  TempDir dir;
  for (const char* n : {"train_000001.bin", "val_000000.bin", "train_000000.bin", "train.txt"})
    kiln::write_token_shard(dir / n, std::vector<std::int32_t>{1, 2, 3}, 10);
  const auto train = kiln::find_shards(dir.path(), "train");
  REQUIRE(train.size() == 2);
  CHECK(train[0].filename() == "train_000000.bin");
  CHECK(train[1].filename() == "train_000001.bin");
  CHECK(kiln::find_shards(dir.path(), "val").size() == 1);
  CHECK_THROWS_WITH(kiln::find_shards(dir.path(), "test"), Catch::Contains("test_*.bin"));
  CHECK_THROWS_WITH(kiln::find_shards(dir / "nope", "train"), Catch::Contains("cannot list"));
}
