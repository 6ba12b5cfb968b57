// GPT-2's byte-level BPE: the pre-tokenizer against the `regex` module, ids against published
// examples and a reference corpus (tests/cpu/data/gpt2_cases.json, see gen_gpt2_cases.py), round
// trips, and damaged vocabulary files. Tests that need OpenAI's vocabulary (data/gpt2, fetched by
// scripts/fetch_gpt2_vocab.sh) skip without it, unless KILN_REQUIRE_GPT2_VOCAB=1 (scripts/test.sh
// sets it where npm could fetch the files), where they fail instead.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/io.hpp"
#include "kiln/tokenizer.hpp"
#include "tests/common/encode_checks.hpp"
#include "tests/common/files.hpp"
#include "tests/common/support.hpp"

using kiln::Gpt2Tokenizer;
using kiln::Status;
using kiln::test::TempDir;

namespace {

std::filesystem::path vocab_dir() {
  if (const char* env = std::getenv("KILN_GPT2_VOCAB_DIR"); env && *env) return env;
  return std::filesystem::path(KILN_SOURCE_DIR) / "data" / "gpt2";
}

bool vocab_present() {
  const auto dir = vocab_dir();
  return std::filesystem::exists(dir / "encoder.json") &&
         std::filesystem::exists(dir / "vocab.bpe");
}

bool vocab_required() {
  const char* env = std::getenv("KILN_REQUIRE_GPT2_VOCAB");
  return env && *env && std::string(env) != "0";
}

// The real tokenizer, loaded once per process (about 0.1 s).
const Gpt2Tokenizer& gpt2() {
  static const Gpt2Tokenizer tok(vocab_dir());
  return tok;
}

#define REQUIRE_GPT2_VOCAB()                                                                  \
  do {                                                                                        \
    if (!vocab_present()) {                                                                   \
      const std::string where = vocab_dir().string();                                         \
      if (vocab_required())                                                                   \
        FAIL("GPT-2 vocabulary missing from " << where                                        \
                                              << " although KILN_REQUIRE_GPT2_VOCAB is set"); \
      KILN_SKIP("GPT-2 vocabulary not in " + where + ": run scripts/fetch_gpt2_vocab.sh");    \
    }                                                                                         \
  } while (0)

nlohmann::json load_cases() {
  const auto path =
      std::filesystem::path(KILN_SOURCE_DIR) / "tests" / "cpu" / "data" / "gpt2_cases.json";
  return nlohmann::json::parse(kiln::read_file(path));
}

// GPT-2's byte -> printable character mapping, for writing small vocabularies in tests.
std::string byte_char(unsigned char b) {
  int k = 0;
  for (int x = 0; x < 256; ++x) {
    const bool printable = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
    const int cp = printable ? x : 256 + k++;
    if (x == b) {
      std::string s;
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      }
      return s;
    }
  }
  return {};
}

std::string spell(std::string_view bytes) {
  std::string s;
  for (char c : bytes)
    s += byte_char(static_cast<unsigned char>(c));
  return s;
}

// A tiny byte-level vocabulary: the 256 bytes, then merges (in rank order), then <|endoftext|>.
void write_vocab(const std::filesystem::path& dir,
                 const std::vector<std::pair<std::string, std::string>>& merges) {
  nlohmann::json enc = nlohmann::json::object();
  int id = 0;
  for (int b = 0; b < 256; ++b)
    enc[byte_char(static_cast<unsigned char>(b))] = id++;
  std::string bpe = "#version: 0.2\n";
  for (const auto& [l, r] : merges) {
    enc[spell(l + r)] = id++;
    bpe += spell(l) + " " + spell(r) + "\n";
  }
  enc["<|endoftext|>"] = id;
  kiln::test::write_bytes(dir / "encoder.json", enc.dump());
  kiln::test::write_bytes(dir / "vocab.bpe", bpe);
}

}  // namespace

TEST_CASE("GPT-2 pre-tokenization matches the regex module on a varied corpus", "[gpt2]") {
  const nlohmann::json cases = load_cases();
  REQUIRE(cases.size() > 50);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    INFO("text: " << text);
    std::vector<std::string> got;
    for (const auto piece : Gpt2Tokenizer::split(text))
      got.emplace_back(piece);
    CHECK(got == c["pieces"].get<std::vector<std::string>>());
  }
}

