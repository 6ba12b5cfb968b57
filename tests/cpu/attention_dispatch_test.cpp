// The attention kernels' head-dim dispatch (kernels/attention/attention_dispatch.hpp): every listed
// head dim reaches its own instantiation and has its tiles; any other is not_supported, never a
// silent fallback to another head dim's kernels.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "kernels/attention/attention_dispatch.hpp"
#include "kernels/attention/attention_sm90_layout.hpp"
#include "kiln/kiln.hpp"

namespace attn = kiln::attn;

TEST_CASE("attention dispatch: every listed head dim reaches its own instantiation",
          "[attention]") {
  REQUIRE(attn::HeadDims::kCount >= 1);
  for (const int hd : attn::HeadDims::kValues) {
    CAPTURE(hd);
    CHECK(attn::served_head_dim(hd));
    CHECK(attn::dispatch_head_dim(hd, []<int HD>() { return HD; }) == hd);
    std::vector<int> seen;  // a void instantiation runs exactly once
    attn::dispatch_head_dim(hd, [&]<int HD>() { seen.push_back(HD); });
    CHECK(seen == std::vector<int>{hd});
    // Its tiles exist, and the sm_90a backward's block is two 64 x 64 dQ parts.
    CHECK(attn::sm80_fwd_keys(hd) > 0);
    CHECK(attn::sm80_fwd_keys(hd) % 16 == 0);
    CHECK(attn::sm90_bwd_queries(hd) > 0);
    CHECK(attn::sm90_bwd_queries(hd) * hd == 2 * attn::sm90::kDqPart);
    CHECK(attn::sm90::bwd_block_m(hd) == attn::sm90_bwd_queries(hd));
  }
  CHECK(attn::head_dims_text() == "64, 128");
}

TEST_CASE("attention dispatch: the tile choices", "[attention]") {
  // What the kernels were tuned with (kernels/attention/README.md).
  CHECK(attn::sm80_fwd_keys(64) == 128);
  CHECK(attn::sm80_fwd_keys(128) == 64);
  CHECK(attn::sm90_bwd_queries(64) == 128);
  CHECK(attn::sm90_bwd_queries(128) == 64);
  CHECK(attn::sm90::dq_part_qb(64, 1) == 1);
  CHECK(attn::sm90::dq_part_hb(64, 1) == 0);
  CHECK(attn::sm90::dq_part_qb(128, 1) == 0);
  CHECK(attn::sm90::dq_part_hb(128, 1) == 1);
}

TEST_CASE("attention dispatch: an unlisted head dim is not_supported, never another's kernel",
          "[attention]") {
  for (const int hd : {0, 8, 32, 63, 96, 127, 192, 256, -64}) {
    CAPTURE(hd);
    CHECK_FALSE(attn::served_head_dim(hd));
    CHECK(attn::sm80_fwd_keys(hd) == 0);
    CHECK(attn::sm90_bwd_queries(hd) == 0);
    int calls = 0;
    try {
      attn::dispatch_head_dim(hd, [&]<int HD>() { ++calls; });
      FAIL("no exception");
    } catch (const kiln::Error& e) {
      CHECK(e.status() == kiln::Status::not_supported);
      CHECK_THAT(e.message(), Catch::Contains("head_dim " + std::to_string(hd)));
      CHECK_THAT(e.message(), Catch::Contains("64, 128"));
    }
    CHECK(calls == 0);
  }
}
