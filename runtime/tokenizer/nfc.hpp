// Unicode normalization form C (internal), for tokenizer.json files whose normalizer is NFC
// (Qwen2's, Qwen3's). Tables: nfc_tables.inc (scripts/gen_nfc_tables.js, Unicode 17.0).
#pragma once

#include <string>
#include <string_view>

namespace kiln::impl {

// True when `text` is certainly its own NFC: no code point at or above U+0300 (no byte from 0xCC
// up), which holds for most text and costs one pass over the bytes.
bool nfc_quick_check(std::string_view text) noexcept;

// Appends the NFC of `text` to `out`. Bytes that are not valid UTF-8 are copied as they are and
// end what comes before them (a mark after one composes with nothing before it).
void nfc(std::string_view text, std::string& out);

}  // namespace kiln::impl
