// Every tokenizer.json HfTokenizer refuses, and how: the status (data_error for a damaged or
// inconsistent file, not_supported for what kiln does not implement), the file's name and the key.
#include <catch2/catch.hpp>

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "kiln/tokenizer.hpp"
#include "tests/common/files.hpp"
#include "tests/common/hf_tokenizer_json.hpp"

using kiln::HfTokenizer;
using kiln::Status;
using kiln::test::TempDir;
using nlohmann::json;

namespace {

// Loads `text` as a tokenizer.json and checks the refusal's status and that its message names
// the file and holds each of `parts`.
void expect_refused(const TempDir& dir, const std::string& text, Status status,
                    std::initializer_list<std::string> parts) {
  const auto path = dir / "tokenizer.json";
  kiln::test::write_bytes(path, text);
  try {
    HfTokenizer tok(path);
    FAIL("loaded: " << text.substr(0, 300));
  } catch (const kiln::Error& e) {
    INFO(e.message());
    CHECK(e.status() == status);
    CHECK_THAT(e.message(), Catch::Contains(path.string()));
    for (const auto& p : parts)
      CHECK_THAT(e.message(), Catch::Contains(p));
  }
}

// A valid file (Llama 3's layout, small), changed by `edit`.
std::string edited(const std::function<void(json&)>& edit) {
  kiln::test::HfSpec spec;
  spec.merges = {{"a", "b"}, {"ab", "c"}};
  spec.added = {{"<|endoftext|>", true}};
  spec.pre_tokenizer = {
      {"type", "Sequence"},
      {"pretokenizers",
       {kiln::test::split_step(kiln::test::kLlama3Regex), kiln::test::byte_level_step(false)}}};
  json j = kiln::test::make_hf_json(spec);
  edit(j);
  return j.dump();
}

}  // namespace

TEST_CASE("a valid hand-made file loads (the base of the refusals)", "[hf_tokenizer]") {
  TempDir dir;
  kiln::test::write_bytes(dir / "tokenizer.json", edited([](json&) {}));
  const HfTokenizer tok(dir / "tokenizer.json");
  CHECK(tok.encode("abc") == std::vector<std::int32_t>{257});
}

