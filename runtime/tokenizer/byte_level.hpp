// What GPT-2's and Hugging Face's byte-level BPE share (internal): the byte <-> printable
// character alphabet of their vocabulary files, the rank-ordered merge loop, and the per-piece
// cache. Both tokenizers feed bytes in and get ids out; only their files and pre-tokenizers differ.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kiln::impl {

// The vocabulary files spell every byte as a printable character so that tokens are valid text:
// the 188 printable Latin-1 bytes stand for themselves, the other 68 bytes (controls, space, ...)
// for U+0100 + k in byte order. Maps one token string to the bytes it stands for; false if some
// character stands for no byte (such a string names a special token, as it is).
bool unicode_to_bytes(std::string_view s, std::string& out);

// The inverse: the UTF-8 spelling of `bytes` in that alphabet (for tests and error messages).
std::string bytes_to_unicode(std::string_view bytes);

inline std::uint64_t pair_key(std::int32_t left, std::int32_t right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
         static_cast<std::uint32_t>(right);
}

// Lets maps keyed by std::string be searched with a string_view, without a copy per piece.
struct PieceHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

// The merge table and the merge loop: byte ids, then (left, right) -> (rank, merged id).
struct BpeMerges {
  struct Merge {
    std::int32_t rank, merged;
  };
  std::array<std::int32_t, 256> byte_id{};          // byte -> id of its single-byte token
  std::unordered_map<std::uint64_t, Merge> merges;  // (left id, right id) -> rank, merged id

  // Appends the ids of `piece` (non-empty) merged by rank, exactly as the reference loop (merge
  // every occurrence of the lowest-ranked adjacent pair, left to right, until none has a rank).
  void bpe(std::string_view piece, std::vector<std::int32_t>& out) const;
};

// Pieces already merged, shared by the threads encoding at once: split into shards, each with its
// own lock, so they rarely wait for each other. Starts over when full (bounded memory on corpora
// whose pieces never repeat, e.g. hex dumps).
class PieceCache {
 public:
  // Appends the cached ids of `piece` to `out` and returns true, or returns false.
  bool find(std::string_view piece, std::vector<std::int32_t>& out) const;
  void insert(std::string_view piece, const std::vector<std::int32_t>& ids) const;

 private:
  static constexpr std::size_t kShards = 16;
  static constexpr std::size_t kLimit = std::size_t{1} << 18;  // pieces in all shards
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::int32_t>, PieceHash, std::equal_to<>> map;
  };
  mutable std::array<Shard, kShards> shards_;
};

}  // namespace kiln::impl