TEST_CASE("GPT-2 pre-tokenization covers invalid UTF-8 as non-letters", "[gpt2]") {
  auto pieces = [](std::string_view s) {
    std::vector<std::string> v;
    for (const auto p : Gpt2Tokenizer::split(s))
      v.emplace_back(p);
    return v;
  };
  using V = std::vector<std::string>;
  CHECK(pieces("abc\xff\xfe"
               "def") == V{"abc", "\xff\xfe", "def"});
  CHECK(pieces(" \xff!x") == V{" \xff!", "x"});
  CHECK(pieces("caf\xc3") == V{"caf", "\xc3"});  // a cut-off é
  CHECK(pieces("\xe2\x82 1") == V{"\xe2\x82", " 1"});
  // Every byte string splits into pieces that concatenate back to it.
  auto rng = kiln::test::make_rng(31);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(static_cast<std::size_t>(rng() % 64), '\0');
    for (auto& ch : s)
      ch = static_cast<char>(rng() % 4 == 0 ? ' ' : rng());
    std::string joined;
    for (const auto& p : pieces(s)) {
      REQUIRE(!p.empty());
      joined += p;
    }
    REQUIRE(joined == s);
  }
}

TEST_CASE("BPE merges by rank on a small vocabulary", "[gpt2]") {
  TempDir dir;
  // Ranks: "l l" first, then "h e", "he ll", "hell o", "a a".
  write_vocab(dir.path(), {{"l", "l"}, {"h", "e"}, {"he", "ll"}, {"hell", "o"}, {"a", "a"}});
  const Gpt2Tokenizer tok(dir.path());
  CHECK(tok.vocab_size() == 262);
  CHECK(tok.eot_token() == 261);
  const std::int32_t ll = 256, he = 257, hell = 258, hello = 259, aa = 260;
  CHECK(tok.encode("hello") == std::vector<std::int32_t>{hello});
  CHECK(tok.encode("hellx") == std::vector<std::int32_t>{hell, 'x'});
  CHECK(tok.encode("lll") == std::vector<std::int32_t>{ll, 'l'});  // left to right, no overlap
  CHECK(tok.encode("aaaaa") == std::vector<std::int32_t>{aa, aa, 'a'});
  CHECK(tok.encode("hehe") == std::vector<std::int32_t>{he, he});
  CHECK(tok.encode("he llo") == std::vector<std::int32_t>{he, ' ', ll, 'o'});
  CHECK(tok.decode(tok.encode("hello hell")) == "hello hell");
  CHECK(tok.token_bytes(hello) == "hello");
  CHECK(tok.is_special(261));
  CHECK(!tok.is_special(hello));
}

TEST_CASE("damaged GPT-2 vocabulary files are rejected naming file and place", "[gpt2]") {
  TempDir dir;
  write_vocab(dir.path(), {{"a", "b"}});
  const auto enc = dir / "encoder.json", bpe = dir / "vocab.bpe";
  const std::string good_enc = kiln::test::read_bytes(enc), good_bpe = kiln::test::read_bytes(bpe);
  auto expect = [&](const char* text, const std::filesystem::path& culprit) {
    try {
      Gpt2Tokenizer tok(dir.path());
      FAIL("loaded a damaged vocabulary");
    } catch (const kiln::Error& e) {
      CHECK(e.status() == Status::data_error);
      CHECK_THAT(e.message(), Catch::Contains(text) && Catch::Contains(culprit.string()));
    }
    kiln::test::write_bytes(enc, good_enc);
    kiln::test::write_bytes(bpe, good_bpe);
  };
  kiln::test::write_bytes(enc, good_enc.substr(0, good_enc.size() / 2));
  expect("not valid JSON", enc);
  kiln::test::write_bytes(enc, "[1, 2]");
  expect("expected a non-empty object", enc);
  kiln::test::write_bytes(enc, R"({"a": 0, "b": 0})");
  expect("is given to two tokens", enc);
  kiln::test::write_bytes(enc, R"({"a": 5})");
  expect("ids must be dense", enc);
  kiln::test::write_bytes(enc, R"({"a": "zero"})");
  expect("is not an integer", enc);
  nlohmann::json j = nlohmann::json::parse(good_enc);
  j.erase("<|endoftext|>");
  kiln::test::write_bytes(enc, j.dump());
  expect("no <|endoftext|>", enc);
  kiln::test::write_bytes(bpe, good_bpe + "a b c\n");
  expect("line 3: expected two tokens", bpe);
  kiln::test::write_bytes(bpe, good_bpe + "x y\n");
  expect("line 3: merge 'x y' uses or makes a token", bpe);
  kiln::test::write_bytes(bpe, "#version: 0.2\n");
  expect("holds no merges", bpe);
}

