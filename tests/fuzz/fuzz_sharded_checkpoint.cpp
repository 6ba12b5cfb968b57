// A sharded checkpoint (ZeRO-1): the index and the two shard files of a 2-rank save, as three
// parts of one input (fuzz_common.hpp), read back whole by read_checkpoint.
#include <vector>

#include "kiln/trainer.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto parts = kiln_fuzz::split(data, size, 3);
  const auto index = kiln_fuzz::put("z.ckpt", parts[0]);
  kiln_fuzz::put("z.ckpt.step00000000.rank00000-of-00002", parts[1]);
  kiln_fuzz::put("z.ckpt.step00000000.rank00001-of-00002", parts[2]);
  try {
    std::vector<float> weights;
    kiln::read_checkpoint(index, &weights);
  } catch (const kiln::Error&) {
  }
  return 0;
}
