// The data loader: window contents, seeded per-epoch order, every window once per epoch, exact
// resume, rank striding, and the train / val split.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "kiln/data.hpp"
#include "tests/common/files.hpp"

using kiln::DataLoader;
using kiln::DataLoaderConfig;
using kiln::DataSplit;
using kiln::Status;
using kiln::test::TempDir;

namespace {

constexpr std::int32_t kStride = 1000000;  // token i of shard k is k * kStride + i

// Shards whose tokens say where they are, so a row tells which window it is.
struct Corpus {
  TempDir dir;
  std::vector<std::filesystem::path> paths;
  std::vector<std::int64_t> sizes;

  explicit Corpus(const std::vector<std::int64_t>& shard_tokens) : sizes(shard_tokens) {
    for (std::size_t k = 0; k < shard_tokens.size(); ++k) {
      std::vector<std::int32_t> t(static_cast<std::size_t>(shard_tokens[k]));
      for (std::size_t i = 0; i < t.size(); ++i)
        t[i] = static_cast<std::int32_t>(k) * kStride + static_cast<std::int32_t>(i);
      paths.push_back(dir / ("train_" + std::to_string(k) + ".bin"));
      kiln::write_token_shard(paths.back(), t, 1 << 30);
    }
  }
  DataLoaderConfig config(std::int64_t B, std::int64_t T, std::uint64_t seed = 7) const {
    DataLoaderConfig c;
    c.shards = paths;
    c.B = B;
    c.T = T;
    c.seed = seed;
    return c;
  }
  // The global window id a row starts at (windows numbered shard by shard).
  std::int64_t window_of(std::int32_t first_token, std::int64_t T) const {
    const std::int64_t k = first_token / kStride, offset = first_token % kStride;
    std::int64_t id = 0;
    for (std::int64_t j = 0; j < k; ++j)
      id += sizes[j] > T ? (sizes[j] - 1) / T : 0;
    REQUIRE(offset % T == 0);
    return id + offset / T;
  }
};

// Every row of a batch: T + 1 consecutive tokens of one shard.
void check_rows(std::span<const std::int32_t> batch, std::int64_t B, std::int64_t T) {
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 1; t <= T; ++t)
      REQUIRE(batch[b * (T + 1) + t] == batch[b * (T + 1)] + t);
}

std::vector<std::int64_t> windows_of_batch(const Corpus& c, std::span<const std::int32_t> batch,
                                           std::int64_t B, std::int64_t T) {
  std::vector<std::int64_t> ids;
  for (std::int64_t b = 0; b < B; ++b)
    ids.push_back(c.window_of(batch[b * (T + 1)], T));
  return ids;
}

}  // namespace

TEST_CASE("every window is read exactly once per epoch, and rows are T+1 shard tokens",
          "[loader]") {
  // Windows: (100-1)/8 = 12, (57-1)/8 = 7, 5 tokens = 0, (41-1)/8 = 5 -> 24 = 6 batches of 4.
  const Corpus c({100, 57, 5, 41});
  DataLoader loader(c.config(4, 8));
  REQUIRE(loader.windows() == 24);
  REQUIRE(loader.steps_per_epoch() == 6);
  CHECK(loader.vocab_size() == 1 << 30);
  std::vector<std::vector<std::int64_t>> orders;
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::vector<std::int64_t> order;
    for (int s = 0; s < 6; ++s) {
      CHECK(loader.epoch() == static_cast<std::uint64_t>(epoch));
      CHECK(loader.step() == static_cast<std::uint64_t>(s));
      const auto batch = loader.next();
      check_rows(batch, 4, 8);
      for (auto w : windows_of_batch(c, batch, 4, 8))
        order.push_back(w);
    }
    std::vector<std::int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::int64_t> all(24);
    for (int i = 0; i < 24; ++i)
      all[i] = i;
    CHECK(sorted == all);
    orders.push_back(order);
  }
  // Shuffled, and differently each epoch.
  std::vector<std::int64_t> identity(24);
  for (int i = 0; i < 24; ++i)
    identity[i] = i;
  CHECK(orders[0] != identity);
  CHECK(orders[0] != orders[1]);
  CHECK(orders[1] != orders[2]);
}

