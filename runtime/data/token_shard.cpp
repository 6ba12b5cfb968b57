// Token shard files: writer, reader, and the shard finder.
#include <algorithm>
#include <array>
#include <bit>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <utility>

#include "errors/check.hpp"
#include "kiln/data.hpp"
#include "runtime/data/le.hpp"

namespace kiln {
namespace {

#define KILN_DATA_CHECK(cond, ...) KILN_CHECK(cond, ::kiln::Status::data_error, __VA_ARGS__)

constexpr std::array<char, 8> kMagic = {'K', 'I', 'L', 'N', 'T', 'O', 'K', 'S'};
constexpr std::size_t kHeaderCrcOffset = 60;
constexpr std::uint32_t kNoEot = 0xFFFFFFFFu;

std::array<unsigned char, TokenShard::kHeaderBytes> make_header(TokenDtype dtype,
                                                                std::int64_t count,
                                                                std::int32_t vocab,
                                                                std::int32_t eot,
                                                                std::uint32_t payload_crc) {
  std::array<unsigned char, TokenShard::kHeaderBytes> h{};
  std::memcpy(h.data(), kMagic.data(), kMagic.size());
  impl::store_le32(h.data() + 8, TokenShard::kVersion);
  impl::store_le32(h.data() + 12, static_cast<std::uint32_t>(dtype));
  impl::store_le64(h.data() + 16, static_cast<std::uint64_t>(count));
  impl::store_le32(h.data() + 24, static_cast<std::uint32_t>(vocab));
  impl::store_le32(h.data() + 28, eot < 0 ? kNoEot : static_cast<std::uint32_t>(eot));
  impl::store_le32(h.data() + 32, payload_crc);
  impl::store_le32(h.data() + kHeaderCrcOffset, crc32c(h.data(), kHeaderCrcOffset));
  return h;
}

}  // namespace

// ---- writer -------------------------------------------------------------------------------------

TokenShardWriter::TokenShardWriter(const std::filesystem::path& path, std::int32_t vocab_size,
                                   std::int32_t eot_token)
    : TokenShardWriter(path, vocab_size, eot_token, token_dtype_for(vocab_size)) {}

TokenShardWriter::TokenShardWriter(const std::filesystem::path& path, std::int32_t vocab_size,
                                   std::int32_t eot_token, TokenDtype dtype)
    : file_(path), vocab_size_(vocab_size), eot_token_(eot_token), dtype_(dtype) {
  KILN_CHECK_ARG(dtype == TokenDtype::u16 || dtype == TokenDtype::u32, "TokenShardWriter '",
                 path.string(), "': dtype must be u16 or u32");
  KILN_CHECK_ARG(vocab_size >= 1, "TokenShardWriter '", path.string(),
                 "': vocab_size must be >= 1 (got ", vocab_size, ")");
  KILN_CHECK_ARG(dtype == TokenDtype::u32 || vocab_size <= 65536, "TokenShardWriter '",
                 path.string(), "': a vocabulary of ", vocab_size, " tokens does not fit uint16");
  KILN_CHECK_ARG(eot_token >= -1 && eot_token < vocab_size, "TokenShardWriter '", path.string(),
                 "': eot_token ", eot_token, " is outside [0, ", vocab_size, ") (or -1 for none)");
  const std::array<unsigned char, TokenShard::kHeaderBytes> placeholder{};
  file_.write(placeholder.data(), placeholder.size());
}

void TokenShardWriter::write(std::span<const std::int32_t> tokens) {
  for (std::size_t i = 0; i < tokens.size(); ++i)
    KILN_CHECK_ARG(tokens[i] >= 0 && tokens[i] < vocab_size_, "TokenShardWriter '", path().string(),
                   "': token ", tokens[i], " (at ", count_ + static_cast<std::int64_t>(i),
                   ") is outside the vocabulary [0, ", vocab_size_, ")");
  const std::size_t width = static_cast<std::size_t>(dtype_);
  constexpr std::size_t kChunk = 1 << 16;
  for (std::size_t off = 0; off < tokens.size(); off += kChunk) {
    const std::size_t n = std::min(kChunk, tokens.size() - off);
    staging_.resize(n * width);
    unsigned char* p = staging_.data();
    if (dtype_ == TokenDtype::u16) {
      for (std::size_t i = 0; i < n; ++i)
        impl::store_le16(p + 2 * i, static_cast<std::uint16_t>(tokens[off + i]));
    } else {
      for (std::size_t i = 0; i < n; ++i)
        impl::store_le32(p + 4 * i, static_cast<std::uint32_t>(tokens[off + i]));
    }
    crc_ = crc32c(p, n * width, crc_);
    file_.write(p, n * width);
  }
  count_ += static_cast<std::int64_t>(tokens.size());
}

void TokenShardWriter::commit() {
  const auto header = make_header(dtype_, count_, vocab_size_, eot_token_, crc_);
  file_.patch(0, header.data(), header.size());
  file_.commit();
}

void write_token_shard(const std::filesystem::path& path, std::span<const std::int32_t> tokens,
                       std::int32_t vocab_size, std::int32_t eot_token) {
  TokenShardWriter w(path, vocab_size, eot_token);
  w.write(tokens);
  w.commit();
}

// ---- a numbered set of shards ----

ShardSetWriter::ShardSetWriter(std::filesystem::path dir, std::string split,
                               std::int64_t shard_tokens, std::int32_t vocab_size,
                               std::int32_t eot_token)
    : ShardSetWriter(std::move(dir), std::move(split), shard_tokens, vocab_size, eot_token,
                     token_dtype_for(vocab_size)) {}

ShardSetWriter::ShardSetWriter(std::filesystem::path dir, std::string split,
                               std::int64_t shard_tokens, std::int32_t vocab_size,
                               std::int32_t eot_token, TokenDtype dtype)
    : dir_(std::move(dir)),
      split_(std::move(split)),
      shard_tokens_(shard_tokens),
      vocab_size_(vocab_size),
      eot_token_(eot_token),
      dtype_(dtype) {
  KILN_CHECK_ARG(shard_tokens >= 1, "ShardSetWriter: shard_tokens must be >= 1 (got ", shard_tokens,
                 ")");
  KILN_CHECK_ARG(!split_.empty() && split_.find('/') == std::string::npos,
                 "ShardSetWriter: the split name '", split_,
                 "' must be a non-empty file name part");
}

ShardSetWriter::~ShardSetWriter() = default;

void ShardSetWriter::write(std::span<const std::int32_t> tokens) {
  while (!tokens.empty()) {
    if (!current_) {
      char name[32];
      std::snprintf(name, sizeof name, "_%06zu.bin", paths_.size());
      current_ = std::make_unique<TokenShardWriter>(dir_ / (split_ + name), vocab_size_, eot_token_,
                                                    dtype_);
    }
    const auto room = static_cast<std::size_t>(shard_tokens_ - current_->size());
    const std::size_t n = std::min(room, tokens.size());
    current_->write(tokens.first(n));
    total_ += static_cast<std::int64_t>(n);
    tokens = tokens.subspan(n);
    if (current_->size() == shard_tokens_) {
      current_->commit();
      paths_.push_back(current_->path());
      current_.reset();
    }
  }
}

void ShardSetWriter::commit() {
  if (current_ && current_->size() > 0) {
    current_->commit();
    paths_.push_back(current_->path());
  }
  current_.reset();
}

// ---- reader -------------------------------------------------------------------------------------

TokenShard::TokenShard(const std::filesystem::path& path, bool verify_payload) : file_(path) {
  const std::string name = path.string();
  const std::size_t size = file_.size();
  const auto* h = reinterpret_cast<const unsigned char*>(file_.data());
  KILN_DATA_CHECK(size >= kHeaderBytes, "token shard '", name, "' is truncated: ", size,
                  " bytes, shorter than the ", kHeaderBytes, "-byte header");
  KILN_DATA_CHECK(std::memcmp(h, kMagic.data(), kMagic.size()) == 0, "'", name,
                  "' is not a kiln token shard (its first 8 bytes are not \"KILNTOKS\")");
  const std::uint32_t version = impl::load_le32(h + 8);
  KILN_DATA_CHECK(version == kVersion, "token shard '", name, "' has format version ", version,
                  "; this kiln reads version ", kVersion);
  const std::uint32_t header_crc = impl::load_le32(h + kHeaderCrcOffset);
  KILN_DATA_CHECK(crc32c(h, kHeaderCrcOffset) == header_crc, "token shard '", name,
                  "' has a corrupt header (header checksum mismatch)");
  const std::uint32_t width = impl::load_le32(h + 12);
  KILN_DATA_CHECK(width == 2 || width == 4, "token shard '", name, "' declares ", width,
                  " bytes per token; expected 2 or 4");
  dtype_ = static_cast<TokenDtype>(width);
  const std::uint64_t count = impl::load_le64(h + 16);
  const std::uint32_t vocab = impl::load_le32(h + 24);
  const std::uint32_t eot = impl::load_le32(h + 28);
  payload_crc_ = impl::load_le32(h + 32);
  KILN_DATA_CHECK(vocab >= 1 && vocab <= 0x7FFFFFFFu && (width == 4 || vocab <= 65536),
                  "token shard '", name, "' declares an impossible vocab size ", vocab);
  KILN_DATA_CHECK(eot == kNoEot || eot < vocab, "token shard '", name, "' declares eot token ", eot,
                  " outside its vocab of ", vocab);
  vocab_size_ = static_cast<std::int32_t>(vocab);
  eot_token_ = eot == kNoEot ? -1 : static_cast<std::int32_t>(eot);
  const std::uint64_t payload = size - kHeaderBytes;
  KILN_DATA_CHECK(count <= payload / width && payload == count * width, "token shard '", name,
                  "' is ", (count > payload / width ? "truncated" : "longer than its header says"),
                  ": the header declares ", count, " tokens (", count * width, " bytes) but ",
                  payload, " bytes follow it");
  count_ = static_cast<std::int64_t>(count);
  if (verify_payload) verify();
}

void TokenShard::verify() const {
  const std::size_t width = static_cast<std::size_t>(dtype_);
  const std::uint32_t crc =
      crc32c(file_.data() + kHeaderBytes, static_cast<std::size_t>(count_) * width);
  KILN_DATA_CHECK(crc == payload_crc_, "token shard '", path().string(),
                  "' is corrupt: the payload checksum is ", crc, ", the header says ",
                  payload_crc_);
}

void TokenShard::read(std::int64_t start, std::span<std::int32_t> out) const {
  const auto n = static_cast<std::int64_t>(out.size());
  KILN_CHECK_ARG(start >= 0 && start <= count_ && n <= count_ - start, "TokenShard::read '",
                 path().string(), "': tokens [", start, ", ", start + n, ") are outside [0, ",
                 count_, ")");
  const auto* p = reinterpret_cast<const unsigned char*>(file_.data()) + kHeaderBytes;
  std::uint32_t bad = 0;  // OR of out-of-range flags: one branch per call, not per token
  const auto vocab = static_cast<std::uint32_t>(vocab_size_);
  if (dtype_ == TokenDtype::u16) {
    p += 2 * start;
    for (std::int64_t i = 0; i < n; ++i) {
      const std::uint32_t t = impl::load_le16(p + 2 * i);
      bad |= static_cast<std::uint32_t>(t >= vocab);
      out[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(t);
    }
  } else {
    p += 4 * start;
    for (std::int64_t i = 0; i < n; ++i) {
      const std::uint32_t t = impl::load_le32(p + 4 * i);
      bad |= static_cast<std::uint32_t>(t >= vocab);
      out[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(t);
    }
  }
  if (bad) {
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int32_t t = out[static_cast<std::size_t>(i)];
      KILN_DATA_CHECK(t >= 0 && t < vocab_size_, "token shard '", path().string(),
                      "' is corrupt: token ", static_cast<std::uint32_t>(t), " at position ",
                      start + i, " is outside its vocab of ", vocab_size_);
    }
  }
}

std::vector<std::int32_t> TokenShard::read_all() const {
  std::vector<std::int32_t> out(static_cast<std::size_t>(count_));
  read(0, out);
  return out;
}

std::vector<std::filesystem::path> find_shards(const std::filesystem::path& dir,
                                               const std::string& split) {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  KILN_CHECK(!ec, Status::io_error, "cannot list '", dir.string(), "': ", ec.message());
  std::vector<std::filesystem::path> out;
  const std::string prefix = split + "_";
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    KILN_CHECK(!ec, Status::io_error, "cannot list '", dir.string(), "': ", ec.message());
    const std::string name = it->path().filename().string();
    if (name.starts_with(prefix) && name.ends_with(".bin") && it->is_regular_file(ec))
      out.push_back(it->path());
  }
  KILN_CHECK(!out.empty(), Status::io_error, "no token shards named '", prefix, "*.bin' in '",
             dir.string(), "'");
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace kiln
