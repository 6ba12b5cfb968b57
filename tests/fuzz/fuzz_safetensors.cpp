// A safetensors file: the header, the layout, and every tensor read as float.
#include "kiln/safetensors.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = kiln_fuzz::put("m.safetensors", {reinterpret_cast<const char*>(data), size});
  try {
    const kiln::SafetensorsReader r(path);
    for (const auto& t : r.tensors()) {
      r.info(t.name);
      r.raw(t.name);
      try {
        r.read_float(t.name);
      } catch (const kiln::Error&) {
      }
    }
  } catch (const kiln::Error&) {
  }
  return 0;
}
