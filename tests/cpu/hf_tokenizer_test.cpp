// HfTokenizer on small hand-made tokenizer.json files: the split patterns (Llama 3's against the
// JavaScript reference's pieces, Qwen2's, Digits), merges in both forms, ignore_merges, added and
// special tokens, BOS and EOT options, SmolLM2- and Qwen2-style pre-tokenizers, round trips, and
// every refusal. The real Llama 3 vocabulary is tested in hf_tokenizer_llama3_test.cpp.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/io.hpp"
#include "kiln/tokenizer.hpp"
#include "runtime/tokenizer/nfc.hpp"
#include "runtime/tokenizer/pretokenize.hpp"
#include "tests/common/files.hpp"
#include "tests/common/hf_tokenizer_json.hpp"
#include "tests/common/support.hpp"

using kiln::HfTokenizer;
using kiln::Status;
using kiln::test::HfSpec;
using kiln::test::TempDir;
using V = std::vector<std::int32_t>;
using S = std::vector<std::string>;

namespace {

S llama3_pieces(std::string_view text, int max_digits = 3) {
  std::vector<std::string_view> p;
  kiln::impl::split_llama3(text, max_digits, p);
  return S(p.begin(), p.end());
}

S digit_pieces(std::string_view text, bool individual) {
  std::vector<std::string_view> p;
  kiln::impl::split_digits(text, individual, p);
  return S(p.begin(), p.end());
}

std::filesystem::path write_json(const TempDir& dir, const nlohmann::json& j,
                                 const char* name = "tokenizer.json") {
  const auto path = dir / name;
  kiln::test::write_bytes(path, j.dump());
  return path;
}

HfTokenizer load(const TempDir& dir, const HfSpec& spec, const kiln::HfTokenizerOptions& opt = {}) {
  return HfTokenizer(write_json(dir, kiln::test::make_hf_json(spec)), opt);
}

}  // namespace

TEST_CASE("Llama 3's and Qwen2's split patterns give the JavaScript reference's pieces",
          "[hf_tokenizer]") {
  const auto path =
      std::filesystem::path(KILN_SOURCE_DIR) / "tests" / "cpu" / "data" / "llama3_cases.json";
  const auto cases = nlohmann::json::parse(kiln::read_file(path))["cases"];
  REQUIRE(cases.size() > 50);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    INFO("text: " << text);
    CHECK(llama3_pieces(text) == c["pieces"].get<S>());
    CHECK(llama3_pieces(text, 1) == c["qwen2_pieces"].get<S>());
  }
}

