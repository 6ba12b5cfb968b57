// kiln_tokenize end to end: text files in, shards out, read back and decoded; and ShardSetWriter.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "kiln/data.hpp"
#include "kiln/tokenizer.hpp"
#include "tests/common/files.hpp"
#include "tests/common/hf_tokenizer_json.hpp"

using kiln::test::TempDir;

namespace {

using Result = kiln::test::CommandResult;

// Runs kiln_tokenize with `args` (already shell-quoted), capturing stdout and stderr.
Result run_tokenize(const TempDir& dir, const std::string& args) {
#ifdef KILN_TOKENIZE_EXE
  return kiln::test::run_command(dir, std::string("'") + KILN_TOKENIZE_EXE + "' " + args);
#else
  (void)dir;
  (void)args;
  return {-1, ""};
#endif
}

// All tokens of one split, shard after shard.
std::vector<std::int32_t> read_split(const std::filesystem::path& dir, const std::string& split) {
  std::vector<std::int32_t> all;
  for (const auto& p : kiln::find_shards(dir, split)) {
    const auto t = kiln::TokenShard(p).read_all();
    all.insert(all.end(), t.begin(), t.end());
  }
  return all;
}

// The documents of a token stream in which each document is preceded by `eot`.
std::vector<std::string> documents(const kiln::Tokenizer& tok,
                                   const std::vector<std::int32_t>& ids) {
  std::vector<std::string> docs;
  REQUIRE(!ids.empty());
  REQUIRE(ids.front() == tok.eot_token());
  std::vector<std::int32_t> cur;
  for (std::size_t i = 1; i <= ids.size(); ++i) {
    if (i == ids.size() || ids[i] == tok.eot_token()) {
      docs.push_back(tok.decode(cur));
      cur.clear();
    } else {
      cur.push_back(ids[i]);
    }
  }
  return docs;
}

}  // namespace

TEST_CASE("kiln_tokenize turns separated documents into train and val shards", "[tokenize]") {
#ifndef KILN_TOKENIZE_EXE
  KILN_SKIP("kiln_tokenize was not built (CLI11 missing or demos off)");
#endif
  TempDir dir;
  // 20 documents over two files, % lines between them (one with a CRLF ending), some Unicode.
  std::vector<std::string> expected;
  std::string a, b;
  for (int i = 0; i < 20; ++i) {
    const std::string doc =
        "Fortune " + std::to_string(i) + ": caf\xc3\xa9 \xe6\x97\xa5\n  line two\n";
    expected.push_back(doc);
    std::string& file = i < 12 ? a : b;
    file += doc + (i == 3 ? "%\r\n" : "%\n");
  }
  b += "%\n%\n";  // empty documents are skipped
  kiln::test::write_bytes(dir / "a.txt", a);
  kiln::test::write_bytes(dir / "b.txt", b);
  const auto out = dir / "shards";
  const Result r = run_tokenize(dir,
                                "--tokenizer byte --separator % --val-fraction 0.25 "
                                "--shard-tokens 100 --out '" +
                                    out.string() + "' '" + (dir / "a.txt").string() + "' '" +
                                    (dir / "b.txt").string() + "'");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains("20 documents from 2 files"));

  const kiln::ByteTokenizer tok;
  const auto train = documents(tok, read_split(out, "train"));
  const auto val = documents(tok, read_split(out, "val"));
  // Every 4th document (3, 7, 11, ...) is val; the rest, in order, train.
  std::vector<std::string> want_train, want_val;
  for (int i = 0; i < 20; ++i)
    (i % 4 == 3 ? want_val : want_train).push_back(expected[i]);
  CHECK(train == want_train);
  CHECK(val == want_val);
  // Shards hold at most 100 tokens; all but the last of a split exactly 100.
  const auto shards = kiln::find_shards(out, "train");
  CHECK(shards.size() > 3);
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const kiln::TokenShard s(shards[i]);
    CHECK(s.vocab_size() == 257);
    CHECK(s.eot_token() == 256);
    if (i + 1 < shards.size()) CHECK(s.size() == 100);
  }

  // The same shards, byte for byte, with another number of threads.
  const auto out3 = dir / "shards3";
  REQUIRE(run_tokenize(dir,
                       "--threads 3 -q --tokenizer byte --separator % --val-fraction 0.25 "
                       "--shard-tokens 100 --out '" +
                           out3.string() + "' '" + (dir / "a.txt").string() + "' '" +
                           (dir / "b.txt").string() + "'")
              .status == 0);
  for (const char* split : {"train", "val"}) {
    const auto one = kiln::find_shards(out, split), three = kiln::find_shards(out3, split);
    REQUIRE(one.size() == three.size());
    for (std::size_t i = 0; i < one.size(); ++i)
      CHECK(kiln::test::read_bytes(one[i]) == kiln::test::read_bytes(three[i]));
  }

  // A second run into the same folder needs --overwrite, and then leaves no stale shard.
  const std::string again =
      "--tokenizer byte --out '" + out.string() + "' '" + (dir / "a.txt").string() + "'";
  const Result refused = run_tokenize(dir, again);
  CHECK(refused.status == 1);
  CHECK_THAT(refused.output, Catch::Contains("--overwrite"));
  REQUIRE(run_tokenize(dir, again + " --overwrite -q").status == 0);
  CHECK(kiln::find_shards(out, "train").size() == 1);
  CHECK_THROWS(kiln::find_shards(out, "val"));
  CHECK(documents(tok, read_split(out, "train")) == std::vector<std::string>{a});
}

