// The training demos end to end, as a user runs them: kiln_tokenize -> train_gpt -> generate on
// the CPU backend; interrupted-and-resumed runs equal an uninterrupted one; bad shards and
// checkpoints give an error naming the file and a non-zero exit, never a crash.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/common/files.hpp"

using kiln::test::TempDir;

namespace {

using Result = kiln::test::CommandResult;

Result run(const TempDir& dir, const std::string& exe, const std::string& args) {
  return kiln::test::run_command(dir, "'" + exe + "' " + args);
}

// A small corpus of %-separated documents: short sentences from a few templates.
void write_corpus(const std::filesystem::path& path) {
  static const char* subjects[] = {"the cat", "a dog", "the old man", "my friend", "the river"};
  static const char* verbs[] = {"sees", "likes", "follows", "remembers", "finds"};
  static const char* objects[] = {"the moon", "a red ball", "the sea", "a quiet song", "the road"};
  std::ostringstream os;
  for (int d = 0; d < 120; ++d) {
    for (int s = 0; s < 4; ++s) {
      os << subjects[(d + s) % 5] << ' ' << verbs[(d * 3 + s) % 5] << ' '
         << objects[(d + 2 * s) % 5] << ".\n";
    }
    os << "%\n";
  }
  kiln::test::write_bytes(path, os.str());
}

// The training losses a --metrics file recorded, one per step.
std::vector<double> losses_in(const std::filesystem::path& path) {
  std::vector<double> losses;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) losses.push_back(j["loss"].get<double>());
  }
  return losses;
}

#if defined(KILN_TRAIN_GPT_EXE) && defined(KILN_GENERATE_EXE) && defined(KILN_TOKENIZE_EXE)
// (the helpers of the tests below, which need the demos)
// The corpus in byte tokens: shards under dir/data (kiln_tokenize with `options`); its path.
std::string byte_shards(const TempDir& dir, const std::string& options = "") {
  write_corpus(dir / "corpus.txt");
  const Result tok = run(dir, KILN_TOKENIZE_EXE,
                         "--tokenizer byte " + options + " --quiet --out '" +
                             (dir / "data").string() + "' '" + (dir / "corpus.txt").string() + "'");
  INFO(tok.output);
  REQUIRE(tok.status == 0);
  return (dir / "data").string();
}

// generate from `checkpoint`, twice with one seed (40 tokens after "the "): both runs.
std::pair<Result, Result> generate_twice(const TempDir& dir,
                                         const std::filesystem::path& checkpoint) {
  const std::string args = "--checkpoint '" + checkpoint.string() +
                           "' --prompt 'the ' --length 40 --seed 3 --backend cpu --ignore-eot";
  return {run(dir, KILN_GENERATE_EXE, args), run(dir, KILN_GENERATE_EXE, args)};
}
#endif

}  // namespace

#if defined(KILN_TRAIN_GPT_EXE) && defined(KILN_GENERATE_EXE) && defined(KILN_TOKENIZE_EXE)

