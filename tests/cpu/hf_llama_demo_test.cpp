// The Hugging Face demos end to end on the cpu backend: generate --hf speaks with the real Llama 3
// tokenizer's ids (those tests/cpu/hf_tokenizer_llama3_test.cpp checks against the reference
// package), writes logits equal to the library's for hf_crosscheck.py, and train_gpt --hf trains
// a folder made here and --export-hf hands back what it trained.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/backend.hpp"
#include "kiln/generate.hpp"
#include "kiln/hf_llama.hpp"
#include "kiln/io.hpp"
#include "kiln/trainer.hpp"
#include "tests/common/hf_tokenizer_json.hpp"
#include "tests/cpu/hf_llama_folder.hpp"

namespace fs = std::filesystem;
using kiln::test::TempDir;
using namespace kiln::test::hf;

#if defined(KILN_TRAIN_GPT_EXE) && defined(KILN_GENERATE_EXE)

namespace {

using Result = kiln::test::CommandResult;

Result run(const TempDir& dir, const std::string& exe, const std::string& args) {
  return kiln::test::run_command(dir, "'" + exe + "' " + args);
}

std::string q(const fs::path& p) {
  return kiln::test::quoted(p);
}

fs::path llama3_json() {
  return fs::path(KILN_SOURCE_DIR) / "data" / "llama3" / "tokenizer.json";
}

// The ids the reference package gives `text` (tests/cpu/data/llama3_cases.json).
std::vector<int32_t> reference_ids(const std::string& text) {
  const auto cases = nlohmann::json::parse(kiln::read_file(
      fs::path(KILN_SOURCE_DIR) / "tests" / "cpu" / "data" / "llama3_cases.json"))["cases"];
  for (const auto& c : cases) {
    if (c["text"] == text) return c["ordinary_ids"].get<std::vector<int32_t>>();
  }
  FAIL("no case '" << text << "' in llama3_cases.json");
  return {};
}

std::string ids_line(const std::vector<int32_t>& ids) {
  std::string s = "prompt ids:";
  for (const int32_t id : ids) {
    s += ' ';
    s += std::to_string(id);
  }
  s += '\n';
  return s;
}

}  // namespace

TEST_CASE("generate --hf encodes with the folder's Llama 3 tokenizer.json", "[hf][demo]") {
  if (!fs::exists(llama3_json())) {
    const char* env = std::getenv("KILN_REQUIRE_HF_TOKENIZERS");
    if (env && *env && std::string(env) != "0") FAIL(llama3_json() << " missing");
    KILN_SKIP(llama3_json().string() + " missing: run scripts/fetch_hf_tokenizer.sh llama3");
  }
  TempDir dir;
  // A tiny model with Llama 3's vocabulary, tied (the embedding is its only large tensor).
  auto config = nlohmann::json::parse(kLlamaConfig);
  config["vocab_size"] = 128256;
  config["tie_word_embeddings"] = true;
  write_folder(dir / "m", config.dump(), make_tensors(config, 8), kiln::SafeDtype::BF16);
  kiln::write_file_atomically(dir / "m" / "tokenizer.json", kiln::read_file(llama3_json()));
  kiln::test::write_bytes(dir / "m" / "tokenizer_config.json",
                          R"({"add_bos_token": true, "bos_token": "<|begin_of_text|>",
                              "eos_token": {"content": "<|eot_id|>"}})");
  const std::string common =
      "--hf " + q(dir / "m") + " --backend cpu --threads 2 --print-ids --length 3 --temperature 0";
  {
    // tokenizer_config.json asks for the BOS (128000).
    const Result r = run(dir, KILN_GENERATE_EXE, common + " --prompt 'Hello world'");
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK_THAT(r.output, Catch::Contains(ids_line({128000, 9906, 1917})));
    CHECK_THAT(r.output, Catch::StartsWith("Hello world") || Catch::Contains("\nHello world"));
  }
  for (const std::string text : {"hello 👋 world 🌍", "Привет, мир! Как дела?"}) {
    const Result r = run(dir, KILN_GENERATE_EXE, common + " --no-add-bos --prompt '" + text + "'");
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK_THAT(r.output, Catch::Contains(ids_line(reference_ids(text))));
  }
  // --add-bos means nothing without a folder.
  CHECK(run(dir, KILN_GENERATE_EXE, "--checkpoint x --add-bos").status != 0);
}