TEST_CASE("kiln_tokenize with the GPT-2 tokenizer and a directory input", "[tokenize]") {
#ifndef KILN_TOKENIZE_EXE
  KILN_SKIP("kiln_tokenize was not built (CLI11 missing or demos off)");
#else
  const auto vocab = std::filesystem::path(KILN_SOURCE_DIR) / "data" / "gpt2";
  if (!std::filesystem::exists(vocab / "encoder.json"))
    KILN_SKIP("GPT-2 vocabulary not in " + vocab.string() + ": run scripts/fetch_gpt2_vocab.sh");
  TempDir dir;
  std::filesystem::create_directory(dir / "in");
  kiln::test::write_bytes(dir / "in" / "1.txt", "Hello world");
  kiln::test::write_bytes(dir / "in" / "2.txt", " the end\n");
  kiln::test::write_bytes(dir / "in" / "3.dat", std::string("\0\1\2binary", 9));
  const Result r =
      run_tokenize(dir, "--vocab-dir '" + vocab.string() + "' --out '" + (dir / "out").string() +
                            "' '" + (dir / "in").string() + "'");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains("skipping binary file") && Catch::Contains("3.dat"));
  const auto ids = read_split(dir / "out", "train");
  CHECK(ids == std::vector<std::int32_t>{50256, 15496, 995, 50256, 262, 886, 198});
#endif
}

TEST_CASE("kiln_tokenize reports bad inputs and options and exits non-zero", "[tokenize]") {
#ifndef KILN_TOKENIZE_EXE
  KILN_SKIP("kiln_tokenize was not built (CLI11 missing or demos off)");
#endif
  TempDir dir;
  const Result missing = run_tokenize(dir, "--tokenizer byte --out '" + (dir / "o").string() +
                                               "' '" + (dir / "nope.txt").string() + "'");
  CHECK(missing.status == 1);
  CHECK_THAT(missing.output, Catch::Contains("nope.txt") && Catch::Contains("does not exist"));
  const Result bad_vocab =
      run_tokenize(dir, "--vocab-dir /nonexistent --out '" + (dir / "o").string() + "' /dev/null");
  CHECK(bad_vocab.status == 1);
  CHECK_THAT(bad_vocab.output, Catch::Contains("/nonexistent/encoder.json"));
  const Result bad_option = run_tokenize(dir, "--tokenizer sentencepiece --out x y");
  CHECK(bad_option.status != 0);
  CHECK_THAT(bad_option.output, Catch::Contains("sentencepiece"));
  const Result bad_json = run_tokenize(dir, "--tokenizer '" + (dir / "t.json").string() + "' " +
                                                "--out '" + (dir / "o").string() + "' /dev/null");
  CHECK(bad_json.status == 1);
  CHECK_THAT(bad_json.output, Catch::Contains("t.json"));
  const Result no_out = run_tokenize(dir, "--tokenizer byte /dev/null");
  CHECK(no_out.status == 1);
  CHECK_THAT(no_out.output, Catch::Contains("--out is required"));
}

