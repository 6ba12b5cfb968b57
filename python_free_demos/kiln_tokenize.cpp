// kiln_tokenize: turns text files into token shards for training.
//
//   kiln_tokenize --out data/fortunes --separator % /usr/share/games/fortunes
//   kiln_tokenize --tokenizer byte --val-fraction 0.1 --out data/shakespeare input.txt
//
// Each document (a whole file, or with --separator the text between separator lines) is preceded
// by the end-of-text token, as GPT-2's training data is. Every k-th document goes to the val split
// (k = 1 / --val-fraction, spread evenly through the corpus rather than its tail, so a corpus
// sorted by topic still gets a representative val set). Shards: <out>/train_000000.bin ...,
// <out>/val_000000.bin ... (kiln::find_shards lists them; the format is in kiln/data.hpp).
// Directories given as inputs contribute their regular files in name order, skipping links and
// binary files (a NUL byte in the first 8 KiB); files named explicitly are always read. --threads
// encodes documents in parallel; the shards are the same, byte for byte, for any thread count.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cli_checks.hpp"
#include "kiln/kiln.hpp"

namespace fs = std::filesystem;

namespace {

struct Options {
  std::vector<std::string> inputs;
  std::string tokenizer = "gpt2";
  std::string vocab_dir = "data/gpt2";
  std::string out;
  std::int64_t shard_tokens = 100'000'000;
  double val_fraction = 0.0;
  std::string separator;
  bool has_separator = false;
  std::string dtype = "auto";
  bool overwrite = false;
  bool quiet = false;
  int threads = 1;
};

// Text encoded per batch of documents: bounds memory (about 4 x this in token ids) on large files.
constexpr std::size_t kBatchBytes = std::size_t{32} << 20;

bool looks_binary(const kiln::MappedFile& f) {
  const std::size_t n = std::min<std::size_t>(f.size(), 8192);
  return std::find(f.data(), f.data() + n, std::byte{0}) != f.data() + n;
}

// The files to read, in order. Throws kiln::Error (io_error) naming an input that does not exist.
std::vector<fs::path> expand_inputs(const std::vector<std::string>& inputs, bool quiet) {
  std::vector<fs::path> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(in, ec);
    if (ec || !fs::exists(st))
      throw kiln::Error(kiln::Status::io_error, "input '" + in + "' does not exist");
    if (!fs::is_directory(st)) {
      files.emplace_back(in);
      continue;
    }
    std::vector<fs::path> found;
    for (const auto& e : fs::directory_iterator(in))
      if (e.is_regular_file() && !e.is_symlink()) found.push_back(e.path());
    std::sort(found.begin(), found.end());
    for (auto& p : found) {
      if (looks_binary(kiln::MappedFile(p))) {
        if (!quiet) std::printf("skipping binary file %s\n", p.c_str());
        continue;
      }
      files.push_back(std::move(p));
    }
  }
  return files;
}

// Calls emit(document) for each document of `text`: the whole text, or the runs of lines between
// lines equal to `separator` (a trailing "\r" ignored). Empty documents are skipped.
template <typename Emit>
void split_documents(std::string_view text, const Options& opt, Emit&& emit) {
  if (!opt.has_separator) {
    if (!text.empty()) emit(text);
    return;
  }
  std::size_t doc_start = 0, pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    const std::size_t next = eol == std::string_view::npos ? text.size() : eol + 1;
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == opt.separator) {
      if (pos > doc_start) emit(text.substr(doc_start, pos - doc_start));
      doc_start = next;
    }
    pos = next;
  }
  if (text.size() > doc_start) emit(text.substr(doc_start));
}

