// Token shards (files of token ids) and the data loader that walks them in (B, T+1) windows.
//
// Shard file format, version 1 (all integers little-endian):
//   offset  size  field
//        0     8  magic "KILNTOKS"
//        8     4  version (1)
//       12     4  bytes per token: 2 (uint16) or 4 (uint32)
//       16     8  token count
//       24     4  vocab size: every token is < this
//       28     4  end-of-text token id, or 0xFFFFFFFF when none was declared
//       32     4  CRC-32C of the payload (kiln::crc32c)
//       36    24  reserved, zero
//       60     4  CRC-32C of bytes [0, 60)
//       64     -  payload: token count x bytes per token
// The file is exactly 64 + count x bytes-per-token long. Writers replace files atomically.
//
// Typical use (kiln_tokenize writes <dir>/train_000000.bin ..., <dir>/val_000000.bin ...):
//   kiln::DataLoaderConfig cfg;
//   cfg.shards = kiln::find_shards("data/tiny", "train");
//   cfg.B = 8; cfg.T = 1024; cfg.seed = 1337; cfg.rank = r; cfg.world_size = W;
//   kiln::DataLoader loader(cfg);
//   std::span<const int32_t> batch = loader.next();   // (B, T+1): inputs [0, T), targets [1, T+1)
//   kiln::DataLoaderState s = loader.state();        // into the checkpoint; later
//   loader.restore(s)
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kiln/error.hpp"
#include "kiln/export.h"
#include "kiln/io.hpp"

namespace kiln {

enum class TokenDtype : std::uint32_t { u16 = 2, u32 = 4 };  // value = bytes per token

// uint16 when every id of a `vocab_size` vocabulary fits in it (GPT-2's 50257 does), else uint32.
inline TokenDtype token_dtype_for(std::int64_t vocab_size) {
  return vocab_size <= 65536 ? TokenDtype::u16 : TokenDtype::u32;
}

// Writes one shard atomically (see AtomicFileWriter): tokens stream through write(), commit() fills
// in the header and moves the file into place; destroyed without commit(), nothing is left behind.
class KILN_API TokenShardWriter {
 public:
  // vocab_size >= 1 and must fit `dtype`; eot_token is -1 (none) or in [0, vocab_size).
  TokenShardWriter(const std::filesystem::path& path, std::int32_t vocab_size,
                   std::int32_t eot_token = -1);
  TokenShardWriter(const std::filesystem::path& path, std::int32_t vocab_size,
                   std::int32_t eot_token, TokenDtype dtype);
  // Appends tokens; throws invalid_argument (writing nothing of `tokens`) if one is outside
  // [0, vocab_size).
  void write(std::span<const std::int32_t> tokens);
  std::int64_t size() const noexcept { return count_; }  // tokens written so far
  void commit();
  const std::filesystem::path& path() const noexcept { return file_.path(); }

 private:
  AtomicFileWriter file_;
  std::int32_t vocab_size_, eot_token_;
  TokenDtype dtype_;
  std::int64_t count_ = 0;
  std::uint32_t crc_ = 0;
  std::vector<unsigned char> staging_;
};

// One call: writes `tokens` to `path` as a shard.
KILN_API void write_token_shard(const std::filesystem::path& path,
                                std::span<const std::int32_t> tokens, std::int32_t vocab_size,
                                std::int32_t eot_token = -1);

// Writes a stream of tokens as numbered shards of at most `shard_tokens` tokens each:
// `dir`/<split>_000000.bin, <split>_000001.bin, ... (the names find_shards() lists). Each shard is
// written atomically when full; commit() writes the last, partial one. Without commit() the
// partial shard is dropped (the full ones stay).
class KILN_API ShardSetWriter {
 public:
  ShardSetWriter(std::filesystem::path dir, std::string split, std::int64_t shard_tokens,
                 std::int32_t vocab_size, std::int32_t eot_token = -1);
  ShardSetWriter(std::filesystem::path dir, std::string split, std::int64_t shard_tokens,
                 std::int32_t vocab_size, std::int32_t eot_token, TokenDtype dtype);
  ~ShardSetWriter();
  void write(std::span<const std::int32_t> tokens);
  void commit();
  std::int64_t tokens() const noexcept { return total_; }  // written so far, all shards
  // The shards completed so far (all of them after commit()).
  const std::vector<std::filesystem::path>& paths() const noexcept { return paths_; }

