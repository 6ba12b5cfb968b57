// Tokenizers: text (bytes) <-> token ids (int32, as the embedding op takes them).
//
//   auto tok = kiln::make_tokenizer("gpt2", "data/gpt2");   // or "byte" (needs no files), or
//                                                           // "data/llama3/tokenizer.json"
//   std::vector<int32_t> ids = tok->encode("Hello world");   // {15496, 995}
//   std::string text = tok->decode(ids);                     // "Hello world"
//
// All tokenizers are byte-level: every byte string encodes, and decode(encode(s)) == s for every
// s, including invalid UTF-8. encode() treats its whole input as ordinary text: the characters
// "<|endoftext|>" in a document become ordinary tokens, never the special token, so training data
// cannot inject separators; put eot_token() between documents yourself (kiln_tokenize does).
// Tokenizers are immutable after construction and safe to use from several threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/error.hpp"
#include "kiln/export.h"

namespace kiln {

class KILN_API Tokenizer {
 public:
  virtual ~Tokenizer();

  // "gpt2", "byte" or "hf".
  virtual std::string name() const = 0;
  // Every id encode() produces or decode() accepts is in [0, vocab_size()).
  virtual std::int32_t vocab_size() const = 0;
  // The end-of-text token, "<|endoftext|>" (50256 for GPT-2, 256 for the byte tokenizer).
  virtual std::int32_t eot_token() const = 0;
  // True for special tokens (end-of-text and any others), which encode() never produces.
  virtual bool is_special(std::int32_t id) const = 0;
  // The bytes token `id` stands for; for a special token its name, e.g. "<|endoftext|>".
  // Throws Status::invalid_argument when id is outside [0, vocab_size()).
  virtual std::string_view token_bytes(std::int32_t id) const = 0;

  // Appends the tokens of `text` to `out`.
  void encode(std::string_view text, std::vector<std::int32_t>& out) const {
    encode_into(text, out);
  }
  std::vector<std::int32_t> encode(std::string_view text) const;
  // The concatenated bytes of `ids` (may end inside a multi-byte UTF-8 character when `ids` is a
  // prefix of an encoding; see utf8_complete_prefix). Throws invalid_argument on an id out of
  // range.
  std::string decode(std::span<const std::int32_t> ids) const;

 protected:
  virtual void encode_into(std::string_view text, std::vector<std::int32_t>& out) const = 0;
};

// 256 byte tokens (id = byte value) followed by special tokens: <|endoftext|> = 256, then
// `extra_specials` in order (257, 258, ...). vocab_size() = 257 + extra_specials.size().
class KILN_API ByteTokenizer final : public Tokenizer {
 public:
  explicit ByteTokenizer(std::vector<std::string> extra_specials = {});
  std::string name() const override { return "byte"; }
  std::int32_t vocab_size() const override;
  std::int32_t eot_token() const override { return 256; }
  bool is_special(std::int32_t id) const override { return id >= 256 && id < vocab_size(); }
  std::string_view token_bytes(std::int32_t id) const override;

 protected:
  void encode_into(std::string_view text, std::vector<std::int32_t>& out) const override;

 private:
  std::vector<std::string> specials_;  // specials_[0] == "<|endoftext|>"
};

// GPT-2's byte-level BPE (50257 tokens), loaded from OpenAI's `encoder.json` and `vocab.bpe`
// (scripts/fetch_gpt2_vocab.sh puts them in data/gpt2/). Encodes exactly as OpenAI's encoder.py:
// the text is split by GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (matched by hand over UTF-8 code points with Unicode letter / number / white-space classes),
// each piece's bytes are merged by BPE rank, and pieces are cached. Bytes that are not valid UTF-8
// count as neither letter, number nor space, so any byte string encodes and round-trips.
class KILN_API Gpt2Tokenizer final : public Tokenizer {
 public:
  // Reads `vocab_dir`/encoder.json and `vocab_dir`/vocab.bpe.
  explicit Gpt2Tokenizer(const std::filesystem::path& vocab_dir);
  // Throws io_error when a file is missing, data_error naming the file, line or key when its
  // contents are not a consistent GPT-2 vocabulary.
  Gpt2Tokenizer(const std::filesystem::path& encoder_json, const std::filesystem::path& vocab_bpe);
  ~Gpt2Tokenizer() override;

