// A token shard file, opened with and without the payload checksum, and read whole.
#include "kiln/data.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = kiln_fuzz::put("s.bin", {reinterpret_cast<const char*>(data), size});
  for (bool verify : {true, false}) {
    try {
      const kiln::TokenShard shard(path, verify);
      shard.read_all();
    } catch (const kiln::Error&) {
    }
  }
  return 0;
}