TEST_CASE("tokenize, train, resume and generate with the demos on the cpu backend", "[runtime]") {
  TempDir dir;
  byte_shards(dir, "--val-fraction 0.1 --separator %");
  const std::string common = "--data '" + (dir / "data").string() +
                             "' --backend cpu --threads 2 --model tiny --batch 4 --seq-len 32 "
                             "--steps 40 --lr 3e-3 --log-every 10 --eval-every 20 --eval-batches 2";

  // Uninterrupted.
  const Result full = run(dir, KILN_TRAIN_GPT_EXE,
                          common + " --metrics '" + (dir / "full.jsonl").string() + "' --plot '" +
                              (dir / "loss.png").string() + "' --checkpoint-dir '" +
                              (dir / "ck_full").string() + "'");
  INFO(full.output);
  REQUIRE(full.status == 0);
  CHECK_THAT(full.output, Catch::Contains("memory plan") && Catch::Contains("MFU n/a") &&
                              Catch::Contains("eval: step 40"));
  CHECK(std::filesystem::exists(dir / "ck_full" / "latest.ckpt"));
  const std::string png = kiln::test::read_bytes(dir / "loss.png");
  REQUIRE(png.size() > 8);
  CHECK(png.substr(1, 3) == "PNG");
  const std::vector<double> losses = losses_in(dir / "full.jsonl");
  REQUIRE(losses.size() == 40);
  CHECK(losses.back() < losses.front() - 1.0);  // from about log(257) = 5.5 well down

  // Interrupted at step 17, then resumed: the same losses, bit for bit.
  const Result first = run(dir, KILN_TRAIN_GPT_EXE,
                           common + " --stop-at 17 --checkpoint-dir '" + (dir / "ck").string() +
                               "' --metrics '" + (dir / "part.jsonl").string() + "'");
  REQUIRE(first.status == 0);
  CHECK_THAT(first.output, Catch::Contains("stopped at step 17 of 40"));
  const Result second = run(dir, KILN_TRAIN_GPT_EXE,
                            common + " --resume auto --checkpoint-dir '" + (dir / "ck").string() +
                                "' --metrics '" + (dir / "part.jsonl").string() + "'");
  INFO(second.output);
  REQUIRE(second.status == 0);
  CHECK_THAT(second.output, Catch::Contains("resuming from"));
  const std::vector<double> resumed = losses_in(dir / "part.jsonl");
  REQUIRE(resumed.size() == 40);
  for (std::size_t i = 0; i < 40; ++i)
    CHECK(resumed[i] == losses[i]);

  // The BERT-style objective trains too.
  const Result enc = run(dir, KILN_TRAIN_GPT_EXE,
                         "--data '" + (dir / "data").string() +
                             "' --backend cpu --model tiny --batch 4 --seq-len 32 --steps 30 "
                             "--lr 3e-3 --encoder --log-every 29 --metrics '" +
                             (dir / "enc.jsonl").string() + "'");
  INFO(enc.output);
  REQUIRE(enc.status == 0);
  CHECK_THAT(enc.output, Catch::Contains("encoder L=2") && Catch::Contains("mask=257"));
  const std::vector<double> enc_losses = losses_in(dir / "enc.jsonl");
  REQUIRE(enc_losses.size() == 30);
  CHECK(enc_losses.back() < enc_losses.front() - 1.0);

  // Generation from the checkpoint, twice with one seed: the same text.
  const auto [g1, g2] = generate_twice(dir, dir / "ck_full" / "latest.ckpt");
  INFO(g1.output);
  REQUIRE(g1.status == 0);
  CHECK(g1.output.find("40 tokens in") != std::string::npos);
  // The generated text (stdout) without the report lines (stderr, interleaved here).
  const auto text_of = [](const std::string& out) {
    std::istringstream in(out);
    std::string text;
    for (std::string line; std::getline(in, line);) {
      if (line.find("model: ") != std::string::npos || line.find("tokens/s") != std::string::npos)
        continue;
      text += line + "\n";
    }
    return text;
  };
  CHECK(text_of(g1.output).rfind("the ", 0) == 0);
  CHECK(text_of(g1.output).size() > 20);
  CHECK(text_of(g1.output) == text_of(g2.output));
}

TEST_CASE("a tiny Llama trains with train_gpt and speaks through generate", "[runtime][llama]") {
  TempDir dir;
  byte_shards(dir);
  const std::string common = "--data '" + (dir / "data").string() +
                             "' --backend cpu --threads 2 --model llama-tiny --batch 4 "
                             "--seq-len 32 --steps 60 --lr 3e-3 --log-every 20";
  const Result train = run(dir, KILN_TRAIN_GPT_EXE,
                           common + " --metrics '" + (dir / "llama.jsonl").string() +
                               "' --checkpoint-dir '" + (dir / "ck").string() + "'");
  INFO(train.output);
  REQUIRE(train.status == 0);
  CHECK_THAT(train.output, Catch::Contains("kv=1 rmsnorm rope(theta 10000, llama3") &&
                               Catch::Contains("swiglu(176)") && Catch::Contains("untied"));
  const std::vector<double> losses = losses_in(dir / "llama.jsonl");
  REQUIRE(losses.size() == 60);
  CHECK(losses.back() < losses.front() - 1.5);

  // The parts from the command line: a GPT-2 preset made Llama-like (Qwen's biases, GQA 2:1).
  const Result parts = run(dir, KILN_TRAIN_GPT_EXE,
                           "--data '" + (dir / "data").string() +
                               "' --backend cpu --model tiny --kv-heads 2 --norm rmsnorm "
                               "--positions rotary --mlp swiglu --bias qkv --head untied "
                               "--rope-theta 500000 --batch 2 --seq-len 16 --steps 3");
  INFO(parts.output);
  REQUIRE(parts.status == 0);
  CHECK_THAT(parts.output, Catch::Contains("kv=2 rmsnorm rope(theta 500000) swiglu(192) bias qkv "
                                           "untied"));

  // Generation from the checkpoint: deterministic for a seed, and the KV cache holds the
  // key/value heads only.
  const auto [g1, g2] = generate_twice(dir, dir / "ck" / "latest.ckpt");
  INFO(g1.output);
  REQUIRE(g1.status == 0);
  CHECK(g1.output.find("40 tokens in") != std::string::npos);
  CHECK_THAT(g1.output, Catch::Contains("rmsnorm"));
  const auto text_of = [](const std::string& out) {  // without the timing line
    return out.substr(0, out.find(" tokens in "));
  };
  CHECK(text_of(g1.output).size() > 40);
  CHECK(text_of(g1.output) == text_of(g2.output));
}

