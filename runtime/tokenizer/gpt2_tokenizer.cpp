// GPT-2's byte-level BPE: vocabulary loading, the pre-tokenizer, and rank-ordered merges.
#include <algorithm>
#include <array>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/common/check.hpp"
#include "kiln/io.hpp"
#include "kiln/tokenizer.hpp"
#include "runtime/tokenizer/unicode.hpp"

namespace kiln {
namespace {

using impl::CharClass;

#define KILN_DATA_CHECK(cond, ...) KILN_CHECK(cond, ::kiln::Status::data_error, __VA_ARGS__)

// GPT-2's files spell every byte as a printable character so that the vocabulary is valid text:
// the 188 printable Latin-1 bytes stand for themselves, the other 68 bytes (controls, space, ...)
// for U+0100 + k in byte order. Returns the inverse: code point -> byte, -1 where none.
std::array<std::int16_t, 512> make_unicode_to_byte() {
  std::array<std::int16_t, 512> inv{};
  inv.fill(-1);
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    inv[static_cast<std::size_t>(printable ? b : 256 + next++)] = static_cast<std::int16_t>(b);
  }
  return inv;
}

// Maps one token string of GPT-2's files to the bytes it stands for; false if some character
// stands for no byte (then the string names a special token, as it is).
bool unicode_to_bytes(std::string_view s, std::string& out) {
  static const auto inv = make_unicode_to_byte();
  out.clear();
  for (std::size_t i = 0; i < s.size();) {
    const impl::CodePoint c = impl::decode_utf8(s, i);
    if (c.cp < 0 || c.cp >= static_cast<std::int32_t>(inv.size()) || inv[c.cp] < 0) return false;
    out += static_cast<char>(inv[c.cp]);
    i += static_cast<std::size_t>(c.length);
  }
  return true;
}

std::uint64_t pair_key(std::int32_t left, std::int32_t right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
         static_cast<std::uint32_t>(right);
}

// A piece is cached until the cache holds this many; then it starts over (bounded memory on
// corpora whose pieces never repeat, e.g. hex dumps).
constexpr std::size_t kCacheLimit = std::size_t{1} << 18;

// Lets the cache be searched with a string_view, without building a std::string per piece.
struct PieceHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

}  // namespace

struct Gpt2Tokenizer::Impl {
  struct Merge {
    std::int32_t rank, merged;
  };
  std::vector<std::string> tokens;                  // id -> bytes (specials: their name)
  std::vector<bool> special;                        // id -> is a special token
  std::array<std::int32_t, 256> byte_id{};          // byte -> id of its single-byte token
  std::unordered_map<std::uint64_t, Merge> merges;  // (left id, right id) -> rank, merged id
  std::int32_t eot = -1;

  // The cache is split into shards, each with its own lock, so threads encoding at once rarely
  // wait for each other.
  struct CacheShard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::int32_t>, PieceHash, std::equal_to<>> map;
  };
  static constexpr std::size_t kCacheShards = 16;
  mutable std::array<CacheShard, kCacheShards> cache;

  void bpe(std::string_view piece, std::vector<std::int32_t>& out) const;
};

Gpt2Tokenizer::Gpt2Tokenizer(const std::filesystem::path& vocab_dir)
    : Gpt2Tokenizer(vocab_dir / "encoder.json", vocab_dir / "vocab.bpe") {}

