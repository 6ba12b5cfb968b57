// NFC as UAX #15 defines it: canonical decomposition (tables, and Hangul by arithmetic), canonical
// ordering of marks by combining class, then canonical composition of each mark with the last
// starter unless a mark between them blocks it.
#include "runtime/tokenizer/nfc.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "runtime/tokenizer/unicode.hpp"

namespace kiln::impl {
namespace {

struct Decomposition {
  std::int32_t cp;
  std::int32_t d[4];  // zero-terminated when shorter
};
struct CombiningClass {
  std::int32_t cp;
  std::uint8_t rank;  // order-preserving stand-in for the class (see gen_nfc_tables.js)
};
struct Composition {
  std::int32_t first, second, composite;
};

#include "runtime/tokenizer/nfc_tables.inc"

static_assert(kMaxDecomposition <= 4, "Decomposition::d holds at most 4 code points");

// Hangul syllables: decomposed and composed by arithmetic (Unicode chapter 3.12).
constexpr std::int32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr std::int32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount;
constexpr std::int32_t kSCount = kLCount * kNCount;

int combining_rank(std::int32_t cp) {
  if (cp < 0x300) return 0;
  const auto* end = std::end(kCombiningClasses);
  const auto* it =
      std::lower_bound(std::begin(kCombiningClasses), end, cp,
                       [](const CombiningClass& c, std::int32_t v) { return c.cp < v; });
  return it != end && it->cp == cp ? it->rank : 0;
}

void decompose(std::int32_t cp, std::vector<std::int32_t>& out) {
  if (cp < 0xC0) {  // nothing below U+00C0 decomposes
    out.push_back(cp);
    return;
  }
  if (const std::int32_t s = cp - kSBase; s >= 0 && s < kSCount) {
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto* end = std::end(kDecompositions);
  const auto* it =
      std::lower_bound(std::begin(kDecompositions), end, cp,
                       [](const Decomposition& d, std::int32_t v) { return d.cp < v; });
  if (it == end || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  for (int k = 0; k < kMaxDecomposition && it->d[k] != 0; ++k)
    out.push_back(it->d[k]);
}

// The primary composite of (first, second), or -1.
std::int32_t compose(std::int32_t first, std::int32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase && second < kVBase + kVCount)
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  if (const std::int32_t s = first - kSBase;
      s >= 0 && s < kSCount && s % kTCount == 0 && second > kTBase && second < kTBase + kTCount)
    return first + (second - kTBase);
  const auto* end = std::end(kCompositions);
  const auto* it =
      std::lower_bound(std::begin(kCompositions), end, std::pair{first, second},
                       [](const Composition& c, const std::pair<std::int32_t, std::int32_t>& v) {
                         return c.first != v.first ? c.first < v.first : c.second < v.second;
                       });
  return it != end && it->first == first && it->second == second ? it->composite : -1;
}

void append_utf8(std::int32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// NFC of the code points in `buf` (decomposed in place of the originals), appended to `out`.
void normalize_run(std::vector<std::int32_t>& buf, std::vector<int>& rank, std::string& out) {
  const std::size_t n = buf.size();
  rank.resize(n);
  for (std::size_t i = 0; i < n; ++i)
    rank[i] = combining_rank(buf[i]);
  // Canonical ordering: a stable sort of each run of marks by class (insertion sort: runs are
  // short).
  for (std::size_t i = 1; i < n; ++i)
    for (std::size_t j = i; j > 0 && rank[j] != 0 && rank[j - 1] > rank[j]; --j) {
      std::swap(buf[j], buf[j - 1]);
      std::swap(rank[j], rank[j - 1]);
    }
  // Composition: `last` is the class of the last character kept after the starter, -1 when none
  // was (the next character is then adjacent to the starter). A character between them blocks
  // when its class is 0 or not below the candidate's.
  std::size_t w = 0;
  std::ptrdiff_t starter = -1;
  int last = -1;
  for (std::size_t i = 0; i < n; ++i) {
    const std::int32_t c = buf[i];
    const int r = rank[i];
    if (starter >= 0 && (last == -1 || (last != 0 && last < r))) {
      if (const std::int32_t composite = compose(buf[static_cast<std::size_t>(starter)], c);
          composite >= 0) {
        buf[static_cast<std::size_t>(starter)] = composite;
        continue;
      }
    }
    if (r == 0) {
      starter = static_cast<std::ptrdiff_t>(w);
      last = -1;
    } else {
      last = r;
    }
    buf[w++] = c;
  }
  for (std::size_t i = 0; i < w; ++i)
    append_utf8(buf[i], out);
}

}  // namespace

bool nfc_quick_check(std::string_view text) noexcept {
  for (const char ch : text)
    if (static_cast<unsigned char>(ch) >= 0xCC) return false;
  return true;
}

void nfc(std::string_view text, std::string& out) {
  std::vector<std::int32_t> buf;
  std::vector<int> rank;
  out.reserve(out.size() + text.size());
  for (std::size_t i = 0; i < text.size();) {
    const CodePoint c = decode_utf8(text, i);
    if (c.cp < 0) {  // an invalid byte: as it is, after what came before it
      normalize_run(buf, rank, out);
      buf.clear();
      out += text[i];
      ++i;
      continue;
    }
    decompose(c.cp, buf);
    i += static_cast<std::size_t>(c.length);
  }
  normalize_run(buf, rank, out);
}

}  // namespace kiln::impl