TEST_CASE("the order depends on the seed only, and shuffle off reads in file order", "[loader]") {
  const Corpus c({1000, 333});
  auto run = [&](std::uint64_t seed, bool shuffle) {
    auto cfg = c.config(3, 16, seed);
    cfg.shuffle = shuffle;
    DataLoader loader(cfg);
    std::vector<std::int32_t> all;
    for (int i = 0; i < 2 * loader.steps_per_epoch() + 3; ++i) {
      const auto b = loader.next();
      all.insert(all.end(), b.begin(), b.end());
    }
    return all;
  };
  CHECK(run(1, true) == run(1, true));
  CHECK(run(1, true) != run(2, true));
  const auto ordered = run(1, false);
  CHECK(ordered == run(2, false));
  CHECK(ordered[0] == 0);
  CHECK(ordered[17] == 16);  // row 1 starts at window 1
}

TEST_CASE("window_at is a permutation of the windows for many counts", "[loader]") {
  for (const std::int64_t tokens : {2, 3, 4, 6, 18, 1001, 4098, 65537}) {
    const Corpus c({tokens});
    DataLoader loader(c.config(1, 1, static_cast<std::uint64_t>(tokens)));
    const std::int64_t n = loader.windows();
    REQUIRE(n == tokens - 1);
    for (std::uint64_t epoch : {0u, 5u}) {
      std::vector<char> seen(static_cast<std::size_t>(n), 0);
      for (std::int64_t p = 0; p < n; ++p) {
        const std::int64_t w = loader.window_at(epoch, p);
        REQUIRE(w >= 0);
        REQUIRE(w < n);
        REQUIRE(!seen[static_cast<std::size_t>(w)]);
        seen[static_cast<std::size_t>(w)] = 1;
      }
    }
  }
}

TEST_CASE("a restored loader continues exactly, across epoch boundaries", "[loader]") {
  const Corpus c({500, 300});
  auto cfg = c.config(2, 10);
  DataLoader a(cfg);
  const std::int64_t spe = a.steps_per_epoch();
  for (const std::int64_t skip : {std::int64_t{0}, std::int64_t{3}, spe - 1, spe, 2 * spe + 1}) {
    a.reset();
    for (std::int64_t i = 0; i < skip; ++i)
      a.next();
    const kiln::DataLoaderState saved = a.state();
    CHECK(saved.epoch * spe + saved.step == static_cast<std::uint64_t>(skip));
    std::vector<std::int32_t> expected;
    for (std::int64_t i = 0; i < spe + 2; ++i) {
      const auto b = a.next();
      expected.insert(expected.end(), b.begin(), b.end());
    }
    DataLoader b(cfg);  // a fresh process, as after a restart
    b.restore(saved);
    std::vector<std::int32_t> got;
    for (std::int64_t i = 0; i < spe + 2; ++i) {
      const auto batch = b.next();
      got.insert(got.end(), batch.begin(), batch.end());
    }
    CHECK(got == expected);
  }
}

TEST_CASE("restore refuses a state from other data or settings, naming what differs", "[loader]") {
  const Corpus c({500, 300});
  const Corpus other({500, 301});
  DataLoader a(c.config(2, 10));
  a.next();
  const auto s = a.state();
  auto expect = [&](DataLoaderConfig cfg, const char* text) {
    DataLoader b(std::move(cfg));
    try {
      b.restore(s);
      FAIL("restored a foreign state");
    } catch (const kiln::Error& e) {
      CHECK(e.status() == Status::data_error);
      CHECK_THAT(e.message(), Catch::Contains(text));
    }
  };
  expect(c.config(3, 10), "B = 2");
  expect(c.config(2, 11), "T = 10");
  expect(c.config(2, 10, 8), "other data or settings");
  expect(other.config(2, 10), "other data or settings");
  auto world = c.config(1, 10);
  world.world_size = 2;
  world.B = 2;
  expect(world, "world_size = 1");
  auto bad_step = s;
  bad_step.step = 1u << 20;
  CHECK_THROWS_WITH(a.restore(bad_step), Catch::Contains("beyond"));
}