Gpt2Tokenizer::Gpt2Tokenizer(const std::filesystem::path& encoder_json,
                             const std::filesystem::path& vocab_bpe)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const std::string enc_name = encoder_json.string(), bpe_name = vocab_bpe.string();

  // ---- encoder.json: {"token": id, ...}, ids dense from 0 ----
  nlohmann::json j;
  {
    const std::string text = read_file(encoder_json);
    j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  }
  KILN_DATA_CHECK(!j.is_discarded(), "'", enc_name, "' is not valid JSON");
  KILN_DATA_CHECK(j.is_object() && !j.empty(), "'", enc_name,
                  "' is not a GPT-2 encoder.json: expected a non-empty object of token -> id");
  const std::size_t n = j.size();
  KILN_DATA_CHECK(n <= (std::size_t{1} << 30), "'", enc_name, "' has too many tokens (", n, ")");
  m.tokens.assign(n, {});
  m.special.assign(n, false);
  std::vector<bool> seen(n, false);
  std::unordered_map<std::string, std::int32_t> id_of;  // bytes -> id (ordinary tokens only)
  id_of.reserve(n);
  m.byte_id.fill(-1);
  std::string bytes;
  for (const auto& [key, value] : j.items()) {
    KILN_DATA_CHECK(value.is_number_integer(), "'", enc_name, "': the id of token '", key,
                    "' is not an integer");
    const auto id = value.get<std::int64_t>();
    KILN_DATA_CHECK(id >= 0 && static_cast<std::size_t>(id) < n, "'", enc_name, "': token '", key,
                    "' has id ", id, ", outside [0, ", n, "): ids must be dense from 0");
    KILN_DATA_CHECK(!seen[static_cast<std::size_t>(id)], "'", enc_name, "': id ", id,
                    " is given to two tokens");
    seen[static_cast<std::size_t>(id)] = true;
    const auto i = static_cast<std::int32_t>(id);
    if (key == "<|endoftext|>" || !unicode_to_bytes(key, bytes)) {
      m.tokens[static_cast<std::size_t>(i)] = key;
      m.special[static_cast<std::size_t>(i)] = true;
      if (key == "<|endoftext|>") m.eot = i;
      continue;
    }
    KILN_DATA_CHECK(!bytes.empty(), "'", enc_name, "': token id ", id, " is empty");
    KILN_DATA_CHECK(id_of.emplace(bytes, i).second, "'", enc_name, "': token '", key, "' (id ", id,
                    ") spells the same bytes as id ", id_of[bytes]);
    if (bytes.size() == 1) m.byte_id[static_cast<unsigned char>(bytes[0])] = i;
    m.tokens[static_cast<std::size_t>(i)] = bytes;
  }
  KILN_DATA_CHECK(m.eot >= 0, "'", enc_name, "' has no <|endoftext|> token");
  for (int b = 0; b < 256; ++b)
    KILN_DATA_CHECK(m.byte_id[static_cast<std::size_t>(b)] >= 0, "'", enc_name,
                    "' has no token for byte ", b, ": not a byte-level vocabulary");

  // ---- vocab.bpe: "#version" line, then one merge "left right" per line, by rank ----
  const std::string text = read_file(vocab_bpe);
  std::size_t pos = 0, line_no = 0;
  std::int32_t rank = 0;
  std::string left, right;
  m.merges.reserve(n);
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const std::size_t space = line.find(' ');
    KILN_DATA_CHECK(space != std::string_view::npos && space > 0 && space + 1 < line.size() &&
                        line.find(' ', space + 1) == std::string_view::npos,
                    "'", bpe_name, "' line ", line_no,
                    ": expected two tokens separated by one "
                    "space, got '",
                    line, "'");
    const bool ok = unicode_to_bytes(line.substr(0, space), left) &&
                    unicode_to_bytes(line.substr(space + 1), right);
    KILN_DATA_CHECK(ok, "'", bpe_name, "' line ", line_no, ": '", line,
                    "' has a character that stands for no byte");
    const auto l = id_of.find(left), r = id_of.find(right), merged = id_of.find(left + right);
    KILN_DATA_CHECK(l != id_of.end() && r != id_of.end() && merged != id_of.end(), "'", bpe_name,
                    "' line ", line_no, ": merge '", line, "' uses or makes a token that '",
                    enc_name, "' does not have");
    // A repeated merge keeps its first (best) rank, as a rank lookup table built in order would.
    m.merges.emplace(pair_key(l->second, r->second), Impl::Merge{rank++, merged->second});
  }
  KILN_DATA_CHECK(rank > 0, "'", bpe_name, "' holds no merges");
}

Gpt2Tokenizer::~Gpt2Tokenizer() = default;

std::int32_t Gpt2Tokenizer::vocab_size() const {
  return static_cast<std::int32_t>(impl_->tokens.size());
}

std::int32_t Gpt2Tokenizer::eot_token() const {
  return impl_->eot;
}

bool Gpt2Tokenizer::is_special(std::int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->special[static_cast<std::size_t>(id)];
}

std::string_view Gpt2Tokenizer::token_bytes(std::int32_t id) const {
  KILN_CHECK_ARG(id >= 0 && id < vocab_size(), "Gpt2Tokenizer: token id ", id,
                 " is outside the vocabulary [0, ", vocab_size(), ")");
  return impl_->tokens[static_cast<std::size_t>(id)];
}

// ---- pre-tokenizer ------------------------------------------------------------------------------