TEST_CASE("GPT-2 encodes published examples to their known ids", "[gpt2]") {
  REQUIRE_GPT2_VOCAB();
  const Gpt2Tokenizer& tok = gpt2();
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.eot_token() == 50256);
  CHECK(tok.token_bytes(50256) == "<|endoftext|>");
  CHECK(tok.is_special(50256));
  CHECK(!tok.is_special(262));
  using V = std::vector<std::int32_t>;
  CHECK(tok.encode("Hello world") == V{15496, 995});
  CHECK(tok.encode("hello world") == V{31373, 995});
  CHECK(tok.encode(" the") == V{262});
  CHECK(tok.encode("") == V{});
  CHECK(tok.encode(" ") == V{220});
  CHECK(tok.encode("\t") == V{197});
  CHECK(tok.encode("This is some text") == V{1212, 318, 617, 2420});
  CHECK(tok.encode("indivisible") == V{521, 452, 12843});
  CHECK(tok.encode("hello \xF0\x9F\x91\x8B world \xF0\x9F\x8C\x8D") ==
        V{31373, 50169, 233, 995, 12520, 234, 235});
  CHECK(tok.encode("Every effort moves you") == V{6109, 3626, 6100, 345});
  CHECK(tok.encode("Hello, I'm a language model,") == V{15496, 11, 314, 1101, 257, 3303, 2746, 11});
  CHECK(tok.token_bytes(198) == "\n");
  CHECK(tok.token_bytes(628) == "\n\n");
  // The text of the special token is ordinary text to encode().
  const V eot_text = tok.encode("<|endoftext|>");
  CHECK(eot_text == V{27, 91, 437, 1659, 5239, 91, 29});
}

TEST_CASE("GPT-2 encodes a varied corpus exactly as the reference does and decodes it back",
          "[gpt2]") {
  REQUIRE_GPT2_VOCAB();
  const Gpt2Tokenizer& tok = gpt2();
  for (const auto& c : load_cases()) {
    const std::string text = c["text"];
    INFO("text: " << text);
    const auto ids = tok.encode(text);
    CHECK(ids == c["ids"].get<std::vector<std::int32_t>>());
    CHECK(tok.decode(ids) == text);
    CHECK(tok.encode(text) == ids);  // the second time from the cache
  }
}

TEST_CASE("GPT-2 round-trips arbitrary bytes and is safe to share between threads", "[gpt2]") {
  REQUIRE_GPT2_VOCAB();
  const Gpt2Tokenizer& tok = gpt2();
  auto rng = kiln::test::make_rng(32);
  std::vector<std::string> texts;
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(static_cast<std::size_t>(rng() % 200), '\0');
    for (auto& ch : s)
      ch = static_cast<char>(rng() % 3 == 0 ? "ab cd\n'"[rng() % 7] : rng());
    const auto ids = tok.encode(s);
    for (const auto id : ids)
      REQUIRE(!tok.is_special(id));
    REQUIRE(tok.decode(ids) == s);
    texts.push_back(s);
  }
  // Two threads encoding the same texts (sharing the cache) agree with one thread.
  kiln::test::check_concurrent_encoding(texts, [&](const std::string& t) { return tok.encode(t); });
}

TEST_CASE("a long single piece encodes in reasonable time", "[gpt2]") {
  REQUIRE_GPT2_VOCAB();
  const std::string s = kiln::test::long_single_piece();
  const auto ids = gpt2().encode(s);
  CHECK(gpt2().decode(ids) == s);
  CHECK(ids.size() < s.size() / 2);
}
