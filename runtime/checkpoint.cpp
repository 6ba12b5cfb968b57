// Training checkpoints: the master weights, the AdamW moments, the step, the configs and the
// data loader's position in one file, written atomically and checked on load.
//
// File format, version 1 (integers little-endian):
//   offset 0      FileHeader (64 bytes): magic "KILNCKPT", version, section count, the offsets and
//                 CRC-32C of the section table and of the JSON metadata, the file's total size
//   offset 64     the section table: one 64-byte SectionEntry per section (name, kind, CRC-32C of
//                 the payload, offset, bytes)
//   then          the JSON metadata (configs, step, kiln version)
//   then          the payloads, each at a multiple of 64 bytes: "master", "adam_m", "adam_v"
//                 (f32, ParamLayout::total() values each) and "data_state" (bytes)
// The payload checksums are computed while the payloads stream out and patched into the table
// before the file is committed; a reader checks the header, the table, the metadata and every
// payload before it changes anything.
#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/common/check.hpp"
#include "kiln/io.hpp"
#include "kiln/trainer.hpp"
#include "kiln/version.h"
#include "runtime/model_json.hpp"
#include "runtime/trainer_state.hpp"

static_assert(std::endian::native == std::endian::little,
              "kiln's checkpoint format is little-endian; a big-endian host needs byte swaps");

namespace kiln {
namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'C', 'K', 'P', 'T'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kKindF32 = 1;
constexpr uint32_t kKindBytes = 2;

struct FileHeader {
  char magic[8];
  uint32_t version;
  uint32_t section_count;
  uint64_t table_offset;
  uint64_t json_offset;
  uint64_t json_bytes;
  uint32_t json_crc;
  uint32_t table_crc;
  uint64_t file_bytes;
  uint8_t reserved[8];
};
static_assert(sizeof(FileHeader) == 64);

struct SectionEntry {
  char name[40];
  uint32_t kind;
  uint32_t crc;
  uint64_t offset;
  uint64_t bytes;
};
static_assert(sizeof(SectionEntry) == 64);

uint64_t align64(uint64_t x) {
  return (x + 63) / 64 * 64;
}

[[noreturn]] void corrupt(const std::filesystem::path& path, const std::string& what) {
  impl::throw_error(Status::data_error, "checkpoint '" + path.string() + "': " + what, nullptr,
                    nullptr, 0);
}

struct Section {
  std::string name;
  uint32_t kind;
  const std::byte* data;
  uint64_t bytes;
};

// A checkpoint read and checked: metadata parsed, every checksum verified.
struct LoadedCheckpoint {
  MappedFile file;
  CheckpointInfo info;
  std::vector<Section> sections;

  const Section& section(const std::string& name) const {
    for (const Section& s : sections) {
      if (s.name == name) return s;
    }
    corrupt(file.path(), "has no section '" + name + "'");
  }
  // A f32 section of exactly `count` values.
  const float* f32(const std::string& name, int64_t count) const {
    const Section& s = section(name);
    if (s.kind != kKindF32) corrupt(file.path(), "section '" + name + "' is not f32");
    if (s.bytes != static_cast<uint64_t>(count) * 4) {
      corrupt(file.path(), "section '" + name + "' holds " + std::to_string(s.bytes / 4) +
                               " values where the model has " + std::to_string(count));
    }
    return reinterpret_cast<const float*>(s.data);
  }
};

LoadedCheckpoint load(const std::filesystem::path& path) {
  LoadedCheckpoint c{MappedFile(path), {}, {}};
  const std::span<const std::byte> bytes = c.file.bytes();
  if (bytes.size() < sizeof(FileHeader)) {
    corrupt(path, "is " + std::to_string(bytes.size()) +
                      " bytes long, too short for a checkpoint header (truncated?)");
  }
  FileHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) {
    corrupt(path, "is not a kiln checkpoint (bad magic)");
  }
  if (h.version != kVersion) {
    corrupt(path, "has format version " + std::to_string(h.version) + "; this kiln reads version " +
                      std::to_string(kVersion));
  }
  if (h.file_bytes != bytes.size()) {
    corrupt(path, "is " + std::to_string(bytes.size()) + " bytes long where its header says " +
                      std::to_string(h.file_bytes) + " (truncated or appended to)");
  }
  const uint64_t table_bytes = uint64_t{h.section_count} * sizeof(SectionEntry);
  if (h.section_count > 1024 || h.table_offset > bytes.size() ||
      table_bytes > bytes.size() - h.table_offset || h.json_offset > bytes.size() ||
      h.json_bytes > bytes.size() - h.json_offset) {
    corrupt(path, "has a header pointing outside the file");
  }
  if (crc32c(bytes.data() + h.table_offset, table_bytes) != h.table_crc) {
    corrupt(path, "section table checksum mismatch (corrupt)");
  }
  if (crc32c(bytes.data() + h.json_offset, h.json_bytes) != h.json_crc) {
    corrupt(path, "metadata checksum mismatch (corrupt)");
  }
  for (uint32_t i = 0; i < h.section_count; ++i) {
    SectionEntry e;
    std::memcpy(&e, bytes.data() + h.table_offset + i * sizeof(SectionEntry), sizeof e);
    e.name[sizeof e.name - 1] = '\0';
    if (e.offset > bytes.size() || e.bytes > bytes.size() - e.offset) {
      corrupt(path, std::string("section '") + e.name + "' lies outside the file");
    }
    const std::byte* data = bytes.data() + e.offset;
    if (crc32c(data, e.bytes) != e.crc) {
      corrupt(path, std::string("section '") + e.name + "' checksum mismatch (corrupt)");
    }
    c.sections.push_back({e.name, e.kind, data, e.bytes});
  }
  try {
    const auto j = nlohmann::json::parse(std::string_view(
        reinterpret_cast<const char*>(bytes.data() + h.json_offset), h.json_bytes));
    c.info.model = impl::model_from_json(j.at("model"));
    c.info.train = impl::train_from_json(j.at("train"));
    c.info.step = j.at("step").get<int64_t>();
    c.info.kiln_version = j.at("kiln_version").get<std::string>();
  } catch (const Error& e) {
    corrupt(path, "metadata: " + e.message());
  } catch (const std::exception& e) {
    corrupt(path, std::string("metadata is not valid: ") + e.what());
  }
  if (c.info.step < 0) corrupt(path, "metadata: negative step");
  const Section& ds = c.section("data_state");
  c.info.data_state.assign(reinterpret_cast<const char*>(ds.data), ds.bytes);
  return c;
}

}  // namespace