TEST_CASE("NFC as node's String.normalize gives it, invalid bytes kept", "[hf_tokenizer]") {
  auto nfc = [](std::string_view s) {
    std::string out;
    kiln::impl::nfc(s, out);
    return out;
  };
  const auto path =
      std::filesystem::path(KILN_SOURCE_DIR) / "tests" / "cpu" / "data" / "llama3_cases.json";
  for (const auto& c : nlohmann::json::parse(kiln::read_file(path))["cases"]) {
    const std::string text = c["text"];
    INFO("text: " << text);
    CHECK(nfc(text) == c["nfc"].get<std::string>());
    CHECK((!kiln::impl::nfc_quick_check(text) || nfc(text) == text));
  }
  CHECK(nfc("e\xCC\x81") == "\xC3\xA9");                      // e + acute -> é
  CHECK(nfc("\xE2\x84\xAB") == "\xC3\x85");                   // angstrom sign -> Å
  CHECK(nfc("a\xCC\x81\xCC\xA3") == "\xE1\xBA\xA1\xCC\x81");  // marks reordered, then composed
  CHECK(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8") == "\xEA\xB0\x81");  // jamo -> 각
  // An invalid byte is kept and a mark after it composes with nothing before it.
  CHECK(nfc("e\xFF\xCC\x81 caf\xC3") == "e\xFF\xCC\x81 caf\xC3");
  CHECK(nfc("") == "");
}

TEST_CASE("Llama 3's split pattern, case by case", "[hf_tokenizer]") {
  // Contractions in any case; U+017F folds to 's' as Hugging Face's and tiktoken's regex engines
  // fold it (the JavaScript port spells the group [sS] and would give "'ſt" whole).
  CHECK(llama3_pieces("I'M 'Re'vE 'll'X") == S{"I", "'M", " '", "Re", "'vE", " '", "ll", "'X"});
  CHECK(llama3_pieces("it'\xC5\xBFt") == S{"it", "'\xC5\xBF", "t"});
  // Digits in threes from the left; Qwen2's one by one.
  CHECK(llama3_pieces("1234567 x12") == S{"123", "456", "7", " x", "12"});
  CHECK(llama3_pieces("1234", 1) == S{"1", "2", "3", "4"});
  // One leading non-letter joins letters, never a line break.
  CHECK(llama3_pieces("\tword\nword .word") == S{"\tword", "\n", "word", " .", "word"});
  // Punctuation takes the line breaks after it; white space keeps its last line break's part.
  CHECK(llama3_pieces("end.\r\n\n  next") == S{"end", ".\r\n\n", " ", " next"});
  CHECK(llama3_pieces("a  \n\t b") == S{"a", "  \n", "\t", " b"});
  CHECK(llama3_pieces("x   ") == S{"x", "   "});
  CHECK(llama3_pieces(" 1") == S{" ", "1"});
  // Invalid bytes are punctuation-like: they can lead letters.
  CHECK(llama3_pieces("a\xFF"
                      "bc \xC3") == S{"a",
                                      "\xFF"
                                      "bc",
                                      " \xC3"});
  auto rng = kiln::test::make_rng(41);
  for (int trial = 0; trial < 300; ++trial) {
    std::string s(static_cast<std::size_t>(rng() % 64), '\0');
    for (auto& ch : s)
      ch = static_cast<char>(rng() % 3 == 0 ? " \n\r\t'a1"[rng() % 7] : rng());
    for (const int digits : {1, 3}) {
      std::string joined;
      for (const auto& p : llama3_pieces(s, digits)) {
        REQUIRE(!p.empty());
        joined += p;
      }
      REQUIRE(joined == s);
    }
  }
}

TEST_CASE("the Digits pre-tokenizer isolates numbers", "[hf_tokenizer]") {
  CHECK(digit_pieces("abc123de4", true) == S{"abc", "1", "2", "3", "de", "4"});
  CHECK(digit_pieces("abc123de4", false) == S{"abc", "123", "de", "4"});
  CHECK(digit_pieces("\xD9\xA1\xD9\xA2x", true) == S{"\xD9\xA1", "\xD9\xA2", "x"});  // Arabic-Indic
  CHECK(digit_pieces("", true).empty());
}

TEST_CASE("merges by rank in both file forms, and ignore_merges", "[hf_tokenizer]") {
  TempDir dir;
  for (const bool array_form : {false, true}) {
    HfSpec spec;
    spec.merges = {{"l", "l"}, {"h", "e"}, {"he", "ll"}, {"hell", "o"}, {"a", "a"}};
    spec.array_merges = array_form;
    spec.added = {{"<|endoftext|>", true}};
    const HfTokenizer tok = load(dir, spec);
    CHECK(tok.name() == "hf");
    CHECK(tok.vocab_size() == 262);
    CHECK(tok.eot_token() == 261);
    CHECK(tok.is_special(261));
    CHECK(tok.bos_token() == -1);
    const std::int32_t ll = 256, he = 257, hell = 258, hello = 259, aa = 260;
    CHECK(tok.encode("hello") == V{hello});
    CHECK(tok.encode("hellx") == V{hell, 'x'});
    CHECK(tok.encode("lll") == V{ll, 'l'});
    CHECK(tok.encode("aaaaa") == V{aa, aa, 'a'});
    CHECK(tok.encode("he llo") == V{he, ' ', ll, 'o'});  // GPT-2's split: "he", " llo"
    CHECK(tok.decode(tok.encode("hello hell")) == "hello hell");
  }
  // "world" is in the vocabulary but no merge makes it: only ignore_merges emits it whole.
  HfSpec spec;
  spec.merges = {{"w", "o"}};
  spec.extra_tokens = {"world"};
  spec.added = {{"<|endoftext|>", true}};
  const std::int32_t wo = 256, world = 257;
  CHECK(load(dir, spec).encode("world") == V{wo, 'r', 'l', 'd'});
  spec.ignore_merges = true;
  CHECK(load(dir, spec).encode("world wo") == V{world, ' ', wo});
}

TEST_CASE("added tokens: longest first, specials only when allowed", "[hf_tokenizer]") {
  TempDir dir;
  HfSpec spec;
  spec.added = {{"<|endoftext|>", true}, {"<a>", true}, {"<a><b>", true}, {"[tool]", false}};
  const HfTokenizer tok = load(dir, spec);
  const std::int32_t eot = 256, a = 257, ab = 258, tool = 259;
  CHECK(tok.eot_token() == eot);
  CHECK(tok.added_token("<a><b>") == ab);
  CHECK(tok.added_token("<a><") == -1);
  CHECK(!tok.is_special(tool));
  using Sp = HfTokenizer::SpecialTokens;
  V ids;
  tok.encode("x<a><b>y<a><c>[tool]<|endoftext|>", ids, Sp::allow);
  CHECK(ids == V{'x', ab, 'y', a, '<', 'c', '>', tool, eot});
  // As ordinary text the specials are bytes, but an added token that is not special still counts.
  ids = tok.encode("<a>[tool]");
  CHECK(ids == V{'<', 'a', '>', tool});
  for (const std::string text : {"<a><b>", "<|endoftext|><|endoftext|", "[tool][tool"}) {
    V allow;
    tok.encode(text, allow, Sp::allow);
    CHECK(tok.decode(allow) == text);
    CHECK(tok.decode(tok.encode(text)) == text);
    for (const auto id : tok.encode(text))
      CHECK(!tok.is_special(id));
  }
}

TEST_CASE("BOS from the post-processor or the options, EOT by option", "[hf_tokenizer]") {
  TempDir dir;
  HfSpec spec;
  spec.added = {{"<|begin_of_text|>", true}, {"<|end_of_text|>", true}, {"<|eot_id|>", true}};
  const std::int32_t bos = 256, end = 257, eot_id = 258;
  CHECK(load(dir, spec).eot_token() == end);
  CHECK(load(dir, spec).bos_token() == -1);
  auto opts = [](bool add_bos, std::string bos_name, std::string eot_name) {
    return kiln::HfTokenizerOptions{add_bos, std::move(bos_name), std::move(eot_name)};
  };
  CHECK(load(dir, spec, opts(false, "", "<|eot_id|>")).eot_token() == eot_id);
  auto status_of = [&](const kiln::HfTokenizerOptions& opt) {
    try {
      load(dir, spec, opt);
    } catch (const kiln::Error& e) {
      return e.status();
    }
    return Status::ok;
  };
  CHECK(status_of(opts(true, "", "")) == Status::invalid_argument);  // no BOS anywhere
  CHECK(status_of(opts(false, "", "<none>")) == Status::invalid_argument);
  CHECK(status_of(opts(false, "hi", "")) == Status::invalid_argument);
  const HfTokenizer named = load(dir, spec, opts(true, "<|begin_of_text|>", ""));
  CHECK(named.encode("hi") == V{bos, 'h', 'i'});
  // Llama 3.1's post-processor: a Sequence of ByteLevel and a template with the BOS.
  const nlohmann::json bos_item = {{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}};
  const nlohmann::json text_item = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}};
  const nlohmann::json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", true}};
  const nlohmann::json templ = {{"type", "TemplateProcessing"},
                                {"single", nlohmann::json::array({bos_item, text_item})}};
  spec.post_processor = {{"type", "Sequence"},
                         {"processors", nlohmann::json::array({byte_level, templ})}};
  CHECK(load(dir, spec).bos_token() == bos);
  CHECK(load(dir, spec).encode("hi") == V{'h', 'i'});  // not added unless asked
  CHECK(load(dir, spec, opts(true, "", "")).encode("hi") == V{bos, 'h', 'i'});
}