  std::string name() const override { return "gpt2"; }
  std::int32_t vocab_size() const override;
  std::int32_t eot_token() const override;
  bool is_special(std::int32_t id) const override;
  std::string_view token_bytes(std::int32_t id) const override;

  // The pre-tokenizer alone: the pieces the pattern above splits `text` into (views into `text`).
  static std::vector<std::string_view> split(std::string_view text);

 protected:
  void encode_into(std::string_view text, std::vector<std::int32_t>& out) const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Options of HfTokenizer, all explicit: nothing a tokenizer.json implies is applied silently.
struct HfTokenizerOptions {
  // encode() starts with the BOS token: the one the file's post_processor (TemplateProcessing)
  // puts before the text, or `bos` when given. Off by default.
  bool add_bos = false;
  // The BOS token's content (e.g. "<|begin_of_text|>"), when the post_processor names none.
  std::string bos;
  // The content of the token eot_token() returns; empty: the first of "<|endoftext|>",
  // "<|end_of_text|>" that the file has (GPT-2, Qwen2 and SmolLM2; Llama 3).
  std::string eot;
};

// A Hugging Face `tokenizer.json` holding a byte-level BPE (the format of Llama 3, Qwen2,
// SmolLM2, GPT-2 exports): model BPE with vocab and merges ("a b" strings or [a, b] arrays) and
// `ignore_merges` (a whole pre-token found in the vocabulary is one token), added tokens (matched
// in the text before pre-tokenization, longest first), the normalizer NFC (Qwen2, Qwen3) or none,
// the pre-tokenizer (ByteLevel, Split with Llama 3's, Qwen2's or GPT-2's pattern, Digits, or a
// Sequence of them) and the ByteLevel decoder. Encodes as Hugging Face's tokenizers do. The split
// patterns are hand-written matchers over Unicode classes (unicode_tables.inc); any other
// pattern, normalizer, or option kiln does not implement is refused, quoting it, rather than
// encoded differently. Bytes that are not valid UTF-8 count as neither letter, number nor space,
// so every byte string encodes and decode() gives it back, except that with NFC decode() gives
// the NFC of the text (as Hugging Face's would).
//
// Special tokens: encode() treats their text as ordinary text (as the other tokenizers do);
// encode(text, out, SpecialTokens::allow) turns them into their ids, like tiktoken's
// allowed_special="all". Added tokens that are not special are always matched, as in Hugging Face.
class KILN_API HfTokenizer final : public Tokenizer {
 public:
  enum class SpecialTokens { ordinary_text, allow };

  // Throws io_error when the file is missing, data_error naming the file and key when it is not
  // valid JSON, not a byte-level BPE kiln implements, or inconsistent (e.g. a merge whose tokens
  // are not in the vocabulary), invalid_argument when an option names no token of the file.
  explicit HfTokenizer(const std::filesystem::path& tokenizer_json,
                       const HfTokenizerOptions& options = {});
  ~HfTokenizer() override;

  std::string name() const override { return "hf"; }
  std::int32_t vocab_size() const override;
  std::int32_t eot_token() const override;
  bool is_special(std::int32_t id) const override;
  std::string_view token_bytes(std::int32_t id) const override;

  // The id of the BOS token (from the post_processor or options.bos), or -1 when there is none.
  std::int32_t bos_token() const;
  // The id of an added token by its content, or -1.
  std::int32_t added_token(std::string_view content) const;

  using Tokenizer::encode;
  void encode(std::string_view text, std::vector<std::int32_t>& out, SpecialTokens specials) const;

  // The pre-tokenizer alone on text without added tokens: the pieces it splits `text` into.
  std::vector<std::string_view> split(std::string_view text) const;

 protected:
  void encode_into(std::string_view text, std::vector<std::int32_t>& out) const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "byte" -> ByteTokenizer; "gpt2" -> Gpt2Tokenizer(vocab_dir); a path ending in ".json" ->
// HfTokenizer(that file). Throws invalid_argument otherwise.
KILN_API std::unique_ptr<Tokenizer> make_tokenizer(std::string_view kind,
                                                   const std::filesystem::path& vocab_dir = {});

// The length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence which the
// following bytes could still complete: what a streaming printer can emit now, keeping the rest
// for after the next token. Invalid bytes count as complete (they will never become valid).
KILN_API std::size_t utf8_complete_prefix(std::string_view bytes) noexcept;

}  // namespace kiln
