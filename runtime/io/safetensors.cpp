// safetensors: header parsing and validation, conversion to float, and the writer.
#include "kiln/safetensors.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <set>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "errors/check.hpp"
#include "runtime/data/le.hpp"

// Tensor data is little-endian in the format and used in place here.
static_assert(std::endian::native == std::endian::little,
              "safetensors I/O assumes a little-endian host");

namespace kiln {
namespace {

#define KILN_DATA_CHECK(cond, ...) KILN_CHECK(cond, ::kiln::Status::data_error, __VA_ARGS__)

// The format's own limit (the reference implementation refuses larger headers).
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeName {
  SafeDtype dtype;
  std::string_view name;
  std::size_t size;
};
constexpr std::array<DtypeName, 15> kDtypes = {{
    {SafeDtype::BOOL, "BOOL", 1},
    {SafeDtype::U8, "U8", 1},
    {SafeDtype::I8, "I8", 1},
    {SafeDtype::F8_E5M2, "F8_E5M2", 1},
    {SafeDtype::F8_E4M3, "F8_E4M3", 1},
    {SafeDtype::I16, "I16", 2},
    {SafeDtype::U16, "U16", 2},
    {SafeDtype::F16, "F16", 2},
    {SafeDtype::BF16, "BF16", 2},
    {SafeDtype::I32, "I32", 4},
    {SafeDtype::U32, "U32", 4},
    {SafeDtype::F32, "F32", 4},
    {SafeDtype::I64, "I64", 8},
    {SafeDtype::U64, "U64", 8},
    {SafeDtype::F64, "F64", 8},
}};

const DtypeName* find_dtype(std::string_view name) {
  for (const auto& d : kDtypes)
    if (d.name == name) return &d;
  return nullptr;
}

bool is_float_dtype(SafeDtype d) {
  return d == SafeDtype::F32 || d == SafeDtype::F16 || d == SafeDtype::BF16 || d == SafeDtype::F64;
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// numel x element size, or -1 on overflow past 2^63.
std::int64_t byte_size(const std::vector<std::int64_t>& shape, std::size_t elem) {
  std::int64_t n = static_cast<std::int64_t>(elem);
  for (const auto d : shape) {
    if (d != 0 && n > std::numeric_limits<std::int64_t>::max() / d) return -1;
    n *= d;
  }
  return n;
}

}  // namespace

std::string_view safe_dtype_name(SafeDtype d) noexcept {
  for (const auto& x : kDtypes)
    if (x.dtype == d) return x.name;
  return "?";
}

std::size_t safe_dtype_size(SafeDtype d) noexcept {
  for (const auto& x : kDtypes)
    if (x.dtype == d) return x.size;
  return 0;
}

// ---- reader -------------------------------------------------------------------------------------

SafetensorsReader::SafetensorsReader(const std::filesystem::path& path) : file_(path) {
  const std::string name = path.string();
  const std::uint64_t size = file_.size();
  const auto* bytes = reinterpret_cast<const unsigned char*>(file_.data());
  KILN_DATA_CHECK(size >= 8, "safetensors file '", name, "' is truncated: ", size,
                  " bytes, shorter than the 8-byte header length");
  const std::uint64_t n = impl::load_le64(bytes);
  KILN_DATA_CHECK(n <= kMaxHeaderBytes, "safetensors file '", name, "' declares a header of ", n,
                  " bytes, more than the format's limit of ", kMaxHeaderBytes,
                  " (not a safetensors file?)");
  KILN_DATA_CHECK(n <= size - 8, "safetensors file '", name, "' is truncated: its header of ", n,
                  " bytes does not fit in the ", size - 8, " bytes after the length");
  KILN_DATA_CHECK(n >= 2 && bytes[8] == '{', "safetensors file '", name,
                  "': the header does not start with '{' (not a safetensors file?)");
  data_offset_ = 8 + static_cast<std::size_t>(n);
  const std::uint64_t data_size = size - data_offset_;

  // Duplicate names would make the file mean two things; nlohmann keeps one silently, so catch
  // them while parsing.
  std::set<std::string> seen;
  std::string duplicate;
  const nlohmann::json::parser_callback_t on_event =
      [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
        if (ev == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string() &&
            !seen.insert(parsed.get<std::string>()).second && duplicate.empty())
          duplicate = parsed.get<std::string>();
        return true;
      };
  const std::string_view text(reinterpret_cast<const char*>(bytes + 8),
                              static_cast<std::size_t>(n));
  nlohmann::json header = nlohmann::json::parse(text.begin(), text.end(), on_event,
                                                /*allow_exceptions=*/false);
  KILN_DATA_CHECK(!header.is_discarded(), "safetensors file '", name,
                  "': the header is not valid JSON");
  KILN_DATA_CHECK(header.is_object(), "safetensors file '", name,
                  "': the header is not a JSON object");
  KILN_DATA_CHECK(duplicate.empty(), "safetensors file '", name, "': the header names '", duplicate,
                  "' twice");

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      KILN_DATA_CHECK(value.is_object(), "safetensors file '", name,
                      "': __metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        KILN_DATA_CHECK(mv.is_string(), "safetensors file '", name, "': __metadata__ value of '",
                        mk, "' is not a string");
        metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    const std::string where = "safetensors file '" + name + "', tensor '" + key + "'";
    KILN_DATA_CHECK(!key.empty(), "safetensors file '", name, "' has a tensor with an empty name");
    KILN_DATA_CHECK(value.is_object(), where, ": its entry is not an object");
    const auto dt = value.find("dtype");
    const auto sh = value.find("shape");
    const auto off = value.find("data_offsets");
    KILN_DATA_CHECK(dt != value.end() && sh != value.end() && off != value.end(), where,
                    ": needs dtype, shape and data_offsets");
    KILN_DATA_CHECK(dt->is_string(), where, ": dtype is not a string");
    const DtypeName* d = find_dtype(dt->get<std::string>());
    KILN_DATA_CHECK(d != nullptr, where, ": unknown dtype '", dt->get<std::string>(), "'");
    KILN_DATA_CHECK(sh->is_array(), where, ": shape is not a list");
    SafetensorsTensorInfo t{key, d->dtype, {}, 0, 0};
    for (const auto& dim : *sh) {
      KILN_DATA_CHECK(dim.is_number_integer() && dim.get<std::int64_t>() >= 0, where, ": shape ",
                      sh->dump(), " is not a list of non-negative integers");
      t.shape.push_back(dim.get<std::int64_t>());
    }
    KILN_DATA_CHECK(off->is_array() && off->size() == 2 && (*off)[0].is_number_unsigned() &&
                        (*off)[1].is_number_unsigned(),
                    where, ": data_offsets ", off->dump(), " is not [begin, end]");
    t.begin = (*off)[0].get<std::uint64_t>();
    t.end = (*off)[1].get<std::uint64_t>();
    KILN_DATA_CHECK(t.begin <= t.end && t.end <= data_size, where, ": data_offsets [", t.begin,
                    ", ", t.end, "] lie outside the ", data_size, "-byte data section",
                    t.end > data_size ? " (truncated file?)" : "");
    const std::int64_t need = byte_size(t.shape, d->size);
    KILN_DATA_CHECK(need >= 0 && static_cast<std::uint64_t>(need) == t.end - t.begin, where,
                    ": shape ", shape_string(t.shape), " of ", d->name, " needs ", need,
                    " bytes but data_offsets span ", t.end - t.begin);
    tensors_.push_back(std::move(t));
  }