 private:
  std::filesystem::path dir_;
  std::string split_;
  std::int64_t shard_tokens_;
  std::int32_t vocab_size_, eot_token_;
  TokenDtype dtype_;
  std::unique_ptr<TokenShardWriter> current_;
  std::int64_t total_ = 0;
  std::vector<std::filesystem::path> paths_;
};

// A shard opened for reading (memory-mapped). Opening checks the header (magic, version, header
// checksum, dtype, vocab size) and that the file length matches the count; with `verify` it also
// checks the payload's checksum. Every failure is a kiln::Error naming the file:
// io_error when it cannot be read, data_error when it is truncated, corrupt or not a shard.
class KILN_API TokenShard {
 public:
  static constexpr std::size_t kHeaderBytes = 64;
  static constexpr std::uint32_t kVersion = 1;

  explicit TokenShard(const std::filesystem::path& path, bool verify = true);

  std::int64_t size() const noexcept { return count_; }  // tokens
  TokenDtype dtype() const noexcept { return dtype_; }
  std::int32_t vocab_size() const noexcept { return vocab_size_; }
  std::int32_t eot_token() const noexcept { return eot_token_; }  // -1 when none
  std::uint32_t payload_crc() const noexcept { return payload_crc_; }
  const std::filesystem::path& path() const noexcept { return file_.path(); }

  // Copies tokens [start, start + out.size()) into `out`, widened to int32. invalid_argument when
  // the range is outside the shard; data_error (naming file and position) when a token is not below
  // vocab_size(), which only a corrupt file whose checksum was not verified can hold.
  void read(std::int64_t start, std::span<std::int32_t> out) const;
  std::vector<std::int32_t> read_all() const;
  // Recomputes the payload checksum; data_error when it differs from the header's.
  void verify() const;

 private:
  MappedFile file_;
  std::int64_t count_ = 0;
  TokenDtype dtype_ = TokenDtype::u16;
  std::int32_t vocab_size_ = 0, eot_token_ = -1;
  std::uint32_t payload_crc_ = 0;
};

// The files `dir`/<split>_*.bin, sorted by name. Throws io_error when `dir` cannot be listed or
// holds no such file.
KILN_API std::vector<std::filesystem::path> find_shards(const std::filesystem::path& dir,
                                                        const std::string& split);

// Which windows of the shards a loader walks. `all`: every window. With val_fraction = f in (0, 1),
// the last round(f x windows) windows (at least one) form `val` and the windows before them, less
// the one window that would share a token with the first val window, form `train`.
enum class DataSplit { all, train, val };

struct DataLoaderConfig {
  std::vector<std::filesystem::path> shards;  // read in this order (window ids follow it)
  std::int64_t B = 0;                         // rows per batch on this rank
  std::int64_t T = 0;                         // sequence length; each row holds T + 1 tokens
  std::uint64_t seed = 0;                     // the shuffle of every epoch derives from it
  bool shuffle = true;                        // false: windows in file order (e.g. evaluation)
  int rank = 0, world_size = 1;               // data parallelism: rank r of W
  DataSplit split = DataSplit::all;
  double val_fraction = 0.0;  // used when split != all
  // Check each shard's payload checksum at open: every rank then reads all its shards once (at
  // about memory speed with SSE4.2). For very large data sets, verify once offline and turn this
  // off.
  bool verify_checksums = true;
};

// Where a loader is: the next batch is step `step` of epoch `epoch`. The other fields identify the
// data and settings, so restore() refuses a state from a different setup. Plain integers: store
// them as they are. Every rank is at the same position, so one state serves all ranks.
struct DataLoaderState {
  std::uint64_t epoch = 0;
  std::uint64_t step = 0;
  std::uint64_t fingerprint = 0;  // hash of shard sizes and checksums, split, T, seed, shuffle
  std::uint64_t B = 0, T = 0, world_size = 0;
};

// Walks (B, T+1) windows of the shards. A window is T + 1 consecutive tokens of one shard starting
// at a multiple of T (so each token is a target exactly once); windows never cross shards. Each
// epoch visits the windows in an order that is a pseudo-random permutation keyed by (seed, epoch)
// (identity when !shuffle), identical on every rank and every run. Step s of an epoch takes
// permuted positions [s x B x W, (s + 1) x B x W); rank r reads rows [r x B, (r + 1) x B) of that,
// so ranks read disjoint windows and together cover the global batch. An epoch has
// floor(windows / (B x W)) steps; the few windows left over are skipped that epoch (a different
// few each epoch when shuffling). After the last step of an epoch the next epoch begins.
class KILN_API DataLoader {
 public:
  // Opens and checks every shard. invalid_argument for bad settings, or when the shards hold fewer
  // windows than one global batch; io_error / data_error for unreadable or corrupt shards.
  explicit DataLoader(DataLoaderConfig config);
  ~DataLoader();
  DataLoader(DataLoader&&) noexcept;
  DataLoader& operator=(DataLoader&&) noexcept;

