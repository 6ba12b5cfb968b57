// The Tokenizer base, the byte tokenizer, the factory, and the Unicode class lookup.
#include "kiln/tokenizer.hpp"

#include <algorithm>
#include <array>

#include "errors/check.hpp"
#include "runtime/tokenizer/unicode.hpp"

namespace kiln {

namespace impl {
namespace {

struct CodeRange {
  std::int32_t lo, hi;  // inclusive
};

// Sorted, disjoint ranges generated from the Python `regex` module; see the file's header for why a
// committed table rather than ICU or a build-time generator.
#include "runtime/tokenizer/unicode_tables.inc"

template <std::size_t N>
bool in_ranges(const CodeRange (&ranges)[N], std::int32_t cp) noexcept {
  const CodeRange* end = ranges + N;
  const CodeRange* it = std::upper_bound(
      ranges, end, cp, [](std::int32_t v, const CodeRange& r) { return v < r.lo; });
  return it != ranges && cp <= (it - 1)->hi;
}

// ASCII is most of most text: one lookup instead of three binary searches.
constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      t[c] = CharClass::letter;
    else if (c >= '0' && c <= '9')
      t[c] = CharClass::number;
    else if (c == ' ' || (c >= 0x09 && c <= 0x0D))
      t[c] = CharClass::space;
    else
      t[c] = CharClass::other;
  }
  return t;
}
constexpr auto kAsciiClasses = make_ascii_classes();

}  // namespace

CharClass char_class(std::int32_t cp) noexcept {
  if (cp < 0) return CharClass::other;
  if (cp < 128) return kAsciiClasses[static_cast<std::size_t>(cp)];
  if (in_ranges(kLetter, cp)) return CharClass::letter;
  if (in_ranges(kNumber, cp)) return CharClass::number;
  if (in_ranges(kSpace, cp)) return CharClass::space;
  return CharClass::other;
}

}  // namespace impl

// ---- Tokenizer ----------------------------------------------------------------------------------

Tokenizer::~Tokenizer() = default;

std::vector<std::int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> out;
  out.reserve(text.size() / 3 + 1);
  encode_into(text, out);
  return out;
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids) const {
  std::string out;
  for (const std::int32_t id : ids)
    out += token_bytes(id);
  return out;
}

// ---- ByteTokenizer ------------------------------------------------------------------------------

ByteTokenizer::ByteTokenizer(std::vector<std::string> extra_specials) {
  specials_.reserve(extra_specials.size() + 1);
  specials_.push_back("<|endoftext|>");
  for (auto& s : extra_specials) {
    KILN_CHECK_ARG(!s.empty(), "ByteTokenizer: a special token has an empty name");
    KILN_CHECK_ARG(std::find(specials_.begin(), specials_.end(), s) == specials_.end(),
                   "ByteTokenizer: special token '", s, "' is given twice");
    specials_.push_back(std::move(s));
  }
}

std::int32_t ByteTokenizer::vocab_size() const {
  return 256 + static_cast<std::int32_t>(specials_.size());
}

namespace {

// Single bytes as views into one static buffer, so token_bytes() needs no storage per call.
constexpr std::array<char, 256> make_all_bytes() {
  std::array<char, 256> a{};
  for (int i = 0; i < 256; ++i)
    a[static_cast<std::size_t>(i)] = static_cast<char>(i);
  return a;
}
constexpr auto kAllBytes = make_all_bytes();

}  // namespace

std::string_view ByteTokenizer::token_bytes(std::int32_t id) const {
  KILN_CHECK_ARG(id >= 0 && id < vocab_size(), "ByteTokenizer: token id ", id,
                 " is outside the vocabulary [0, ", vocab_size(), ")");
  if (id < 256) return {kAllBytes.data() + id, 1};
  return specials_[static_cast<std::size_t>(id - 256)];
}

void ByteTokenizer::encode_into(std::string_view text, std::vector<std::int32_t>& out) const {
  out.reserve(out.size() + text.size());
  for (const char c : text)
    out.push_back(static_cast<unsigned char>(c));
}

// ---- factory and helpers ------------------------------------------------------------------------

std::unique_ptr<Tokenizer> make_tokenizer(std::string_view kind,
                                          const std::filesystem::path& vocab_dir) {
  if (kind == "byte") return std::make_unique<ByteTokenizer>();
  if (kind == "gpt2") {
    KILN_CHECK_ARG(!vocab_dir.empty(),
                   "make_tokenizer: the gpt2 tokenizer needs the folder holding encoder.json and "
                   "vocab.bpe (scripts/fetch_gpt2_vocab.sh puts them in data/gpt2)");
    return std::make_unique<Gpt2Tokenizer>(vocab_dir);
  }
  if (kind.ends_with(".json")) return std::make_unique<HfTokenizer>(std::filesystem::path(kind));
  KILN_CHECK_ARG(false, "make_tokenizer: unknown tokenizer '", kind,
                 "' (expected gpt2, byte, or a Hugging Face tokenizer.json)");
  return nullptr;
}

std::size_t utf8_complete_prefix(std::string_view bytes) noexcept {
  // Only a lead byte among the last three can begin a sequence that later bytes could complete.
  const std::size_t n = bytes.size();
  for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto lead = static_cast<unsigned char>(bytes[n - back]);
    if ((lead & 0xC0) == 0x80) continue;  // a continuation byte: its lead is further back
    std::size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte, per RFC 3629
    if (lead >= 0xC2 && lead <= 0xDF) {
      need = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      need = 3;
      if (lead == 0xE0) lo = 0xA0;  // no overlong forms
      if (lead == 0xED) hi = 0x9F;  // no surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      need = 4;
      if (lead == 0xF0) lo = 0x90;
      if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    }
    if (need <= back) return n;  // ASCII, invalid, or a sequence that is already complete
    if (back >= 2) {
      const auto second = static_cast<unsigned char>(bytes[n - back + 1]);
      if (second < lo || second > hi) return n;  // can never become valid
    }
    return n - back;
  }
  return n;
}

}  // namespace kiln