TEST_CASE("kiln_tokenize with a tokenizer.json of more than 65536 tokens writes uint32 shards",
          "[tokenize]") {
#ifndef KILN_TOKENIZE_EXE
  KILN_SKIP("kiln_tokenize was not built (CLI11 missing or demos off)");
#endif
  TempDir dir;
  // 70000 words " q" + 4 letters in the vocabulary, found whole through ignore_merges: the last
  // ones have ids above 65535.
  kiln::test::HfSpec spec;
  spec.ignore_merges = true;
  for (int i = 0; i < 70000; ++i) {
    std::string w = " q";
    for (int k = 0, v = i; k < 4; ++k, v /= 26)
      w += static_cast<char>('a' + v % 26);
    spec.extra_tokens.push_back(w);
  }
  spec.added = {{"<|endoftext|>", true}, {"<|begin_of_text|>", true}};
  spec.pre_tokenizer = {
      {"type", "Sequence"},
      {"pretokenizers",
       {kiln::test::split_step(kiln::test::kLlama3Regex), kiln::test::byte_level_step(false)}}};
  const auto json_path = dir / "tokenizer.json";
  kiln::test::write_bytes(json_path, kiln::test::make_hf_json(spec).dump());
  const std::string doc1 = "one qhozd two\n", doc2 = "caf\xC3\xA9 qaaaa 123456 <|endoftext|>";
  kiln::test::write_bytes(dir / "a.txt", doc1 + "%\n" + doc2);
  const auto out = dir / "shards";
  const Result r = run_tokenize(dir, "--tokenizer '" + json_path.string() +
                                         "' --add-bos --bos '<|begin_of_text|>' --separator % "
                                         "--out '" +
                                         out.string() + "' '" + (dir / "a.txt").string() + "'");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, Catch::Contains("hf tokenizer (vocab 70258)"));
  const kiln::HfTokenizer tok(json_path);
  const std::int32_t eot = 70256, bos = 70257;
  CHECK(tok.eot_token() == eot);
  const auto shards = kiln::find_shards(out, "train");
  REQUIRE(shards.size() == 1);
  const kiln::TokenShard shard(shards[0]);
  CHECK(shard.dtype() == kiln::TokenDtype::u32);
  CHECK(shard.vocab_size() == 70258);
  const auto ids = shard.read_all();
  // " qhozd" is word 69999 (letters h, o, z, d are its digits in base 26, lowest first).
  const std::int32_t qhozd = 256 + (7 + 14 * 26 + 25 * 26 * 26 + 3 * 26 * 26 * 26);
  REQUIRE(qhozd == 70255);
  std::vector<std::int32_t> want{eot, bos};
  for (const char c : std::string("one"))
    want.push_back(static_cast<unsigned char>(c));
  want.push_back(qhozd);
  CHECK(std::vector<std::int32_t>(ids.begin(), ids.begin() + 6) == want);
  // Each document: EOT, BOS, then the text, which decodes back (the special's text included).
  std::string all;
  for (const auto id : ids)
    all += tok.token_bytes(id);
  CHECK(all == "<|endoftext|><|begin_of_text|>" + doc1 + "<|endoftext|><|begin_of_text|>" + doc2);
  const Result bench = run_tokenize(dir, "--tokenizer '" + json_path.string() + "' --bench " +
                                             "--threads 2 '" + (dir / "a.txt").string() + "'");
  INFO(bench.output);
  CHECK(bench.status == 0);
  CHECK_THAT(bench.output, Catch::Contains("kiln hf: 2 threads"));
  const Result no_hf = run_tokenize(dir, "--tokenizer byte --eot x --out o a.txt");
  CHECK(no_hf.status == 1);
  CHECK_THAT(no_hf.output, Catch::Contains("need a Hugging Face tokenizer.json"));
}

TEST_CASE("ShardSetWriter rolls over at the shard size and keeps names in order", "[tokenize]") {
  TempDir dir;
  std::vector<std::int32_t> tokens(1050);
  for (std::size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = static_cast<std::int32_t>(i % 300);
  {
    kiln::ShardSetWriter w(dir.path(), "train", 100, 300, 299);
    w.write(std::span(tokens).first(33));
    w.write(std::span(tokens).subspan(33));
    CHECK(w.paths().size() == 10);  // the partial 11th is not written yet
    w.commit();
    CHECK(w.tokens() == 1050);
    REQUIRE(w.paths().size() == 11);
    CHECK(w.paths()[10].filename() == "train_000010.bin");
  }
  std::vector<std::int32_t> back;
  for (const auto& p : kiln::find_shards(dir.path(), "train")) {
    const auto t = kiln::TokenShard(p).read_all();
    back.insert(back.end(), t.begin(), t.end());
  }
  CHECK(back == tokens);
  {
    kiln::ShardSetWriter w(dir.path(), "val", 100, 300);
    w.write(std::span(tokens).first(150));
  }  // no commit: the full shard stays, the partial one is dropped
  CHECK(kiln::find_shards(dir.path(), "val").size() == 1);
  CHECK(dir.list().size() == 12);
}
