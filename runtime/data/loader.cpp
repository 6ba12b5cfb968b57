// The data loader: windows of token shards in a seeded per-epoch order, striped over ranks.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <utility>

#include "errors/check.hpp"
#include "kiln/data.hpp"

namespace kiln {
namespace {

#define KILN_DATA_CHECK(cond, ...) KILN_CHECK(cond, ::kiln::Status::data_error, __VA_ARGS__)

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
  return splitmix64(h ^ splitmix64(v));
}

// A keyed pseudo-random permutation of [0, n) in O(1) memory and time per lookup: a 4-round Feistel
// network over the smallest even number of bits covering n, cycle-walked back into [0, n) (at most
// 4n / n = 4 steps expected, since the bit domain is below 4n). Memory-free, so an epoch of
// billions of windows needs no index array, and any position is computed directly, so resume is
// O(1).
class FeistelPermutation {
 public:
  FeistelPermutation(std::uint64_t n, std::uint64_t key) : n_(n), key_(key) {
    int bits = 2;
    while (bits < 64 && (std::uint64_t{1} << bits) < n)
      bits += 2;
    half_ = bits / 2;
    mask_ = (std::uint64_t{1} << half_) - 1;
  }
  std::uint64_t operator()(std::uint64_t x) const {
    do
      x = encrypt(x);
    while (x >= n_);
    return x;
  }

 private:
  std::uint64_t encrypt(std::uint64_t x) const {
    std::uint64_t l = x >> half_, r = x & mask_;
    for (std::uint64_t round = 0; round < 4; ++round) {
      const std::uint64_t f = mix(key_ + round, r) & mask_;
      std::swap(l, r);
      r ^= f;
    }
    return (l << half_) | r;
  }
  std::uint64_t n_, key_, mask_;
  int half_;
};

const char* split_name(DataSplit s) {
  return s == DataSplit::all ? "all" : s == DataSplit::train ? "train" : "val";
}

}  // namespace

struct DataLoader::Impl {
  DataLoaderConfig cfg;
  std::vector<TokenShard> shards;
  std::vector<std::int64_t> prefix;   // prefix[s] = id of shard s's first window; back() = total
  std::int64_t first = 0, count = 0;  // the split: global window ids [first, first + count)
  std::int64_t steps = 0;
  std::int32_t vocab = 0;
  std::uint64_t fingerprint = 0;
  std::uint64_t epoch = 0, step = 0;
  std::vector<std::int32_t> buffer;

  std::int64_t window_at(std::uint64_t e, std::int64_t p) const {
    if (!cfg.shuffle) return p;
    const FeistelPermutation perm(static_cast<std::uint64_t>(count),
                                  mix(mix(cfg.seed, e), 0x6b696c6e));
    return static_cast<std::int64_t>(perm(static_cast<std::uint64_t>(p)));
  }
  std::size_t shard_of(std::int64_t global) const {
    return static_cast<std::size_t>(std::upper_bound(prefix.begin(), prefix.end(), global) -
                                    prefix.begin() - 1);
  }
};

DataLoader::DataLoader(DataLoaderConfig config) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.cfg = std::move(config);
  const DataLoaderConfig& c = m.cfg;
  KILN_CHECK_ARG(!c.shards.empty(), "DataLoader: no shards given");
  KILN_CHECK_ARG(c.B >= 1 && c.T >= 1, "DataLoader: B and T must be >= 1 (got B=", c.B, ", T=", c.T,
                 ")");
  KILN_CHECK_ARG(c.world_size >= 1 && c.rank >= 0 && c.rank < c.world_size, "DataLoader: rank ",
                 c.rank, " is outside [0, world_size = ", c.world_size, ")");
  KILN_CHECK_ARG(c.split == DataSplit::all || (c.val_fraction > 0.0 && c.val_fraction < 1.0),
                 "DataLoader: the ", split_name(c.split),
                 " split needs val_fraction in (0, 1) (got ", c.val_fraction, ")");

  m.prefix.push_back(0);
  m.fingerprint = mix(0x6b696c6e2d6c6472ull, c.shards.size());
  for (const auto& path : c.shards) {
    m.shards.emplace_back(path, c.verify_checksums);
    const TokenShard& s = m.shards.back();
    if (m.shards.size() == 1) m.vocab = s.vocab_size();
    KILN_DATA_CHECK(s.vocab_size() == m.vocab, "DataLoader: shard '", path.string(),
                    "' was written for a vocabulary of ", s.vocab_size(), " tokens, shard '",
                    c.shards.front().string(), "' for ", m.vocab);
    const std::int64_t windows = s.size() > c.T ? (s.size() - 1) / c.T : 0;
    m.prefix.push_back(m.prefix.back() + windows);
    m.fingerprint = mix(mix(m.fingerprint, static_cast<std::uint64_t>(s.size())), s.payload_crc());
  }
  const std::int64_t total = m.prefix.back();
  m.first = 0;
  m.count = total;
  if (c.split != DataSplit::all) {
    const std::int64_t nval =
        std::max<std::int64_t>(1, std::llround(c.val_fraction * static_cast<double>(total)));
    const std::int64_t v0 = total - nval;
    // The window before the first val window shares its first token, when in the same shard.
    const std::int64_t train_end = v0 > 0 && m.shard_of(v0 - 1) == m.shard_of(v0) ? v0 - 1 : v0;
    KILN_CHECK_ARG(train_end >= 1, "DataLoader: ", total, " windows of ", c.T + 1,
                   " tokens leave no train window with val_fraction ", c.val_fraction);
    if (c.split == DataSplit::val) {
      m.first = v0;
      m.count = nval;
    } else {
      m.count = train_end;
    }
  }
  const std::int64_t global_batch = c.B * c.world_size;
  m.steps = m.count / global_batch;
  KILN_CHECK_ARG(m.steps >= 1, "DataLoader: the ", split_name(c.split), " split of ",
                 c.shards.size(), " shard(s) holds ", m.count, " windows of T+1 = ", c.T + 1,
                 " tokens, fewer than one global batch of B x world_size = ", global_batch);
  std::uint64_t fraction_bits;
  std::memcpy(&fraction_bits, &c.val_fraction, sizeof fraction_bits);
  m.fingerprint = mix(m.fingerprint, static_cast<std::uint64_t>(c.T));
  m.fingerprint = mix(m.fingerprint, c.seed);
  m.fingerprint = mix(m.fingerprint, c.shuffle ? 1 : 0);
  m.fingerprint = mix(m.fingerprint, static_cast<std::uint64_t>(c.split));
  m.fingerprint = mix(m.fingerprint, c.split == DataSplit::all ? 0 : fraction_bits);
}