TEST_CASE("damaged or inconsistent tokenizer.json files are refused naming the key",
          "[hf_tokenizer]") {
  TempDir dir;
  const std::string good = edited([](json&) {});
  const Status bad = Status::data_error;
  expect_refused(dir, good.substr(0, good.size() / 2), bad, {"not valid JSON"});
  expect_refused(dir, "", bad, {"not valid JSON"});
  expect_refused(dir, "[1, 2]", bad, {"expected an object"});
  // A number no C++ type holds (nlohmann's out_of_range, not a parse_error: found by fuzzing).
  expect_refused(dir, R"({"added_tokens": [7e777]})", bad, {"not valid JSON"});
  // A key of the wrong JSON type where the loader reads it by value() (nlohmann's type_error).
  expect_refused(dir, R"({"normalizer": {"type": 5}})", bad, {"kiln can read"});
  expect_refused(dir, edited([](json& j) { j.erase("model"); }), bad, {"model must be"});
  expect_refused(dir, edited([](json& j) { j["model"]["vocab"] = json::array(); }), bad,
                 {"model.vocab must be"});
  expect_refused(dir, edited([](json& j) { j["model"]["vocab"]["x"] = "one"; }), bad,
                 {"model.vocab[\"x\"] must be an integer"});
  expect_refused(dir, edited([](json& j) { j["model"]["vocab"]["zz"] = 5; }), bad,
                 {"gives id 5 to two tokens"});
  expect_refused(dir, edited([](json& j) { j["model"]["vocab"]["zz"] = 300; }), bad,
                 {"no token has id 259"});
  expect_refused(dir, edited([](json& j) { j["model"]["vocab"]["z\xE2\x82\xAC"] = 259; }), bad,
                 {"outside the byte-level alphabet"});
  expect_refused(dir, edited([](json& j) { j["model"]["vocab"].erase("a"); }), bad,
                 {"no token has id 97"});
  expect_refused(dir, edited([](json& j) { j["model"]["merges"].push_back("a b c"); }), bad,
                 {"model.merges[2]", "not two tokens"});
  expect_refused(dir, edited([](json& j) { j["model"]["merges"].push_back("x q"); }), bad,
                 {"model.merges[2]", "does not have"});
  expect_refused(dir, edited([](json& j) { j["model"]["merges"].push_back("a b"); }), bad,
                 {"model.merges[2]", "repeats an earlier merge"});
  expect_refused(dir, edited([](json& j) { j["model"]["merges"].push_back(json::array({"a"})); }),
                 bad, {"model.merges[2]", "neither"});
  expect_refused(dir, edited([](json& j) { j["model"]["merges"] = "a b"; }), bad,
                 {"model.merges must be an array"});
  expect_refused(dir, edited([](json& j) { j["added_tokens"][0]["id"] = 97; }), bad,
                 {"has id 97, which model.vocab or an earlier added token gives"});
  expect_refused(dir, edited([](json& j) {
                   j["added_tokens"].push_back(j["added_tokens"][0]);
                   j["added_tokens"][1]["content"] = "<other>";
                 }),
                 bad, {"\"<other>\" has id 258, which model.vocab or an earlier added token"});
  expect_refused(dir, edited([](json& j) { j["added_tokens"][0]["content"] = ""; }), bad,
                 {"added_tokens[0].content"});
  expect_refused(dir, edited([](json& j) { j["added_tokens"].push_back(j["added_tokens"][0]); }),
                 bad, {"added_tokens[1].content", "earlier added token"});
  expect_refused(dir, edited([](json& j) { j["added_tokens"][0]["id"] = -1; }), bad,
                 {"added_tokens[0].id"});
  expect_refused(dir, edited([](json& j) { j["added_tokens"][0]["special"] = "yes"; }), bad,
                 {"added_tokens[0].special must be true or false"});
  expect_refused(dir, edited([](json& j) { j["pre_tokenizer"]["pretokenizers"] = 3; }), bad,
                 {"pre_tokenizer.pretokenizers must be an array"});
  expect_refused(
      dir, edited([](json& j) {
        j["post_processor"] = {
            {"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}}};
      }),
      bad, {"post_processor adds \"<s>\""});
  // The vocabulary, merges and ids are bounded.
  expect_refused(dir, edited([](json& j) { j["model"]["vocab"]["zz"] = 1 << 30; }), bad,
                 {"must be an integer id in [0, 4194304)"});
  expect_refused(dir,
                 edited([](json& j) { j["added_tokens"][0]["content"] = std::string(2000, 'x'); }),
                 bad, {"added_tokens[0].content must be a string of 1 to 1024 bytes"});
  expect_refused(dir, edited([](json& j) { j["model"]["vocab"][std::string(3000, 'x')] = 259; }),
                 bad, {"is longer than kiln allows"});
  // A missing file is an I/O error.
  try {
    HfTokenizer tok(dir / "missing.json");
    FAIL("loaded a missing file");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == Status::io_error);
    CHECK_THAT(e.message(), Catch::Contains("missing.json"));
  }
}

TEST_CASE("what kiln does not implement is refused, quoting it", "[hf_tokenizer]") {
  TempDir dir;
  const Status no = Status::not_supported;
  expect_refused(dir, edited([](json& j) {
                   j["normalizer"] = {{"type", "NFKC"}};
                 }),
                 no, {"normalizer {\"type\":\"NFKC\"}", "only NFC"});
  expect_refused(dir, edited([](json& j) {
                   j["truncation"] = {{"max_length", 8}};
                 }),
                 no, {"truncation"});
  expect_refused(dir, edited([](json& j) {
                   j["padding"] = {{"strategy", "BatchLongest"}};
                 }),
                 no, {"padding"});
  expect_refused(dir, edited([](json& j) { j["model"]["type"] = "WordPiece"; }), no,
                 {"model.type \"WordPiece\""});
  expect_refused(dir, edited([](json& j) { j["model"]["dropout"] = 0.1; }), no,
                 {"model.dropout 0.1"});
  expect_refused(dir, edited([](json& j) { j["model"]["byte_fallback"] = true; }), no,
                 {"model.byte_fallback"});
  expect_refused(dir, edited([](json& j) { j["model"]["end_of_word_suffix"] = "</w>"; }), no,
                 {"model.end_of_word_suffix \"</w>\""});
  expect_refused(dir, edited([](json& j) { j["added_tokens"][0]["lstrip"] = true; }), no,
                 {"added_tokens[0].lstrip"});
  expect_refused(
      dir,
      edited([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+"; }),
      no, {"pre_tokenizer.pretokenizers[0].pattern.Regex \"\\\\w+\"", "not a pattern kiln"});
  expect_refused(dir, edited([](json& j) {
                   j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", " "}};
                 }),
                 no, {"pre_tokenizer.pretokenizers[0].pattern {\"String\":\" \"}"});
  expect_refused(
      dir, edited([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }),
      no, {"pre_tokenizer.pretokenizers[0].behavior \"Removed\""});
  expect_refused(dir,
                 edited([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = true; }),
                 no, {"pre_tokenizer.pretokenizers[0].invert"});
  expect_refused(dir, edited([](json& j) {
                   j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true;
                 }),
                 no, {"pre_tokenizer.pretokenizers[1].add_prefix_space"});
  expect_refused(dir, edited([](json& j) {
                   j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Metaspace"}};
                 }),
                 no, {"pre_tokenizer.pretokenizers[0].type \"Metaspace\""});
  expect_refused(dir, edited([](json& j) { j["pre_tokenizer"] = nullptr; }), no,
                 {"pre_tokenizer is null"});
  expect_refused(dir, edited([](json& j) { j["pre_tokenizer"]["pretokenizers"].erase(1); }), no,
                 {"no ByteLevel step"});
  expect_refused(dir, edited([](json& j) {
                   j["pre_tokenizer"]["pretokenizers"].push_back({{"type", "Digits"}});
                 }),
                 no, {"pre_tokenizer.pretokenizers[2]", "must be the last step"});
  expect_refused(dir, edited([](json& j) {
                   j["decoder"] = {{"type", "Metaspace"}};
                 }),
                 no, {"decoder {\"type\":\"Metaspace\"}"});
  expect_refused(dir, edited([](json& j) {
                   j["post_processor"] = {{"type", "RobertaProcessing"}};
                 }),
                 no, {"post_processor.type \"RobertaProcessing\""});
  // A template that adds an EOS after the text is not the BOS-only form kiln implements.
  expect_refused(dir, edited([](json& j) {
                   j["post_processor"] = {{"type", "TemplateProcessing"},
                                          {"single",
                                           {{{"Sequence", {{"id", "A"}}}},
                                            {{"SpecialToken", {{"id", "<|endoftext|>"}}}}}}};
                 }),
                 no, {"post_processor.single"});
}