  // The tensors must tile the data section: sorted by offset, each starts where the last ended.
  std::sort(tensors_.begin(), tensors_.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t at = 0;
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    const auto& t = tensors_[i];
    KILN_DATA_CHECK(t.begin >= at, "safetensors file '", name, "': tensor '", t.name, "' (bytes [",
                    t.begin, ", ", t.end, ")) overlaps tensor '", tensors_[i - 1].name,
                    "' (bytes [", tensors_[i - 1].begin, ", ", tensors_[i - 1].end, "))");
    KILN_DATA_CHECK(t.begin == at, "safetensors file '", name, "': bytes [", at, ", ", t.begin,
                    ") of the data section belong to no tensor (a hole before '", t.name, "')");
    at = t.end;
  }
  KILN_DATA_CHECK(at == data_size, "safetensors file '", name, "': the last ", data_size - at,
                  " bytes of the data section belong to no tensor");
  for (std::size_t i = 0; i < tensors_.size(); ++i)
    index_.emplace(tensors_[i].name, i);
}

bool SafetensorsReader::contains(std::string_view name) const {
  return index_.count(std::string(name)) > 0;
}

const SafetensorsTensorInfo& SafetensorsReader::info(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  KILN_DATA_CHECK(it != index_.end(), "safetensors file '", path().string(),
                  "' has no tensor named '", name, "'");
  return tensors_[it->second];
}

std::span<const std::byte> SafetensorsReader::raw(std::string_view name) const {
  const SafetensorsTensorInfo& t = info(name);
  return file_.bytes().subspan(data_offset_ + t.begin, t.end - t.begin);
}

void SafetensorsReader::read_float(std::string_view name, std::span<float> out) const {
  const SafetensorsTensorInfo& t = info(name);
  KILN_CHECK(is_float_dtype(t.dtype), Status::not_supported, "safetensors file '", path().string(),
             "', tensor '", name, "': dtype ", safe_dtype_name(t.dtype),
             " cannot be read as float (F32, F16, BF16, F64 can)");
  KILN_CHECK_ARG(static_cast<std::int64_t>(out.size()) == t.numel(),
                 "SafetensorsReader::read_float: '", name, "' has ", t.numel(), " elements (shape ",
                 shape_string(t.shape), ") but out holds ", out.size());
  const std::byte* p = file_.data() + data_offset_ + t.begin;
  const std::size_t n = out.size();
  switch (t.dtype) {
    case SafeDtype::F32:
      std::memcpy(out.data(), p, n * sizeof(float));
      break;
    case SafeDtype::F64:
      for (std::size_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, p + 8 * i, 8);
        out[i] = static_cast<float>(v);
      }
      break;
    case SafeDtype::F16:
      for (std::size_t i = 0; i < n; ++i) {
        __half h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = __half2float(h);
      }
      break;
    case SafeDtype::BF16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t b;
        std::memcpy(&b, p + 2 * i, 2);
        out[i] = std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);  // exact widening
      }
      break;
    default:
      break;
  }
}

