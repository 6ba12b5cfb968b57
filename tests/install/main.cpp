// Uses kiln through its installed headers and library only. Exits non-zero on any surprise.
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <kiln/kiln.hpp>

#define EXPECT(cond)                                                                \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "downstream: expected %s (line %d)\n", #cond, __LINE__); \
      return 1;                                                                     \
    }                                                                               \
  } while (0)

int main() {
  EXPECT(std::string(kiln_version_string()) == KILN_VERSION_STRING);

  // The C ABI reports a bad argument with a status and a message.
  EXPECT(kiln_get_library_versions(nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  EXPECT(std::string(kiln_last_error()).find("out is null") != std::string::npos);

  // The C++ layer throws kiln::Error, whose type crosses the shared library's boundary.
  try {
    kiln::check(kiln_get_library_versions(nullptr));
    return 1;
  } catch (const kiln::Error& e) {
    EXPECT(e.status() == kiln::Status::invalid_argument);
  }

  // The text and file layer: a tokenizer, a shard, the loader and safetensors, through the shared
  // library's exported symbols, in a scratch folder.
  {
    char tmpl[] = "/tmp/kiln-downstream-XXXXXX";
    if (!mkdtemp(tmpl)) return 1;
    const std::filesystem::path dir = tmpl;
    const kiln::ByteTokenizer tok;
    std::vector<int32_t> ids = tok.encode("downstream text, enough for two windows");
    EXPECT(tok.decode(ids) == "downstream text, enough for two windows");
    kiln::write_token_shard(dir / "train_000000.bin", ids, tok.vocab_size(), tok.eot_token());
    kiln::DataLoaderConfig cfg;
    cfg.shards = kiln::find_shards(dir, "train");
    cfg.B = 2;
    cfg.T = 8;
    kiln::DataLoader loader(cfg);
    EXPECT(loader.next().size() == 18);
    const std::vector<float> w = {1.f, 2.f, 3.f};
    const kiln::SafetensorsEntry entry{.name = "w", .shape = {3}, .data = w};
    kiln::write_safetensors(dir / "w.safetensors", std::span(&entry, 1));
    EXPECT(kiln::SafetensorsReader(dir / "w.safetensors").read_float("w") == w);
    EXPECT(kiln::crc32c("123456789", 9) == 0xE3069283u);
    try {
      kiln::TokenShard bad(dir / "w.safetensors");
      return 1;
    } catch (const kiln::Error& e) {
      EXPECT(e.status() == kiln::Status::data_error);
    }
    std::filesystem::remove_all(dir);
  }

  int count = 0;
  if (kiln_device_count(&count) == KILN_STATUS_OK) {
    kiln::Device device(0);
    std::printf("downstream: kiln %s on %s\n", kiln_version_string(), device.info().name);
  } else {
    std::printf("downstream: kiln %s, %s\n", kiln_version_string(), kiln_last_error());
  }
  return 0;
}