TEST_CASE("the demos refuse bad shards, checkpoints and options with a clear error", "[runtime]") {
  TempDir dir;
  byte_shards(dir);
  const auto shard = dir / "data" / "train_000000.bin";
  const std::string bytes = kiln::test::read_bytes(shard);
  const std::string train = "--backend cpu --model tiny --batch 2 --seq-len 16 --steps 2 --data '";

  // A corrupt payload.
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x01;
  kiln::test::write_bytes(shard, flipped);
  Result r = run(dir, KILN_TRAIN_GPT_EXE, train + (dir / "data").string() + "'");
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("train_000000.bin"));
  // A truncated shard.
  kiln::test::write_bytes(shard, bytes.substr(0, bytes.size() - 7));
  r = run(dir, KILN_TRAIN_GPT_EXE, train + (dir / "data").string() + "'");
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("train_000000.bin"));
  // No shards at all.
  r = run(dir, KILN_TRAIN_GPT_EXE, train + (dir / "nothing").string() + "'");
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("nothing"));
  kiln::test::write_bytes(shard, bytes);

  // A model whose vocabulary is smaller than the data's.
  r = run(dir, KILN_TRAIN_GPT_EXE, train + (dir / "data").string() + "' --vocab 100");
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("vocabulary of 257"));
  // Heads that do not divide the channels; T over the model's maximum.
  r = run(dir, KILN_TRAIN_GPT_EXE, train + (dir / "data").string() + "' --heads 3");
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("n_head (3) must divide n_embd (64)"));
  r = run(dir, KILN_TRAIN_GPT_EXE, train + (dir / "data").string() + "' --max-seq-len 8");
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("seq_len 16 exceeds"));

  // A corrupt checkpoint for generate and for resume.
  kiln::test::write_bytes(dir / "bad.ckpt",
                          "KILNCKPT but not really a checkpoint at all........."
                          "................................................");
  r = run(dir, KILN_GENERATE_EXE, "--checkpoint '" + (dir / "bad.ckpt").string() + "'");
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("bad.ckpt"));
  // (Without --model: with --resume the checkpoint gives the model, and train_gpt refuses
  // model options as meaningless.)
  const std::string resume = "--backend cpu --batch 2 --seq-len 16 --steps 2 --data '";
  r = run(dir, KILN_TRAIN_GPT_EXE,
          resume + (dir / "data").string() + "' --resume '" + (dir / "bad.ckpt").string() + "'");
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("bad.ckpt"));
  r = run(dir, KILN_GENERATE_EXE, "--safetensors '" + (dir / "none.safetensors").string() + "'");
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("none.safetensors"));

  // Missing GPT-2 vocabulary files for the samples / the prompt.
  r = run(dir, KILN_TRAIN_GPT_EXE,
          train + (dir / "data").string() + "' --sample-every 1 --tokenizer gpt2 --vocab-dir '" +
              (dir / "no_vocab").string() + "'");
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Catch::Contains("no_vocab"));

  // --help explains the options.
  r = run(dir, KILN_TRAIN_GPT_EXE, "--help");
  CHECK(r.status == 0);
  for (const char* option :
       {"--grad-accum", "--recompute", "--checkpoint-every", "--resume", "--eval-every",
        "--sample-every", "--metrics", "--plot", "--backend", "--encoder", "--cuda-graph"}) {
    CHECK_THAT(r.output, Catch::Contains(option));
  }
}

#else

TEST_CASE("tokenize, train, resume and generate with the demos on the cpu backend", "[runtime]") {
  KILN_SKIP("train_gpt, generate or kiln_tokenize was not built (CLI11 or libpng missing)");
}

#endif