std::vector<std::string_view> Gpt2Tokenizer::split(std::string_view text) {
  // The pattern's alternatives are tried in order at each position and the first that matches
  // wins (a backtracking engine's leftmost-first rule); each branch below is one alternative.
  std::vector<std::string_view> pieces;
  const std::size_t n = text.size();
  std::size_t i = 0;
  auto class_at = [&](std::size_t k, int* len) {
    const impl::CodePoint c = impl::decode_utf8(text, k);
    *len = c.length;
    return impl::char_class(c.cp);
  };
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
        pieces.push_back(text.substr(start, len));
        i += len;
        continue;
      }
    }
    int len = 0;
    const CharClass first = class_at(i, &len);
    // ` ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
    CharClass run = first;
    std::size_t k = i;
    if (text[i] == ' ' && i + 1 < n) {
      int next_len = 0;
      const CharClass next = class_at(i + 1, &next_len);
      if (next != CharClass::space) {
        run = next;
        k = i + 1;
      }
    }
    if (run != CharClass::space) {
      while (k < n) {
        int l = 0;
        if (class_at(k, &l) != run) break;
        k += static_cast<std::size_t>(l);
      }
      pieces.push_back(text.substr(start, k - start));
      i = k;
      continue;
    }
    // `\s+(?!\S)|\s+`: a run of white space; if a non-space follows it, the run gives back its last
    // character (which then leads the next piece, e.g. " word"), unless that would leave it empty.
    std::size_t end = i, last = i;
    while (end < n) {
      int l = 0;
      if (class_at(end, &l) != CharClass::space) break;
      last = end;
      end += static_cast<std::size_t>(l);
    }
    if (end < n && last > start) end = last;
    pieces.push_back(text.substr(start, end - start));
    i = end;
  }
  return pieces;
}

// ---- BPE ----------------------------------------------------------------------------------------

void Gpt2Tokenizer::Impl::bpe(std::string_view piece, std::vector<std::int32_t>& out) const {
  // Equivalent to encoder.py's loop (merge every occurrence of the lowest-ranked adjacent pair,
  // left to right, until no pair has a rank) in O(n log n): symbols form a linked list, candidate
  // pairs a heap ordered by (rank, position). A merge never recreates its own pair, so popping
  // equal ranks in position order is the reference's left-to-right pass; entries made stale by an
  // earlier merge are recognised by their ids and skipped.
  struct Symbol {
    std::int32_t id, prev, next;
  };
  struct Candidate {
    std::int32_t rank, pos, left, right, merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const auto count = static_cast<std::int32_t>(piece.size());
  if (count == 0) return;
  std::vector<Symbol> sym(piece.size());
  for (std::int32_t i = 0; i < count; ++i)
    sym[static_cast<std::size_t>(i)] = {
        byte_id[static_cast<unsigned char>(piece[static_cast<std::size_t>(i)])], i - 1,
        i + 1 < count ? i + 1 : -1};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto consider = [&](std::int32_t pos) {
    const Symbol& s = sym[static_cast<std::size_t>(pos)];
    if (s.next < 0) return;
    const std::int32_t right = sym[static_cast<std::size_t>(s.next)].id;
    const auto it = merges.find(pair_key(s.id, right));
    if (it != merges.end()) heap.push({it->second.rank, pos, s.id, right, it->second.merged});
  };
  for (std::int32_t i = 0; i + 1 < count; ++i)
    consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& s = sym[static_cast<std::size_t>(c.pos)];
    if (s.id != c.left || s.next < 0 || sym[static_cast<std::size_t>(s.next)].id != c.right)
      continue;
    Symbol& r = sym[static_cast<std::size_t>(s.next)];
    s.id = c.merged;
    s.next = r.next;
    if (r.next >= 0) sym[static_cast<std::size_t>(r.next)].prev = c.pos;
    r.id = -1;  // dead: every candidate that names it fails the id check
    if (s.prev >= 0) consider(s.prev);
    consider(c.pos);
  }
  for (std::int32_t i = 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next)
    out.push_back(sym[static_cast<std::size_t>(i)].id);
}

void Gpt2Tokenizer::encode_into(std::string_view text, std::vector<std::int32_t>& out) const {
  const Impl& m = *impl_;
  std::vector<std::int32_t> ids;
  for (const std::string_view piece : split(text)) {
    if (piece.size() == 1) {  // no merge applies to one byte: skip the cache
      out.push_back(m.byte_id[static_cast<unsigned char>(piece[0])]);
      continue;
    }
    const std::size_t h = PieceHash{}(piece);
    Impl::CacheShard& shard = m.cache[h % Impl::kCacheShards];
    {
      std::lock_guard<std::mutex> lock(shard.mutex);
      const auto it = shard.map.find(piece);
      if (it != shard.map.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    ids.clear();
    m.bpe(piece, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (shard.map.size() >= kCacheLimit / Impl::kCacheShards) shard.map.clear();
    shard.map.emplace(std::string(piece), ids);
  }
}

}  // namespace kiln
