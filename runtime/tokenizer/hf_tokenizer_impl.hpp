// HfTokenizer's state (internal), shared by its loader (hf_tokenizer_load.cpp) and its encoder
// (hf_tokenizer.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "kiln/tokenizer.hpp"
#include "runtime/tokenizer/byte_level.hpp"

namespace kiln {

// Bounds on what a tokenizer.json may hold, so that a damaged or hostile file is refused before
// it exhausts memory. The largest byte-level vocabularies shipped are about 260k tokens in files
// under 40 MB, with tokens under 300 bytes.
constexpr std::uintmax_t kHfMaxFileBytes = std::uintmax_t{512} << 20;
constexpr std::int64_t kHfMaxVocab = std::int64_t{1} << 22;  // ids and merges
constexpr std::size_t kHfMaxTokenBytes = 1024;

// One step of the pre-tokenizer; a Sequence applies them in order, each to every piece of the
// step before.
enum class HfPreStep : std::uint8_t {
  split_gpt2,         // ByteLevel(use_regex) or Split(GPT-2's pattern)
  split_llama3,       // Split(Llama 3's pattern)
  split_qwen2,        // Split(Qwen2's pattern)
  digits,             // Digits(individual_digits: false)
  digits_individual,  // Digits(individual_digits: true)
};

enum class HfTokenKind : std::uint8_t { ordinary, added, special };

struct HfTokenizer::Impl {
  std::vector<std::string> tokens;  // id -> bytes (added tokens: their content)
  std::vector<HfTokenKind> kind;    // id -> ordinary, added (not special) or special
  impl::BpeMerges bpe;              // byte ids and merges
  bool ignore_merges = false;       // a pre-token in `vocab` is one token, before any merge
  bool nfc = false;                 // the normalizer: NFC, or none
  // bytes -> id of the ordinary tokens (not the added ones), for ignore_merges.
  std::unordered_map<std::string, std::int32_t, impl::PieceHash, std::equal_to<>> vocab;
  std::vector<HfPreStep> steps;     // the pre-tokenizer, in order
  std::int32_t eot = -1, bos = -1;  // bos: -1 when there is none
  bool add_bos = false;

  // The added tokens as a byte trie, searched at each position of the text for the longest one
  // that starts there. root[b]: the node after byte b, or -1.
  struct Node {
    std::int32_t token = -1;                                   // the token ending here, or -1
    std::vector<std::pair<unsigned char, std::int32_t>> kids;  // byte -> node
  };
  std::array<std::int32_t, 256> root{};
  std::vector<Node> trie;
  bool any_added_ordinary = false;  // some added token is not special (matched in every mode)

  impl::PieceCache cache;

  void add_to_trie(std::string_view content, std::int32_t id);
  // The longest added token at text[i] that `allow_special` permits: its length and id, or 0.
  std::size_t match_added(std::string_view text, std::size_t i, bool allow_special,
                          std::int32_t* id) const;
  // Pre-tokenizes and merges text that holds no added token.
  void encode_plain(std::string_view text, std::vector<std::int32_t>& out) const;
  void pre_tokenize(std::string_view text, std::vector<std::string_view>& pieces) const;
};

}  // namespace kiln
