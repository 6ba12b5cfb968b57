// Shared by the fuzz targets (built with clang, tests/fuzz/CMakeLists.txt) and the seed generator
// (built with the library, tests/fuzz/make_seeds.cpp): the input format of the targets that read
// several files, files in a private scratch folder, and a small synthetic GPT-2 vocabulary.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace kiln_fuzz {

// Several files in one input: each part but the last is a 4-byte little-endian length and that
// many bytes; the last part is the rest. Missing parts are empty.
inline std::vector<std::string_view> split(const uint8_t* data, std::size_t size, int parts) {
  std::vector<std::string_view> out;
  const char* p = reinterpret_cast<const char*>(data);
  std::size_t left = size;
  for (int i = 0; i + 1 < parts; ++i) {
    uint32_t n = 0;
    if (left >= 4) {
      std::memcpy(&n, p, 4);
      p += 4;
      left -= 4;
    } else {
      left = 0;
    }
    const std::size_t take = n < left ? n : left;
    out.emplace_back(p, take);
    p += take;
    left -= take;
  }
  out.emplace_back(p, left);
  return out;
}

inline std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i + 1 < parts.size()) {
      const uint32_t n = static_cast<uint32_t>(parts[i].size());
      out.append(reinterpret_cast<const char*>(&n), 4);
    }
    out += parts[i];
  }
  return out;
}

// A folder of this process's own under the system's temporary folder (one per fuzzing process).
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    std::string t = (std::filesystem::temp_directory_path() / "kiln-fuzz-XXXXXX").string();
    if (!::mkdtemp(t.data())) std::abort();
    return std::filesystem::path(t);
  }();
  return dir;
}

inline std::filesystem::path put(const std::string& name, std::string_view bytes) {
  const std::filesystem::path p = scratch() / name;
  std::ofstream(p, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return p;
}

// GPT-2's byte -> printable code point map (encoder.py's bytes_to_unicode), as UTF-8.
inline std::string byte_symbol(unsigned b) {
  unsigned cp = b;
  if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) {
    unsigned n = 0;
    for (unsigned x = 0; x < b; ++x) {
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// A small, consistent GPT-2 vocabulary: the 256 byte tokens, a few merges, <|endoftext|>.
// Returns {encoder.json, vocab.bpe}.
inline std::pair<std::string, std::string> synthetic_vocab() {
  // Each merge joins tokens that exist by then (a byte, or an earlier merge's result).
  const char* merges[][2] = {{"t", "h"},         {"th", "e"},         {"\xC4\xA0", "t"},
                             {"\xC4\xA0t", "h"}, {"\xC4\xA0th", "e"}, {"a", "n"},
                             {"an", "d"},        {"i", "n"},          {"in", "g"},
                             {"\xC4\xA0", "a"},  {"e", "r"}};
  std::string enc = "{", bpe = "#version: 0.2\n";
  int id = 0;
  auto add = [&](const std::string& token) {
    std::string escaped;
    for (char c : token) {
      if (c == '"' || c == '\\') escaped += '\\';
      escaped += c;
    }
    enc += (id ? ",\"" : "\"") + escaped + "\":" + std::to_string(id);
    ++id;
  };
  for (unsigned b = 0; b < 256; ++b)
    add(byte_symbol(b));
  for (const auto& m : merges) {
    bpe += std::string(m[0]) + " " + m[1] + "\n";
    add(std::string(m[0]) + m[1]);
  }
  add("<|endoftext|>");
  return {enc + "}", bpe};
}

}  // namespace kiln_fuzz
