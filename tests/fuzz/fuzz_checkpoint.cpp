// A checkpoint file (whole or index) as read_checkpoint reads it: any bytes are refused with a
// kiln::Error or read; nothing may crash, leak, overflow or allocate beyond what the file holds.
#include <vector>

#include "kiln/trainer.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = kiln_fuzz::put("x.ckpt", {reinterpret_cast<const char*>(data), size});
  try {
    std::vector<float> weights;
    kiln::read_checkpoint(path, &weights);
  } catch (const kiln::Error&) {
  }
  return 0;
}
