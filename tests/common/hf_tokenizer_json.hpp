// Small Hugging Face tokenizer.json files for tests: a byte-level BPE with the 256 byte tokens
// (ids 0..255 in byte order, or after `leading` added tokens), the merges given (in rank order,
// each adding the merged token), extra vocabulary tokens, and added tokens after them.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/tokenizer/byte_level.hpp"

namespace kiln::test {

struct HfSpec {
  std::vector<std::pair<std::string, std::string>> merges;  // bytes, in rank order
  std::vector<std::string> extra_tokens;                    // bytes: vocabulary without merges
  bool array_merges = false;                                // [a, b] instead of "a b"
  bool ignore_merges = false;
  // Added tokens (content, special) given ids after the vocabulary.
  std::vector<std::pair<std::string, bool>> added;
  // Added tokens (content, special) also listed in the vocabulary, at ids 0.. before the bytes
  // (SmolLM2's layout).
  std::vector<std::pair<std::string, bool>> leading;
  nlohmann::json pre_tokenizer = {{"type", "ByteLevel"},
                                  {"add_prefix_space", false},
                                  {"trim_offsets", true},
                                  {"use_regex", true}};
  nlohmann::json post_processor = nullptr;
};

inline nlohmann::json added_token_json(const std::string& content, int id, bool special) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

inline nlohmann::json make_hf_json(const HfSpec& s) {
  using nlohmann::json;
  json vocab = json::object(), merges = json::array(), added = json::array();
  int id = 0;
  for (const auto& [content, special] : s.leading) {
    vocab[content] = id;
    added.push_back(added_token_json(content, id++, special));
  }
  for (int b = 0; b < 256; ++b)
    vocab[impl::bytes_to_unicode(std::string(1, static_cast<char>(b)))] = id++;
  for (const auto& [l, r] : s.merges) {
    const std::string lu = impl::bytes_to_unicode(l), ru = impl::bytes_to_unicode(r);
    if (s.array_merges)
      merges.push_back(json::array({lu, ru}));
    else
      merges.push_back(lu + " " + ru);
    const std::string m = impl::bytes_to_unicode(l + r);
    if (!vocab.contains(m)) vocab[m] = id++;
  }
  for (const auto& t : s.extra_tokens)
    vocab[impl::bytes_to_unicode(t)] = id++;
  for (const auto& [content, special] : s.added)
    added.push_back(added_token_json(content, id++, special));
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", s.pre_tokenizer},
          {"post_processor", s.post_processor},
          {"decoder",
           {{"type", "ByteLevel"},
            {"add_prefix_space", true},
            {"trim_offsets", true},
            {"use_regex", true}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", s.ignore_merges},
            {"vocab", vocab},
            {"merges", merges}}}};
}

// Split pre-tokenizer steps with the patterns kiln implements.
inline nlohmann::json split_step(const std::string& regex) {
  return {{"type", "Split"},
          {"pattern", {{"Regex", regex}}},
          {"behavior", "Isolated"},
          {"invert", false}};
}
inline const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline nlohmann::json byte_level_step(bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", false},
          {"trim_offsets", true},
          {"use_regex", use_regex}};
}

}  // namespace kiln::test
