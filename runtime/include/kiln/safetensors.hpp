// The safetensors format (Hugging Face's weight files): read, validate, convert to float, write.
//
// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON (padded with spaces),
// then the data section. The JSON maps each tensor name to {"dtype": "F32", "shape": [768, 2304],
// "data_offsets": [begin, end]} (byte offsets into the data section, little-endian elements,
// row-major) and may hold "__metadata__": {string: string}.
//
//   kiln::SafetensorsReader f("gpt2/model.safetensors");
//   for (const auto& t : f.tensors()) ...               // t.name, t.dtype, t.shape, t.numel()
//   std::vector<float> w = f.read_float("h.0.attn.c_attn.weight");   // F32 / F16 / BF16 / F64
//
//   std::vector<kiln::SafetensorsEntry> out = {
//       {.name = "wte.weight", .dtype = kiln::SafeDtype::BF16, .shape = {V, C}, .data = wte}};
//   kiln::write_safetensors("ckpt/model.safetensors", out, {{"format", "pt"}});
//
// The reader checks everything before handing out a byte: the header length is sane (at most
// 100 MB, within the file), the JSON is an object without duplicate names, every dtype is known,
// every shape is a list of non-negative integers whose byte size equals its data_offsets span,
// offsets lie within the data section, and the tensors tile the data section exactly (no overlap,
// no hole, no trailing bytes, as the format requires). Every failure is kiln::Error data_error
// naming the file and the tensor (io_error when the file cannot be read).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kiln/error.hpp"
#include "kiln/export.h"
#include "kiln/io.hpp"

namespace kiln {

// The format's dtypes. Every one can be listed and read raw; F32, F16, BF16 and F64 also as float.
enum class SafeDtype {
  BOOL,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  I64,
  U64,
  F64
};

KILN_API std::string_view safe_dtype_name(SafeDtype d) noexcept;  // "F32", "BF16", ...
KILN_API std::size_t safe_dtype_size(SafeDtype d) noexcept;       // bytes per element

struct SafetensorsTensorInfo {
  std::string name;
  SafeDtype dtype;
  std::vector<std::int64_t> shape;  // [] for a scalar
  std::uint64_t begin, end;         // byte range in the data section
  std::int64_t numel() const noexcept {
    std::int64_t n = 1;
    for (const auto d : shape)
      n *= d;
    return n;
  }
};

class KILN_API SafetensorsReader {
 public:
  // Maps the file and validates its header and layout (see above).
  explicit SafetensorsReader(const std::filesystem::path& path);

  // Every tensor, in the order of their data.
  const std::vector<SafetensorsTensorInfo>& tensors() const noexcept { return tensors_; }
  bool contains(std::string_view name) const;
  // data_error naming the file and the tensor when there is none of that name.
  const SafetensorsTensorInfo& info(std::string_view name) const;
  // The tensor's elements converted to float (row-major, numel() of them). not_supported for
  // dtypes other than F32, F16, BF16, F64.
  std::vector<float> read_float(std::string_view name) const;
  // The same into `out`, which must hold exactly numel() floats (invalid_argument otherwise).
  void read_float(std::string_view name, std::span<float> out) const;
  // The tensor's bytes as stored (little-endian elements of its dtype).
  std::span<const std::byte> raw(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  const std::filesystem::path& path() const noexcept { return file_.path(); }

 private:
  MappedFile file_;
  std::size_t data_offset_ = 0;  // where the data section starts in the file
  std::vector<SafetensorsTensorInfo> tensors_;
  std::unordered_map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: either `data` (numel floats, converted to `dtype`, which must then be F32,
// F16, BF16 or F64; rounding to nearest even) or `raw` (exactly numel x safe_dtype_size(dtype)
// bytes, stored as they are). Set one of the two.
struct SafetensorsEntry {
  std::string name;
  SafeDtype dtype = SafeDtype::F32;
  std::vector<std::int64_t> shape;
  std::span<const float> data = {};
  std::span<const std::byte> raw = {};
};

// Writes `tensors` and `metadata` to `path` atomically (kiln::AtomicFileWriter). Names must be
// unique, non-empty and not "__metadata__". Tensors are laid out largest element size first (then
// in the given order), so every tensor's data is aligned to its element size for readers that map
// the file; the header is padded so the data section starts at a multiple of 8. invalid_argument
// (before anything is written) for a bad entry; io_error when the file cannot be written.
KILN_API void write_safetensors(const std::filesystem::path& path,
                                std::span<const SafetensorsEntry> tensors,
                                const std::map<std::string, std::string>& metadata = {});

}  // namespace kiln