std::vector<float> SafetensorsReader::read_float(std::string_view name) const {
  std::vector<float> out(static_cast<std::size_t>(info(name).numel()));
  read_float(name, out);
  return out;
}

// ---- writer -------------------------------------------------------------------------------------

void write_safetensors(const std::filesystem::path& path, std::span<const SafetensorsEntry> tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string file = path.string();
  // Validate everything before creating the file.
  std::unordered_set<std::string> names;
  std::vector<std::size_t> order(tensors.size());
  std::vector<std::uint64_t> sizes(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsEntry& t = tensors[i];
    order[i] = i;
    KILN_CHECK_ARG(!t.name.empty() && t.name != "__metadata__", "write_safetensors '", file,
                   "': tensor ", i, " has the reserved or empty name '", t.name, "'");
    KILN_CHECK_ARG(names.insert(t.name).second, "write_safetensors '", file, "': tensor name '",
                   t.name, "' is given twice");
    KILN_CHECK_ARG(safe_dtype_size(t.dtype) > 0, "write_safetensors '", file, "', tensor '", t.name,
                   "': unknown dtype");
    for (const auto d : t.shape)
      KILN_CHECK_ARG(d >= 0, "write_safetensors '", file, "', tensor '", t.name, "': shape ",
                     shape_string(t.shape), " has a negative dimension");
    const std::int64_t bytes = byte_size(t.shape, safe_dtype_size(t.dtype));
    const std::int64_t numel = byte_size(t.shape, 1);
    KILN_CHECK_ARG(bytes >= 0, "write_safetensors '", file, "', tensor '", t.name, "': shape ",
                   shape_string(t.shape), " is too large");
    const bool has_data = !t.data.empty(), has_raw = !t.raw.empty();
    KILN_CHECK_ARG(!(has_data && has_raw), "write_safetensors '", file, "', tensor '", t.name,
                   "': set data or raw, not both");
    if (has_raw || !is_float_dtype(t.dtype)) {
      KILN_CHECK_ARG(static_cast<std::int64_t>(t.raw.size()) == bytes && !has_data,
                     "write_safetensors '", file, "', tensor '", t.name, "': raw holds ",
                     t.raw.size(), " bytes; shape ", shape_string(t.shape), " of ",
                     safe_dtype_name(t.dtype), " needs ", bytes);
    } else {
      KILN_CHECK_ARG(static_cast<std::int64_t>(t.data.size()) == numel, "write_safetensors '", file,
                     "', tensor '", t.name, "': data holds ", t.data.size(), " floats; shape ",
                     shape_string(t.shape), " has ", numel, " elements");
    }
    sizes[i] = static_cast<std::uint64_t>(bytes);
  }
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return safe_dtype_size(tensors[a].dtype) > safe_dtype_size(tensors[b].dtype);
  });

  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const std::size_t i : order) {
    const SafetensorsEntry& t = tensors[i];
    header[t.name] = {{"dtype", safe_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + sizes[i]}}};
    offset += sizes[i];
  }
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');

  AtomicFileWriter w(path);
  unsigned char len[8];
  impl::store_le64(len, text.size());
  w.write(len, 8);
  w.write(text);
  std::vector<unsigned char> staging;
  for (const std::size_t i : order) {
    const SafetensorsEntry& t = tensors[i];
    if (!t.raw.empty() || !is_float_dtype(t.dtype)) {
      w.write(t.raw.data(), t.raw.size());
      continue;
    }
    constexpr std::size_t kChunk = 1 << 16;
    for (std::size_t off = 0; off < t.data.size(); off += kChunk) {
      const std::size_t n = std::min(kChunk, t.data.size() - off);
      const float* src = t.data.data() + off;
      staging.resize(n * safe_dtype_size(t.dtype));
      unsigned char* dst = staging.data();
      switch (t.dtype) {
        case SafeDtype::F32:
          std::memcpy(dst, src, n * 4);
          break;
        case SafeDtype::F64:
          for (std::size_t k = 0; k < n; ++k) {
            const double v = src[k];
            std::memcpy(dst + 8 * k, &v, 8);
          }
          break;
        case SafeDtype::F16:
          for (std::size_t k = 0; k < n; ++k) {
            const __half h = __float2half_rn(src[k]);
            std::memcpy(dst + 2 * k, &h, 2);
          }
          break;
        case SafeDtype::BF16:
          for (std::size_t k = 0; k < n; ++k) {
            const __nv_bfloat16 h = __float2bfloat16_rn(src[k]);
            std::memcpy(dst + 2 * k, &h, 2);
          }
          break;
        default:
          break;
      }
      w.write(dst, staging.size());
    }
  }
  w.commit();
}

}  // namespace kiln
