// The byte-level alphabet, the merge loop and the piece cache shared by the BPE tokenizers.
#include "runtime/tokenizer/byte_level.hpp"

#include <queue>

#include "runtime/tokenizer/unicode.hpp"

namespace kiln::impl {
namespace {

// byte -> code point of its printable character, and the inverse (-1 where none).
struct Alphabet {
  std::array<std::int32_t, 256> to_cp{};
  std::array<std::int16_t, 512> to_byte{};
  Alphabet() {
    to_byte.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const int cp = printable ? b : 256 + next++;
      to_cp[static_cast<std::size_t>(b)] = cp;
      to_byte[static_cast<std::size_t>(cp)] = static_cast<std::int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

bool unicode_to_bytes(std::string_view s, std::string& out) {
  const auto& inv = alphabet().to_byte;
  out.clear();
  for (std::size_t i = 0; i < s.size();) {
    const CodePoint c = decode_utf8(s, i);
    if (c.cp < 0 || c.cp >= static_cast<std::int32_t>(inv.size()) || inv[c.cp] < 0) return false;
    out += static_cast<char>(inv[c.cp]);
    i += static_cast<std::size_t>(c.length);
  }
  return true;
}

std::string bytes_to_unicode(std::string_view bytes) {
  std::string s;
  for (const char ch : bytes) {
    const std::int32_t cp = alphabet().to_cp[static_cast<unsigned char>(ch)];
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {  // all below U+0800: two bytes
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return s;
}

void BpeMerges::bpe(std::string_view piece, std::vector<std::int32_t>& out) const {
  // O(n log n): symbols form a linked list, candidate pairs a heap ordered by (rank, position). A
  // merge never recreates its own pair, so popping equal ranks in position order is the
  // reference's left-to-right pass; entries made stale by an earlier merge are recognised by their
  // ids and skipped.
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

bool PieceCache::find(std::string_view piece, std::vector<std::int32_t>& out) const {
  Shard& shard = shards_[PieceHash{}(piece) % kShards];
  std::lock_guard<std::mutex> lock(shard.mutex);
  const auto it = shard.map.find(piece);
  if (it == shard.map.end()) return false;
  out.insert(out.end(), it->second.begin(), it->second.end());
  return true;
}

void PieceCache::insert(std::string_view piece, const std::vector<std::int32_t>& ids) const {
  Shard& shard = shards_[PieceHash{}(piece) % kShards];
  std::lock_guard<std::mutex> lock(shard.mutex);
  if (shard.map.size() >= kLimit / kShards) shard.map.clear();
  shard.map.emplace(std::string(piece), ids);
}

}  // namespace kiln::impl