TEST_CASE("ranks read disjoint rows that together are the single-rank global batch", "[loader]") {
  const Corpus c({2000, 1500, 77});
  const std::int64_t B = 3, T = 12, W = 4;
  DataLoader single(c.config(B * W, T));
  std::vector<DataLoader> ranks;
  for (int r = 0; r < W; ++r) {
    auto cfg = c.config(B, T);
    cfg.rank = r;
    cfg.world_size = static_cast<int>(W);
    ranks.emplace_back(cfg);
  }
  REQUIRE(ranks[0].steps_per_epoch() == single.steps_per_epoch());
  std::set<std::int64_t> epoch_windows;
  for (std::int64_t s = 0; s < single.steps_per_epoch(); ++s) {
    const auto global = single.next();
    std::set<std::int64_t> step_windows;
    for (int r = 0; r < W; ++r) {
      const auto mine = ranks[static_cast<std::size_t>(r)].next();
      REQUIRE(std::equal(mine.begin(), mine.end(), global.begin() + r * B * (T + 1)));
      for (auto w : windows_of_batch(c, mine, B, T)) {
        CHECK(step_windows.insert(w).second);
        CHECK(epoch_windows.insert(w).second);
      }
    }
  }
  // The epoch covered all but the remainder that does not fill a global batch.
  const std::int64_t n = ranks[0].windows();
  CHECK(static_cast<std::int64_t>(epoch_windows.size()) == n - n % (B * W));
}

TEST_CASE("train and val splits are disjoint and share no token", "[loader]") {
  const Corpus c({1000, 1000});
  auto cfg = c.config(2, 10);
  cfg.split = DataSplit::val;
  cfg.val_fraction = 0.1;
  cfg.shuffle = false;
  DataLoader val(cfg);
  cfg.split = DataSplit::train;
  DataLoader train(cfg);
  CHECK(val.windows() == 20);     // round(0.1 x 198)
  CHECK(train.windows() == 177);  // 198 - 20 - the window touching the first val window
  auto tokens_of = [&](DataLoader& l) {
    std::set<std::int32_t> t;
    for (std::int64_t s = 0; s < l.steps_per_epoch(); ++s)
      for (auto x : l.next())
        t.insert(x);
    return t;
  };
  const auto tv = tokens_of(val), tt = tokens_of(train);
  for (auto x : tv)
    CHECK(tt.count(x) == 0);
  CHECK(*tv.begin() > *tt.rbegin());  // val is the tail of the data

  auto bad = c.config(2, 10);
  bad.split = DataSplit::val;
  CHECK_THROWS_WITH(DataLoader(bad), Catch::Contains("val_fraction in (0, 1)"));
}

TEST_CASE("the loader rejects bad settings and mixed vocabularies", "[loader]") {
  const Corpus c({50});
  CHECK_THROWS_WITH(DataLoader(c.config(10, 8)), Catch::Contains("fewer than one global batch"));
  CHECK_THROWS_WITH(DataLoader(c.config(0, 8)), Catch::Contains("B and T must be >= 1"));
  auto r = c.config(1, 8);
  r.rank = 2;
  r.world_size = 2;
  CHECK_THROWS_WITH(DataLoader(r), Catch::Contains("rank 2 is outside"));
  CHECK_THROWS_WITH(DataLoader(DataLoaderConfig{}), Catch::Contains("no shards"));

  TempDir dir;
  kiln::write_token_shard(dir / "a.bin", std::vector<std::int32_t>(100, 1), 257);
  kiln::write_token_shard(dir / "b.bin", std::vector<std::int32_t>(100, 1), 50257);
  DataLoaderConfig mixed;
  mixed.shards = {dir / "a.bin", dir / "b.bin"};
  mixed.B = 1;
  mixed.T = 4;
  CHECK_THROWS_WITH(DataLoader(mixed), Catch::Contains("vocabulary of 50257"));

  DataLoader ok(c.config(1, 8));
  std::vector<std::int32_t> small(5);
  CHECK_THROWS_WITH(ok.next(small), Catch::Contains("(B, T+1) batch is 1 x 9"));
}
