// The byte tokenizer (no files) and the UTF-8 helpers.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "kiln/tokenizer.hpp"
#include "runtime/tokenizer/unicode.hpp"
#include "tests/common/support.hpp"

using kiln::ByteTokenizer;

TEST_CASE("the byte tokenizer round-trips arbitrary bytes, invalid UTF-8 included", "[tokenizer]") {
  const ByteTokenizer tok;
  CHECK(tok.name() == "byte");
  CHECK(tok.vocab_size() == 257);
  CHECK(tok.eot_token() == 256);
  CHECK(tok.is_special(256));
  CHECK(!tok.is_special(255));
  CHECK(tok.token_bytes(256) == "<|endoftext|>");

  auto rng = kiln::test::make_rng(21);
  for (int trial = 0; trial < 50; ++trial) {
    std::string s(static_cast<std::size_t>(rng() % 300), '\0');
    for (auto& c : s)
      c = static_cast<char>(rng());
    const auto ids = tok.encode(s);
    REQUIRE(ids.size() == s.size());
    for (std::size_t i = 0; i < s.size(); ++i)
      REQUIRE(ids[i] == static_cast<unsigned char>(s[i]));
    REQUIRE(tok.decode(ids) == s);
  }
  const std::string invalid = "\xff\xfe\xc0\xaf\xed\xa0\x80 ok \xe2\x82";
  CHECK(tok.decode(tok.encode(invalid)) == invalid);

  // encode() never produces the special token, even for its text.
  const auto ids = tok.encode("<|endoftext|>");
  CHECK(ids.size() == 13);
  CHECK(std::count(ids.begin(), ids.end(), 256) == 0);
  std::vector<std::int32_t> with_eot = {'a', 256, 'b'};
  CHECK(tok.decode(with_eot) == "a<|endoftext|>b");

  std::vector<std::int32_t> bad = {1, 257};
  CHECK_THROWS_WITH(tok.decode(bad), Catch::Contains("token id 257 is outside the vocabulary"));
  CHECK_THROWS_AS(tok.token_bytes(-1), kiln::Error);
}

TEST_CASE("the byte tokenizer takes extra special tokens after end-of-text", "[tokenizer]") {
  const ByteTokenizer tok({"<|pad|>", "<|sep|>"});
  CHECK(tok.vocab_size() == 259);
  CHECK(tok.token_bytes(257) == "<|pad|>");
  CHECK(tok.token_bytes(258) == "<|sep|>");
  CHECK(tok.is_special(258));
  CHECK_THROWS_WITH(ByteTokenizer({"<|endoftext|>"}), Catch::Contains("given twice"));
  CHECK_THROWS_WITH(ByteTokenizer({""}), Catch::Contains("empty name"));
}

TEST_CASE("make_tokenizer knows byte and gpt2 and says what it expected", "[tokenizer]") {
  CHECK(kiln::make_tokenizer("byte")->vocab_size() == 257);
  CHECK_THROWS_WITH(kiln::make_tokenizer("sentencepiece"),
                    Catch::Contains("unknown tokenizer 'sentencepiece' (expected gpt2, byte, or "
                                    "a Hugging Face tokenizer.json)"));
  CHECK_THROWS_WITH(kiln::make_tokenizer("gpt2"), Catch::Contains("encoder.json"));
  try {
    kiln::make_tokenizer("gpt2", "/nonexistent/vocab");
    FAIL("loaded a vocabulary from nowhere");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == kiln::Status::io_error);
    CHECK_THAT(e.message(), Catch::Contains("/nonexistent/vocab/encoder.json"));
  }
}