TEST_CASE("SmolLM2- and Qwen2-style pre-tokenizers", "[hf_tokenizer]") {
  TempDir dir;
  // SmolLM2: specials first and also in the vocabulary, Digits then GPT-2's ByteLevel regex.
  HfSpec smol;
  smol.leading = {{"<|endoftext|>", true}, {"<|im_start|>", true}};
  smol.merges = {{" ", "t"}, {"1", "2"}};
  smol.pre_tokenizer = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Digits"}, {"individual_digits", true}}, kiln::test::byte_level_step(true)}}};
  const HfTokenizer s = load(dir, smol);
  CHECK(s.eot_token() == 0);
  CHECK(s.is_special(1));
  const std::int32_t b0 = 2, t = 258;  // byte b is id b + 2
  CHECK(s.encode(" t 12") == V{t, ' ' + b0, '1' + b0, '2' + b0});
  V ids;
  s.encode("<|im_start|> t", ids, HfTokenizer::SpecialTokens::allow);
  CHECK(ids == V{1, t});
  CHECK(s.split("ab12 x") == std::vector<std::string_view>{"ab", "1", "2", " x"});
  // Qwen2: its split pattern (digits one by one), then ByteLevel without a regex.
  HfSpec qwen;
  qwen.merges = {{"1", "2"}, {"a", "b"}};
  qwen.array_merges = true;
  qwen.added = {{"<|endoftext|>", true}, {"<tool_call>", false}};
  qwen.pre_tokenizer = {
      {"type", "Sequence"},
      {"pretokenizers",
       {kiln::test::split_step(kiln::test::kQwen2Regex), kiln::test::byte_level_step(false)}}};
  const HfTokenizer q = load(dir, qwen);
  CHECK(q.encode("ab12<tool_call>") == V{257, '1', '2', 259});
  CHECK(q.split("it'S 123") == std::vector<std::string_view>{"it", "'S", " ", "1", "2", "3"});
  // Qwen2's NFC normalizer: a decomposed text encodes as its composed form.
  auto with_nfc = kiln::test::make_hf_json(qwen);
  with_nfc["normalizer"] = {{"type", "NFC"}};
  const HfTokenizer qn(write_json(dir, with_nfc, "nfc.json"));
  CHECK(qn.encode("e\xCC\x81!") == q.encode("\xC3\xA9!"));
  CHECK(qn.decode(qn.encode("e\xCC\x81 ab\xFF")) == "\xC3\xA9 ab\xFF");
  CHECK(q.decode(q.encode("e\xCC\x81")) == "e\xCC\x81");  // without the normalizer, unchanged
  // Llama 3: its split pattern then ByteLevel without a regex.
  qwen.pre_tokenizer["pretokenizers"][0] = kiln::test::split_step(kiln::test::kLlama3Regex);
  CHECK(load(dir, qwen).split("12345") == std::vector<std::string_view>{"123", "45"});
}

