// kiln's checkpoint file format: a header, a table of named sections, JSON metadata and the
// payloads, every part under a CRC-32C (the layout: checkpoint.cpp).
#include "runtime/checkpoint_file.hpp"

#include <bit>
#include <cstring>
#include <string_view>

#include "errors/check.hpp"

static_assert(std::endian::native == std::endian::little,
              "kiln's checkpoint format is little-endian; a big-endian host needs byte swaps");

namespace kiln::impl {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'C', 'K', 'P', 'T'};
constexpr uint32_t kVersion = 1;

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

}  // namespace

[[noreturn]] void corrupt(const fs::path& path, const std::string& what) {
  throw_error(Status::data_error, "checkpoint '" + path.string() + "': " + what, nullptr, nullptr,
              0);
}

bool CheckedFile::has(const std::string& name) const {
  for (const Section& s : sections) {
    if (s.name == name) return true;
  }
  return false;
}

const Section& CheckedFile::section(const std::string& name) const {
  for (const Section& s : sections) {
    if (s.name == name) return s;
  }
  corrupt(path(), "has no section '" + name + "'");
}

const float* CheckedFile::f32(const std::string& name, int64_t count) const {
  const Section& s = section(name);
  if (s.kind != kCheckpointKindF32) corrupt(path(), "section '" + name + "' is not f32");
  if (s.bytes != static_cast<uint64_t>(count) * 4) {
    corrupt(path(), "section '" + name + "' holds " + std::to_string(s.bytes / 4) +
                        " values where " + std::to_string(count) + " are expected");
  }
  return reinterpret_cast<const float*>(s.data);
}

CheckedFile open_checked(const fs::path& path) {
  CheckedFile c{MappedFile(path), {}, {}};
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
    c.meta = nlohmann::json::parse(std::string_view(
        reinterpret_cast<const char*>(bytes.data() + h.json_offset), h.json_bytes));
  } catch (const std::exception& e) {
    corrupt(path, std::string("metadata is not valid: ") + e.what());
  }
  return c;
}

void write_checked(const fs::path& path, const nlohmann::json& meta,
                   const std::vector<OutSection>& outs) {
  const std::string json = meta.dump(1);
  const uint32_t count = static_cast<uint32_t>(outs.size());
  FileHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  h.section_count = count;
  h.table_offset = sizeof(FileHeader);
  h.json_offset = h.table_offset + count * sizeof(SectionEntry);
  h.json_bytes = json.size();
  h.json_crc = crc32c(json.data(), json.size());
  std::vector<SectionEntry> table(count, SectionEntry{});
  uint64_t offset = align64(h.json_offset + h.json_bytes);
  for (uint32_t i = 0; i < count; ++i) {
    std::strncpy(table[i].name, outs[i].name.c_str(), sizeof table[i].name - 1);
    table[i].kind = outs[i].kind;
    table[i].offset = offset;
    table[i].bytes = outs[i].bytes;
    offset = align64(offset + outs[i].bytes);
  }
  h.file_bytes =
      count ? table[count - 1].offset + table[count - 1].bytes : h.json_offset + h.json_bytes;
  const std::size_t table_bytes = table.size() * sizeof(SectionEntry);
  write_file_atomically(path, [&](AtomicFileWriter& w) {
    w.write(&h, sizeof h);
    w.write(table.data(), table_bytes);
    w.write(json);
    const char zeros[64] = {};
    for (uint32_t i = 0; i < count; ++i) {
      w.write(zeros, table[i].offset - w.size());
      const void* data = outs[i].fetch();
      table[i].crc = crc32c(data, table[i].bytes);
      w.write(data, table[i].bytes);
    }
    h.table_crc = crc32c(table.data(), table_bytes);
    w.patch(h.table_offset, table.data(), table_bytes);
    w.patch(0, &h, sizeof h);
  });
}

}  // namespace kiln::impl
