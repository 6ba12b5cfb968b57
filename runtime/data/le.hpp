// Little-endian loads and stores of kiln's file formats (internal). memcpy keeps them free of
// alignment and aliasing assumptions; on little-endian hosts they compile to plain moves.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace kiln::impl {

template <typename U>
inline U to_le(U v) noexcept {
  if constexpr (std::endian::native == std::endian::big) {
    if constexpr (sizeof(U) == 2) return static_cast<U>(__builtin_bswap16(v));
    if constexpr (sizeof(U) == 4) return static_cast<U>(__builtin_bswap32(v));
    if constexpr (sizeof(U) == 8) return static_cast<U>(__builtin_bswap64(v));
  }
  return v;
}

inline void store_le16(unsigned char* p, std::uint16_t v) noexcept {
  v = to_le(v);
  std::memcpy(p, &v, 2);
}
inline void store_le32(unsigned char* p, std::uint32_t v) noexcept {
  v = to_le(v);
  std::memcpy(p, &v, 4);
}
inline void store_le64(unsigned char* p, std::uint64_t v) noexcept {
  v = to_le(v);
  std::memcpy(p, &v, 8);
}
inline std::uint16_t load_le16(const unsigned char* p) noexcept {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return to_le(v);
}
inline std::uint32_t load_le32(const unsigned char* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return to_le(v);
}
inline std::uint64_t load_le64(const unsigned char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return to_le(v);
}

}  // namespace kiln::impl