void Trainer::save_checkpoint(const std::filesystem::path& path,
                              const std::string& data_state) const {
  const impl::TrainerState& s = *s_;
  const int64_t total = s.layout.total();
  nlohmann::json meta;
  meta["format"] = "kiln checkpoint";
  meta["kiln_version"] = KILN_VERSION_STRING;
  meta["model"] = impl::model_to_json(s.layout.config());
  meta["train"] = impl::train_to_json(s.train);
  meta["step"] = s.step;
  meta["param_count"] = total;
  const std::string json = meta.dump(1);

  struct Out {
    const char* name;
    uint32_t kind;
    uint64_t bytes;
  };
  const Out outs[] = {{"master", kKindF32, static_cast<uint64_t>(total) * 4},
                      {"adam_m", kKindF32, static_cast<uint64_t>(total) * 4},
                      {"adam_v", kKindF32, static_cast<uint64_t>(total) * 4},
                      {"data_state", kKindBytes, data_state.size()}};
  constexpr uint32_t count = sizeof outs / sizeof outs[0];

  FileHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  h.section_count = count;
  h.table_offset = sizeof(FileHeader);
  h.json_offset = h.table_offset + count * sizeof(SectionEntry);
  h.json_bytes = json.size();
  h.json_crc = crc32c(json.data(), json.size());
  SectionEntry table[count] = {};
  uint64_t offset = align64(h.json_offset + h.json_bytes);
  for (uint32_t i = 0; i < count; ++i) {
    std::strncpy(table[i].name, outs[i].name, sizeof table[i].name - 1);
    table[i].kind = outs[i].kind;
    table[i].offset = offset;
    table[i].bytes = outs[i].bytes;
    offset = align64(offset + outs[i].bytes);
  }
  h.file_bytes = table[count - 1].offset + table[count - 1].bytes;

  // One host buffer, reused for each tensor: the checkpoint of a large model streams through it.
  std::vector<float> host(static_cast<std::size_t>(total));
  const std::size_t regions[3] = {s.r.master, s.r.adam_m, s.r.adam_v};
  write_file_atomically(path, [&](AtomicFileWriter& w) {
    w.write(&h, sizeof h);
    w.write(table, sizeof table);
    w.write(json);
    const char zeros[64] = {};
    for (uint32_t i = 0; i < count; ++i) {
      w.write(zeros, table[i].offset - w.size());
      const void* data;
      if (i < 3) {
        s.backend->download_f32(host.data(), s.at(regions[i]), s.types.master, total);
        data = host.data();
      } else {
        data = data_state.data();
      }
      table[i].crc = crc32c(data, table[i].bytes);
      w.write(data, table[i].bytes);
    }
    h.table_crc = crc32c(table, sizeof table);
    w.patch(h.table_offset, table, sizeof table);
    w.patch(0, &h, sizeof h);
  });
}

CheckpointInfo Trainer::load_checkpoint(const std::filesystem::path& path) {
  impl::TrainerState& s = *s_;
  LoadedCheckpoint c = load(path);
  if (!(c.info.model.resolved() == s.layout.config())) {
    impl::throw_error(Status::invalid_argument,
                      "checkpoint '" + path.string() + "' holds a " + c.info.model.describe() +
                          " model; this trainer's is " + s.layout.config().describe(),
                      nullptr, nullptr, 0);
  }
  const int64_t total = s.layout.total();
  const float* master = c.f32("master", total);
  const float* m = c.f32("adam_m", total);
  const float* v = c.f32("adam_v", total);
  s.backend->upload_f32(s.at(s.r.master), s.types.master, master, total);
  if (s.types.separate_master) {
    s.backend->convert(s.at(s.r.params), s.types.compute, s.at(s.r.master), s.types.master, total);
  }
  s.backend->upload_f32(s.at(s.r.adam_m), s.types.master, m, total);
  s.backend->upload_f32(s.at(s.r.adam_v), s.types.master, v, total);
  s.backend->synchronize();
  s.step = c.info.step;
  return c.info;
}

CheckpointInfo read_checkpoint(const std::filesystem::path& path,
                               std::vector<float>* master_weights) {
  LoadedCheckpoint c = load(path);
  if (master_weights) {
    ModelConfig model = c.info.model;
    try {
      model.validate();
    } catch (const Error& e) {
      corrupt(path, "metadata: " + e.message());
    }
    const ParamLayout layout(model);
    const float* master = c.f32("master", layout.total());
    master_weights->assign(master, master + layout.total());
  }
  return c.info;
}

}  // namespace kiln
