// UTF-8 decoding and the character classes of GPT-2's pre-tokenization pattern (internal).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kiln/export.h"

namespace kiln::impl {

enum class CharClass : std::uint8_t { letter, number, space, other };

struct CodePoint {
  std::int32_t cp;  // the code point, or -1 for a byte that does not start a valid sequence
  int length;       // bytes consumed: 1..4 (1 for an invalid byte)
};

// Decodes the code point starting at s[i] (i < s.size()). Strict UTF-8: overlong forms, surrogates
// and values above U+10FFFF are invalid, and an invalid sequence consumes one byte only, so the
// next call resynchronizes on the following byte.
inline CodePoint decode_utf8(std::string_view s, std::size_t i) noexcept {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1};
  int len;
  std::int32_t cp, min;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return {-1, 1};
  }
  if (i + static_cast<std::size_t>(len) > s.size()) return {-1, 1};
  for (int k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
    if ((b & 0xC0) != 0x80) return {-1, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {-1, 1};
  return {cp, len};
}

// \p{L}, \p{N} and \s as the Python `regex` module defines them (see unicode_tables.inc); -1
// (an invalid byte) is `other`. The tables (regex 2026.5.9) are Unicode 17.0: \p{L} and \p{N} are
// equal, code point for code point, to those of node 20 (ICU 78.2, Unicode 17.0); \s is Unicode's
// White_Space, as Oniguruma (Hugging Face's tokenizers) and Rust's regex (tiktoken) read it, which
// differs from JavaScript's \s at U+0085 (space here) and U+FEFF (not space here).
KILN_API CharClass char_class(std::int32_t cp) noexcept;

}  // namespace kiln::impl