int run(const Options& opt) {
  const auto start = std::chrono::steady_clock::now();
  if (opt.val_fraction < 0.0 || opt.val_fraction >= 1.0)
    throw kiln::Error(kiln::Status::invalid_argument, "--val-fraction must be in [0, 1)");
  const std::unique_ptr<kiln::Tokenizer> tok = kiln::make_tokenizer(opt.tokenizer, opt.vocab_dir);
  const std::vector<fs::path> files = expand_inputs(opt.inputs, opt.quiet);
  if (files.empty()) throw kiln::Error(kiln::Status::invalid_argument, "no input files");

  fs::create_directories(opt.out);
  // Shards of an earlier run would mix with this run's in find_shards().
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(opt.out)) {
    const std::string name = e.path().filename().string();
    if ((name.starts_with("train_") || name.starts_with("val_")) && name.ends_with(".bin"))
      stale.push_back(e.path());
  }
  if (!stale.empty() && !opt.overwrite)
    throw kiln::Error(kiln::Status::invalid_argument,
                      "'" + opt.out + "' already holds shards (e.g. '" + stale.front().string() +
                          "'); pass --overwrite to replace them");
  for (const auto& p : stale)
    fs::remove(p);

  kiln::TokenDtype dtype = kiln::token_dtype_for(tok->vocab_size());
  if (opt.dtype == "u16") dtype = kiln::TokenDtype::u16;
  if (opt.dtype == "u32") dtype = kiln::TokenDtype::u32;
  kiln::ShardSetWriter train(opt.out, "train", opt.shard_tokens, tok->vocab_size(),
                             tok->eot_token(), dtype);
  kiln::ShardSetWriter val(opt.out, "val", opt.shard_tokens, tok->vocab_size(), tok->eot_token(),
                           dtype);

  std::int64_t docs = 0, val_docs = 0, bytes = 0;
  // Documents are gathered into batches, encoded by the threads (any order), then written in
  // corpus order, so the shards do not depend on the thread count.
  std::vector<std::string_view> batch;
  std::vector<std::vector<std::int32_t>> encoded;
  std::size_t batch_bytes = 0;
  auto flush = [&] {
    encoded.resize(batch.size());
    std::atomic<std::size_t> next{0};
    auto work = [&] {
      for (std::size_t i; (i = next.fetch_add(1)) < batch.size();) {
        encoded[i].assign(1, tok->eot_token());
        tok->encode(batch[i], encoded[i]);
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < opt.threads; ++t)
      pool.emplace_back(work);
    work();
    for (auto& t : pool)
      t.join();
    for (std::size_t i = 0; i < batch.size(); ++i) {
      // Document k is val when floor((k + 1) f) > floor(k f): exactly a fraction f, spread evenly.
      const double f = opt.val_fraction;
      const bool is_val =
          std::floor(static_cast<double>(docs + 1) * f) > std::floor(static_cast<double>(docs) * f);
      (is_val ? val : train).write(encoded[i]);
      ++docs;
      val_docs += is_val;
      bytes += static_cast<std::int64_t>(batch[i].size());
    }
    batch.clear();
    batch_bytes = 0;
  };
  for (const auto& file : files) {
    const kiln::MappedFile map(file);
    const std::string_view text(reinterpret_cast<const char*>(map.data()), map.size());
    split_documents(text, opt, [&](std::string_view doc) {
      batch.push_back(doc);
      batch_bytes += doc.size();
      if (batch_bytes >= kBatchBytes) flush();
    });
    flush();  // before the file's mapping goes away
  }
  train.commit();
  val.commit();
  if (opt.val_fraction > 0.0 && val_docs == 0)
    std::fprintf(stderr,
                 "kiln_tokenize: warning: %lld documents are too few for a val fraction of %g: "
                 "no val shard written\n",
                 static_cast<long long>(docs), opt.val_fraction);

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!opt.quiet) {
    std::printf("%s tokenizer (vocab %d): %lld documents from %zu files, %.1f MB of text\n",
                tok->name().c_str(), tok->vocab_size(), static_cast<long long>(docs), files.size(),
                static_cast<double>(bytes) / 1e6);
    std::printf(
        "train: %lld tokens in %zu shards; val: %lld tokens (%lld documents) in %zu shards\n",
        static_cast<long long>(train.tokens()), train.paths().size(),
        static_cast<long long>(val.tokens()), static_cast<long long>(val_docs), val.paths().size());
    std::printf("wrote %s/ in %.2f s (%.1f MB/s)\n", opt.out.c_str(), seconds,
                static_cast<double>(bytes) / 1e6 / std::max(seconds, 1e-9));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln_tokenize: turn text files into kiln token shards (train_*.bin, val_*.bin)"};
  Options opt;
  app.add_option("inputs", opt.inputs, "Text files, or directories of text files")->required();
  app.add_option("--tokenizer", opt.tokenizer, "gpt2 or byte")
      ->check(CLI::IsMember({"gpt2", "byte"}))
      ->capture_default_str();
  app.add_option("--vocab-dir", opt.vocab_dir,
                 "Folder with GPT-2's encoder.json and vocab.bpe (scripts/fetch_gpt2_vocab.sh)")
      ->capture_default_str();
  app.add_option("--out", opt.out, "Output folder for the shards")->required();
  app.add_option("--shard-tokens", opt.shard_tokens, "Tokens per shard")
      ->capture_default_str()
      ->check(demo_cli::integer(1, int64_t{1} << 40));
  app.add_option("--val-fraction", opt.val_fraction,
                 "Fraction of the documents held out as the val split, in [0, 1)")
      ->capture_default_str()
      ->check(demo_cli::number(0, 1, false, true));
  app.add_option("--separator", opt.separator,
                 "A line equal to this separates documents (e.g. % for fortune files); without it "
                 "each file is one document");
  app.add_option("--dtype", opt.dtype,
                 "Token width on disk: auto (uint16 when the vocab fits), u16 "
                 "or u32")
      ->check(CLI::IsMember({"auto", "u16", "u32"}))
      ->capture_default_str();
  opt.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--threads", opt.threads,
                 "Threads encoding documents (the output is the same for any count)")
      ->capture_default_str()
      ->check(demo_cli::integer(1, 1024));
  app.add_flag("--overwrite", opt.overwrite, "Replace shards already in the output folder");
  app.add_flag("-q,--quiet", opt.quiet, "Print nothing but errors");
  CLI11_PARSE(app, argc, argv);
  opt.has_separator = app.count("--separator") > 0;
  try {
    return run(opt);
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "kiln_tokenize: %s\n", e.message().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_tokenize: %s\n", e.what());
    return 1;
  }
}