TEST_CASE("utf8_complete_prefix holds back only sequences that can still complete", "[tokenizer]") {
  using kiln::utf8_complete_prefix;
  CHECK(utf8_complete_prefix("") == 0);
  CHECK(utf8_complete_prefix("abc") == 3);
  CHECK(utf8_complete_prefix("a\xc3") == 1);              // é cut after its lead byte
  CHECK(utf8_complete_prefix("a\xc3\xa9") == 3);          // é complete
  CHECK(utf8_complete_prefix("a\xe2\x82") == 1);          // € cut after two bytes
  CHECK(utf8_complete_prefix("a\xf0\x9f\x98") == 1);      // 😀 cut after three bytes
  CHECK(utf8_complete_prefix("a\xf0\x9f\x98\x80") == 5);  // 😀 complete
  CHECK(utf8_complete_prefix("a\xff") == 2);              // never valid: emit
  CHECK(utf8_complete_prefix("a\xe0\x80") == 3);          // overlong start: never valid
  CHECK(utf8_complete_prefix("a\xed\xa0") == 3);          // surrogate: never valid
  CHECK(utf8_complete_prefix("a\xf4\x90") == 3);          // above U+10FFFF: never valid
  CHECK(utf8_complete_prefix("a\x80") == 2);              // stray continuation byte
}

TEST_CASE("UTF-8 decoding is strict and classes follow Unicode", "[tokenizer]") {
  using kiln::impl::char_class;
  using kiln::impl::CharClass;
  using kiln::impl::decode_utf8;
  CHECK(decode_utf8("\xc3\xa9", 0).cp == 0xE9);
  CHECK(decode_utf8("\xf0\x9f\x98\x80", 0).cp == 0x1F600);
  CHECK(decode_utf8("\xc0\xaf", 0).cp == -1);          // overlong '/'
  CHECK(decode_utf8("\xed\xa0\x80", 0).cp == -1);      // surrogate
  CHECK(decode_utf8("\xf4\x90\x80\x80", 0).cp == -1);  // above U+10FFFF
  CHECK(decode_utf8("\xe2\x82", 0).length == 1);       // truncated: one byte consumed

  struct Case {
    std::int32_t cp;
    CharClass cls;
  };
  const Case cases[] = {
      {'a', CharClass::letter},     {'Z', CharClass::letter}, {'7', CharClass::number},
      {' ', CharClass::space},      {'\n', CharClass::space}, {'\'', CharClass::other},
      {0xAA, CharClass::letter},     // ª (Lo)
      {0xB2, CharClass::number},     // ² (No)
      {0xB5, CharClass::letter},     // µ (Ll)
      {0xA0, CharClass::space},      // no-break space
      {0x85, CharClass::space},      // next line
      {0x1C, CharClass::other},      // file separator: Python's isspace, but not \s in `regex`
      {0x2B0, CharClass::letter},    // ʰ (Lm)
      {0x3B1, CharClass::letter},    // α
      {0x416, CharClass::letter},    // Ж
      {0x5D0, CharClass::letter},    // א
      {0x627, CharClass::letter},    // ا
      {0x661, CharClass::number},    // Arabic-Indic one
      {0x905, CharClass::letter},    // Devanagari A
      {0x967, CharClass::number},    // Devanagari one
      {0x903, CharClass::other},     // Devanagari visarga (Mc): a mark, not a letter
      {0xE01, CharClass::letter},    // Thai ko kai
      {0x3000, CharClass::space},    // ideographic space
      {0x3042, CharClass::letter},   // あ
      {0x4E00, CharClass::letter},   // 一
      {0xAC00, CharClass::letter},   // 가
      {0x2160, CharClass::number},   // Roman numeral one (Nl)
      {0x2028, CharClass::space},    // line separator
      {0x200B, CharClass::other},    // zero-width space is not white space
      {0xFF10, CharClass::number},   // fullwidth zero
      {0x1F600, CharClass::other},   // 😀
      {0x1D400, CharClass::letter},  // mathematical bold A
      {0x20000, CharClass::letter},  // CJK extension B
      {-1, CharClass::other},        // an invalid byte
  };
  for (const Case& c : cases) {
    INFO("code point " << c.cp);
    CHECK(char_class(c.cp) == c.cls);
  }
}
