// Options train_gpt and generate both take, in the same words: the backend and its threads, and
// how samples are drawn and decoded.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "cli_checks.hpp"
#include "kiln/kiln.hpp"

namespace demo_cli {

// --backend (kiln::make_backend's names).
inline void add_backend_option(CLI::App& app, std::string& backend) {
  app.add_option("--backend", backend, "auto (cuda when a device exists, else cpu), cuda or cpu")
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}))
      ->capture_default_str();
}

// --threads: the cpu backend's.
inline void add_threads_option(CLI::App& app, int& threads) {
  app.add_option("--threads", threads, "CPU backend threads (0: all cores)")
      ->capture_default_str()
      ->check(integer(0, kiln::limits::kMaxThreads));
}

// How samples are drawn (--temperature, --top-k, --top-p).
struct Sampling {
  double temperature = 0.8, top_p = 0.95;
  int64_t top_k = 40;

  kiln::SamplingConfig config(uint64_t seed) const {
    kiln::SamplingConfig sc;
    sc.temperature = temperature;
    sc.top_k = top_k;
    sc.top_p = top_p;
    sc.seed = seed;
    return sc;
  }
};

inline void add_sampling_options(CLI::App& app, Sampling& s) {
  app.add_option("--temperature", s.temperature, "Sampling temperature (0: greedy)")
      ->capture_default_str()
      ->check(number(0, 100));
  app.add_option("--top-k", s.top_k, "Sample among the k most likely tokens (0: all)")
      ->capture_default_str()
      ->check(integer(0, kiln::limits::kMaxVocab));
  app.add_option("--top-p", s.top_p, "Nucleus sampling threshold (1: off)")
      ->capture_default_str()
      ->check(number(0, 1, true));
}

// The prompt's tokens; an empty prompt starts from the end-of-text token.
inline std::vector<int32_t> prompt_tokens(const kiln::Tokenizer& tokenizer,
                                          const std::string& prompt) {
  std::vector<int32_t> ids = tokenizer.encode(prompt);
  if (ids.empty()) ids.push_back(tokenizer.eot_token());
  return ids;
}

// --vocab-dir.
inline void add_vocab_dir_option(CLI::App& app, std::string& vocab_dir) {
  app.add_option("--vocab-dir", vocab_dir, "GPT-2 tokenizer files (encoder.json, vocab.bpe)")
      ->capture_default_str();
}

// The tokenizer --tokenizer names; "auto": byte for a vocabulary of at most 257 tokens (the 256
// bytes and an end-of-text), else gpt2.
inline std::string tokenizer_kind(const std::string& option, int64_t vocab_size) {
  if (option != "auto") return option;
  return vocab_size <= 257 ? "byte" : "gpt2";
}

}  // namespace demo_cli