DataLoader::~DataLoader() = default;
DataLoader::DataLoader(DataLoader&&) noexcept = default;
DataLoader& DataLoader::operator=(DataLoader&&) noexcept = default;

void DataLoader::next(std::span<std::int32_t> out) {
  Impl& m = *impl_;
  const DataLoaderConfig& c = m.cfg;
  const std::int64_t row = c.T + 1;
  KILN_CHECK_ARG(static_cast<std::int64_t>(out.size()) == c.B * row, "DataLoader::next: out holds ",
                 out.size(), " tokens; a (B, T+1) batch is ", c.B, " x ", row);
  const std::int64_t base = static_cast<std::int64_t>(m.step) * c.B * c.world_size +
                            static_cast<std::int64_t>(c.rank) * c.B;
  for (std::int64_t b = 0; b < c.B; ++b) {
    const std::int64_t g = m.first + m.window_at(m.epoch, base + b);
    const std::size_t s = m.shard_of(g);
    m.shards[s].read((g - m.prefix[s]) * c.T,
                     out.subspan(static_cast<std::size_t>(b * row), static_cast<std::size_t>(row)));
  }
  if (++m.step == static_cast<std::uint64_t>(m.steps)) {
    m.step = 0;
    ++m.epoch;
  }
}

std::span<const std::int32_t> DataLoader::next() {
  Impl& m = *impl_;
  m.buffer.resize(static_cast<std::size_t>(m.cfg.B * (m.cfg.T + 1)));
  next(std::span<std::int32_t>(m.buffer));
  return m.buffer;
}

std::int64_t DataLoader::windows() const noexcept {
  return impl_->count;
}
std::int64_t DataLoader::steps_per_epoch() const noexcept {
  return impl_->steps;
}
std::uint64_t DataLoader::epoch() const noexcept {
  return impl_->epoch;
}
std::uint64_t DataLoader::step() const noexcept {
  return impl_->step;
}
std::int32_t DataLoader::vocab_size() const noexcept {
  return impl_->vocab;
}
const DataLoaderConfig& DataLoader::config() const noexcept {
  return impl_->cfg;
}

DataLoaderState DataLoader::state() const {
  const Impl& m = *impl_;
  return {m.epoch,
          m.step,
          m.fingerprint,
          static_cast<std::uint64_t>(m.cfg.B),
          static_cast<std::uint64_t>(m.cfg.T),
          static_cast<std::uint64_t>(m.cfg.world_size)};
}

void DataLoader::restore(const DataLoaderState& s) {
  Impl& m = *impl_;
  const DataLoaderState mine = state();
  KILN_DATA_CHECK(s.B == mine.B, "DataLoader::restore: the state was saved with B = ", s.B,
                  ", this loader has B = ", mine.B);
  KILN_DATA_CHECK(s.T == mine.T, "DataLoader::restore: the state was saved with T = ", s.T,
                  ", this loader has T = ", mine.T);
  KILN_DATA_CHECK(s.world_size == mine.world_size,
                  "DataLoader::restore: the state was saved with world_size = ", s.world_size,
                  ", this loader has world_size = ", mine.world_size);
  KILN_DATA_CHECK(s.fingerprint == mine.fingerprint,
                  "DataLoader::restore: the state belongs to other data or settings (the shards' "
                  "sizes or checksums, the split, the seed or shuffling differ)");
  KILN_DATA_CHECK(s.step < static_cast<std::uint64_t>(m.steps), "DataLoader::restore: step ",
                  s.step, " is beyond the ", m.steps, " steps of an epoch");
  m.epoch = s.epoch;
  m.step = s.step;
}

void DataLoader::reset() noexcept {
  impl_->epoch = 0;
  impl_->step = 0;
}

std::int64_t DataLoader::window_at(std::uint64_t epoch, std::int64_t p) const {
  KILN_CHECK_ARG(p >= 0 && p < impl_->count, "DataLoader::window_at: position ", p,
                 " is outside [0, ", impl_->count, ")");
  return impl_->window_at(epoch, p);
}

}  // namespace kiln
