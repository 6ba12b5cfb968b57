// Internal: kiln's checkpoint file format (see checkpoint.cpp for the layout and the three kinds of
// file): writing a file of named sections with their checksums, and opening one checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/io.hpp"

namespace kiln::impl {

inline constexpr uint32_t kCheckpointKindF32 = 1;
inline constexpr uint32_t kCheckpointKindBytes = 2;
inline constexpr const char* kShardFormat = "kiln checkpoint shard";

// Throws kiln::Error(data_error) "checkpoint '<path>': <what>".
[[noreturn]] void corrupt(const std::filesystem::path& path, const std::string& what);

struct Section {
  std::string name;
  uint32_t kind;
  const std::byte* data;
  uint64_t bytes;
};

// A file of the format, checked: header, table, metadata and every payload's checksum.
struct CheckedFile {
  MappedFile file;
  nlohmann::json meta;
  std::vector<Section> sections;

  const std::filesystem::path& path() const { return file.path(); }
  bool has(const std::string& name) const;
  // The section `name`; data_error when there is none.
  const Section& section(const std::string& name) const;
  // A f32 section of exactly `count` values.
  const float* f32(const std::string& name, int64_t count) const;
};

// Opens `path` and checks all of it; data_error naming the file and the problem otherwise.
CheckedFile open_checked(const std::filesystem::path& path);

// One section to write: `fetch` returns its bytes in host memory, valid until the next call.
struct OutSection {
  std::string name;
  uint32_t kind;
  uint64_t bytes;
  std::function<const void*()> fetch;
};

// Writes `meta` and the sections to `path` atomically (write_file_atomically).
void write_checked(const std::filesystem::path& path, const nlohmann::json& meta,
                   const std::vector<OutSection>& outs);

}  // namespace kiln::impl
