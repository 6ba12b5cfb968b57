// The split patterns, each alternative a branch. A backtracking engine tries the alternatives in
// order at each position and the first that matches wins (leftmost-first); the branches below keep
// that order, and where a greedy quantifier would give characters back, say what it ends with.
#include "runtime/tokenizer/pretokenize.hpp"

#include <cstddef>

#include "runtime/tokenizer/unicode.hpp"

namespace kiln::impl {
namespace {

struct Char {
  CharClass cls;
  int len;
  std::int32_t cp;
};

inline Char char_at(std::string_view text, std::size_t i) {
  const CodePoint c = decode_utf8(text, i);
  return {char_class(c.cp), c.length, c.cp};
}

// The end of the run of characters of class `cls` starting at `i`.
inline std::size_t run_end(std::string_view text, std::size_t i, CharClass cls) {
  while (i < text.size()) {
    const Char c = char_at(text, i);
    if (c.cls != cls) break;
    i += static_cast<std::size_t>(c.len);
  }
  return i;
}

inline bool is_crlf(std::int32_t cp) {
  return cp == '\r' || cp == '\n';
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d) at text[i] == '\'': the match length, or 0. Case-insensitive as
// Unicode simple case folding makes it, which adds only U+017F (long s, folds to 's').
std::size_t contraction_ci(std::string_view text, std::size_t i) {
  auto lower = [&](std::size_t k) -> int {
    if (k >= text.size()) return 0;
    const auto b = static_cast<unsigned char>(text[k]);
    if (b >= 'A' && b <= 'Z') return b + ('a' - 'A');
    return b;
  };
  const int a = lower(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (a == 0xC5 && lower(i + 2) == 0xBF) return 3;  // U+017F in UTF-8
  const int b = lower(i + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

}  // namespace

void split_gpt2(std::string_view text, std::vector<std::string_view>& out) {
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const std::size_t start = i;
    // 's|'t|'re|'ve|'m|'ll|'d  (ASCII apostrophe, lower case, no word boundary)
    if (text[i] == '\'') {
      std::size_t len = 0;
      for (const std::string_view suffix : {"s", "t", "re", "ve", "m", "ll", "d"}) {
        if (text.substr(i + 1).starts_with(suffix)) {
          len = 1 + suffix.size();
          break;
        }
      }
      if (len > 0) {
        out.push_back(text.substr(start, len));
        i += len;
        continue;
      }
    }
    const Char first = char_at(text, i);
    // ` ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
    CharClass run = first.cls;
    std::size_t k = i;
    if (text[i] == ' ' && i + 1 < n) {
      const Char next = char_at(text, i + 1);
      if (next.cls != CharClass::space) {
        run = next.cls;
        k = i + 1;
      }
    }
    if (run != CharClass::space) {
      k = run_end(text, k, run);
      out.push_back(text.substr(start, k - start));
      i = k;
      continue;
    }
    // `\s+(?!\S)|\s+`: a run of white space; if a non-space follows it, the run gives back its last
    // character (which then leads the next piece, e.g. " word"), unless that would leave it empty.
    std::size_t end = i, last = i;
    while (end < n) {
      const Char c = char_at(text, end);
      if (c.cls != CharClass::space) break;
      last = end;
      end += static_cast<std::size_t>(c.len);
    }
    if (end < n && last > start) end = last;
    out.push_back(text.substr(start, end - start));
    i = end;
  }
}

void split_llama3(std::string_view text, int max_digits, std::vector<std::string_view>& out) {
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const std::size_t start = i;
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (text[i] == '\'') {
      if (const std::size_t len = contraction_ci(text, i); len > 0) {
        out.push_back(text.substr(start, len));
        i += len;
        continue;
      }
    }
    const Char c0 = char_at(text, i);
    const std::size_t after0 = i + static_cast<std::size_t>(c0.len);
    // [^\r\n\p{L}\p{N}]?\p{L}+ : letters, led by at most one character that is neither a line
    // break, a letter nor a number (a space, punctuation, an invalid byte).
    if (c0.cls == CharClass::letter) {
      i = run_end(text, after0, CharClass::letter);
      out.push_back(text.substr(start, i - start));
      continue;
    }
    if (c0.cls != CharClass::number && !is_crlf(c0.cp) && after0 < n &&
        char_at(text, after0).cls == CharClass::letter) {
      i = run_end(text, after0, CharClass::letter);
      out.push_back(text.substr(start, i - start));
      continue;
    }
    // \p{N}{1,3} (Qwen2: \p{N})
    if (c0.cls == CharClass::number) {
      i = after0;
      for (int d = 1; d < max_digits && i < n; ++d) {
        const Char c = char_at(text, i);
        if (c.cls != CharClass::number) break;
        i += static_cast<std::size_t>(c.len);
      }
      out.push_back(text.substr(start, i - start));
      continue;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]* : punctuation and the like, after at most one space, taking the
    // line breaks that follow.
    std::size_t k = i;
    if (text[i] == ' ' && after0 < n && char_at(text, after0).cls == CharClass::other) k = after0;
    if (char_at(text, k).cls == CharClass::other) {
      k = run_end(text, k, CharClass::other);
      while (k < n && (text[k] == '\r' || text[k] == '\n'))
        ++k;
      out.push_back(text.substr(start, k - start));
      i = k;
      continue;
    }
    // What is left starts with white space: W, the run of it from here (line breaks included).
    std::size_t end = i, last = i, after_break = 0;
    while (end < n) {
      const Char c = char_at(text, end);
      if (c.cls != CharClass::space) break;
      last = end;
      end += static_cast<std::size_t>(c.len);
      if (is_crlf(c.cp)) after_break = end;
    }
    // \s*[\r\n]+ : \s* gives characters back until a line break ends the match, i.e. W up to and
    // including its last line break.
    if (after_break > 0) {
      end = after_break;
    } else if (end < n && last > start) {
      // \s+(?!\S) : before a non-space, W gives back its last character (which may then lead the
      // next piece, e.g. " word"); at the end of the text W is taken whole, as by \s+ when W is one
      // character.
      end = last;
    }
    out.push_back(text.substr(start, end - start));
    i = end;
  }
}

void split_digits(std::string_view text, bool individual, std::vector<std::string_view>& out) {
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const std::size_t start = i;
    const Char c0 = char_at(text, i);
    i += static_cast<std::size_t>(c0.len);
    if (c0.cls == CharClass::number) {
      if (!individual) i = run_end(text, i, CharClass::number);
    } else {
      while (i < n) {
        const Char c = char_at(text, i);
        if (c.cls == CharClass::number) break;
        i += static_cast<std::size_t>(c.len);
      }
    }
    out.push_back(text.substr(start, i - start));
  }
}

}  // namespace kiln::impl
