// Pre-tokenizers (internal): the split patterns that byte-level BPE tokenizers ship, matched by
// hand over UTF-8 code points with Unicode classes (unicode.hpp). Each appends to `out` views into
// `text` that concatenate back to it. Bytes that are not valid UTF-8 count as neither letter,
// number nor space, so every byte string splits.
#pragma once

#include <string_view>
#include <vector>

namespace kiln::impl {

// GPT-2's pattern:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void split_gpt2(std::string_view text, std::vector<std::string_view>& out);

// Llama 3's pattern (max_digits 3) and Qwen2's (max_digits 1, i.e. \p{N} instead of \p{N}{1,3}):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
void split_llama3(std::string_view text, int max_digits, std::vector<std::string_view>& out);

// Hugging Face's Digits pre-tokenizer: numbers (\p{N}, as Rust's char::is_numeric) one per piece
// (`individual`) or in runs, and the text between them as pieces.
void split_digits(std::string_view text, bool individual, std::vector<std::string_view>& out);

}  // namespace kiln::impl