  // Fills `out` (B, T+1) row-major with the next batch of this rank and advances.
  void next(std::span<std::int32_t> out);
  // The same into the loader's own buffer, valid until the next call.
  std::span<const std::int32_t> next();

  std::int64_t windows() const noexcept;          // windows in this loader's split
  std::int64_t steps_per_epoch() const noexcept;  // batches per epoch (per rank: the same)
  std::uint64_t epoch() const noexcept;
  std::uint64_t step() const noexcept;       // of the batch next() returns next
  std::int32_t vocab_size() const noexcept;  // the largest vocab size of the shards
  const DataLoaderConfig& config() const noexcept;

  DataLoaderState state() const;
  // Continues exactly where `state` was taken. data_error when the state belongs to other shards or
  // settings (the message names the field that differs).
  void restore(const DataLoaderState& state);
  // Back to epoch 0, step 0.
  void reset() noexcept;

  // The window id (0-based, in shard order within the split) at position `p` of epoch `epoch`'s
  // order; the rows of step s on rank r are positions s x B x W + r x B + [0, B).
  std::int64_t window_at(std::uint64_t epoch, std::int64_t p) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- a training program's use of the loader ---------------------------------------------------

// The state as a JSON object of its six integers (what train_gpt stores as a checkpoint's
// data_state), and back. from_json throws kiln::Error(data_error) naming `source` (the
// checkpoint) when the text is not such an object or a field is not an integer >= 0.
KILN_API std::string loader_state_to_json(const DataLoaderState& state);
KILN_API DataLoaderState loader_state_from_json(const std::string& text, const std::string& source);

// A state saved with another batch or world size, moved to the same position in the epoch's
// window order: the windows consumed (step x B x world size) rounded up to a whole step of the
// new shape (B, world), the next epoch's start when that is past `steps_per_epoch`. The same
// state when B and the world size already match. Only B, world_size, step and epoch change, so
// restore() still checks the data, T and seed.
KILN_API DataLoaderState rebase_loader_state(DataLoaderState state, std::int64_t steps_per_epoch,
                                             std::int64_t B, int world_size);

// Fills `inputs` and `targets` with `micro_steps` batches of the loader, one after the other
// ((micro_steps, B, T) each, the shape kiln::Trainer::step takes): the inputs are tokens [0, T)
// of each window, the targets tokens [1, T + 1).
KILN_API void next_batches(DataLoader& loader, std::int64_t micro_steps,
                           std::vector<std::int32_t>& inputs, std::vector<std::int32_t>& targets);

}  // namespace kiln