TEST_CASE("HfTokenizer round-trips arbitrary bytes", "[hf_tokenizer]") {
  TempDir dir;
  HfSpec spec;
  spec.merges = {{"a", "b"}, {" ", "a"}, {"\xC3", "\xA9"}, {"\n", "\n"}};
  spec.added = {{"<|endoftext|>", true}, {"<x>", false}};
  spec.pre_tokenizer = {
      {"type", "Sequence"},
      {"pretokenizers",
       {kiln::test::split_step(kiln::test::kLlama3Regex), kiln::test::byte_level_step(false)}}};
  const HfTokenizer tok = load(dir, spec);
  auto rng = kiln::test::make_rng(42);
  for (int trial = 0; trial < 300; ++trial) {
    std::string s(static_cast<std::size_t>(rng() % 100), '\0');
    for (auto& ch : s)
      ch = static_cast<char>(rng() % 2 ? "ab \n\xC3\xA9<x>'"[rng() % 10] : rng());
    const V ids = tok.encode(s);
    REQUIRE(tok.decode(ids) == s);
    V allow;
    tok.encode(s, allow, HfTokenizer::SpecialTokens::allow);
    REQUIRE(tok.decode(allow) == s);
  }
  CHECK(kiln::make_tokenizer((dir / "tokenizer.json").string())->name() == "hf");
}