TEST_CASE("generate --hf --logits-out writes the library's logits for every position",
          "[hf][demo]") {
  TempDir dir;
  const auto config = nlohmann::json::parse(kLlamaConfig);
  write_folder(dir / "m", kLlamaConfig, make_tensors(config, 9));
  const Result r = run(dir, KILN_GENERATE_EXE,
                       "--hf " + q(dir / "m") + " --backend cpu --threads 1 --prompt-ids 3,1,4,1" +
                           " --logits-out " + q(dir / "logits.json"));
  INFO(r.output);
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(kiln::read_file(dir / "logits.json"));
  CHECK(j["ids"] == std::vector<int>{3, 1, 4, 1});
  CHECK(j["vocab_size"] == 11);
  REQUIRE(j["logits"].size() == 4);
  std::vector<float> p;
  const kiln::ModelConfig m = kiln::import_hf_llama(dir / "m", &p);
  kiln::Generator gen(m, kiln::make_cpu_backend(kiln::DType::f32, 1), p);
  for (int i = 0; i < 4; ++i) {
    const int32_t id[1] = {j["ids"][static_cast<std::size_t>(i)].get<int32_t>()};
    const std::vector<float> want = gen.feed(id);
    CHECK(j["logits"][static_cast<std::size_t>(i)].get<std::vector<float>>() ==
          std::vector<float>(want.begin(), want.begin() + 11));
  }
  // Ids outside the vocabulary are refused naming the id.
  const Result bad = run(dir, KILN_GENERATE_EXE,
                         "--hf " + q(dir / "m") + " --backend cpu --prompt-ids 3,99 --logits-out " +
                             q(dir / "bad.json"));
  CHECK(bad.status == 1);
  CHECK_THAT(bad.output, Catch::Contains("99"));
  CHECK(run(dir, KILN_GENERATE_EXE, "--hf " + q(dir / "m") + " --prompt-ids 3,x").status != 0);
}

#if defined(KILN_TOKENIZE_EXE)
TEST_CASE("train_gpt --hf trains a folder made here; --export-hf hands back what it trained",
          "[hf][demo]") {
  TempDir dir;
  std::string corpus;
  for (int d = 0; d < 60; ++d)
    corpus += "the cat sees the moon " + std::to_string(d) + ".\n%\n";
  kiln::test::write_bytes(dir / "corpus.txt", corpus);
  REQUIRE(run(dir, KILN_TOKENIZE_EXE,
              "--tokenizer byte --val-fraction 0.1 --separator % --quiet --out " + q(dir / "data") +
                  " " + q(dir / "corpus.txt"))
              .status == 0);
  // The folder: byte-sized vocabulary (and some spare rows), its own tokenizer.json whose 256
  // byte tokens have the byte tokenizer's ids.
  auto config = nlohmann::json::parse(kLlamaConfig);
  config["vocab_size"] = 300;
  config["max_position_embeddings"] = 64;
  write_folder(dir / "m", config.dump(), make_tensors(config, 11));
  kiln::test::HfSpec spec;
  spec.added = {{"<|endoftext|>", true}};
  const std::string tokenizer_json = kiln::test::make_hf_json(spec).dump();
  kiln::test::write_bytes(dir / "m" / "tokenizer.json", tokenizer_json);
  kiln::test::write_bytes(dir / "m" / "tokenizer_config.json", R"({"eos_token": "<|endoftext|>"})");

  const std::string common = "--hf " + q(dir / "m") + " --data " + q(dir / "data") +
                             " --backend cpu --threads 2 --batch 2 --seq-len 16 --steps 2 "
                             "--lr 1e-3 --eval-every 0";
  const Result r = run(dir, KILN_TRAIN_GPT_EXE,
                       common + " --sample-every 2 --sample-length 8 --prompt 'the ' " +
                           "--checkpoint-dir " + q(dir / "ck") + " --export-hf " + q(dir / "out"));
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains("sample at step 2"));
  CHECK_THAT(r.output, Catch::Contains("exported:"));
  // What training produced (the final checkpoint's weights) is what the folder holds.
  std::vector<float> trained, exported, initial;
  const kiln::CheckpointInfo info = kiln::read_checkpoint(dir / "ck" / "latest.ckpt", &trained);
  CHECK(info.step == 2);
  const kiln::ModelConfig m = kiln::import_hf_llama(dir / "out", &exported);
  CHECK(m == info.model);
  CHECK(exported == trained);
  kiln::import_hf_llama(dir / "m", &initial);
  CHECK(initial != trained);
  CHECK(kiln::read_file(dir / "out" / "tokenizer.json") == tokenizer_json);
  CHECK(fs::exists(dir / "out" / "tokenizer_config.json"));

  // Refused before training: another model with --hf, an export HF's Llama cannot express, an
  // export over the source.
  const Result parts = run(dir, KILN_TRAIN_GPT_EXE, common + " --model tiny");
  CHECK(parts.status != 0);
  CHECK_THAT(parts.output, Catch::Contains("--model"));
  const Result gpt2 =
      run(dir, KILN_TRAIN_GPT_EXE,
          "--data " + q(dir / "data") + " --backend cpu --model tiny --steps 2 --export-hf " +
              q(dir / "gpt2-out"));
  CHECK(gpt2.status == 1);
  CHECK_THAT(gpt2.output, Catch::Contains("RMSNorm"));
  CHECK_THAT(gpt2.output, !Catch::Contains("step      1"));
  CHECK_FALSE(fs::exists(dir / "gpt2-out"));
  const Result over = run(dir, KILN_TRAIN_GPT_EXE, common + " --export-hf " + q(dir / "m"));
  CHECK(over.status == 1);
  CHECK_THAT(over.output, Catch::Contains("source folder"));
}
#endif

#endif
