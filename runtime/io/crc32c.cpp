// CRC-32C (Castagnoli), the checksum of kiln's shards and checkpoints: SSE4.2's crc32 instruction
// in three interleaved chains where the CPU has it, slicing-by-8 tables elsewhere.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "kiln/io.hpp"
#include "runtime/io/io_internal.hpp"

namespace kiln {
namespace {

// ---- CRC-32C ------------------------------------------------------------------------------------

constexpr std::uint32_t kCrc32cPoly = 0x82F63B78u;  // 0x1EDC6F41 bit-reversed

// Slicing-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes, so eight input
// bytes fold into the CRC with eight independent lookups per step.
constexpr std::array<std::array<std::uint32_t, 256>, 8> make_crc_tables() {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    for (int i = 0; i < 8; ++i)
      c = (c >> 1) ^ ((c & 1u) ? kCrc32cPoly : 0u);
    t[0][b] = c;
  }
  for (int k = 1; k < 8; ++k)
    for (std::uint32_t b = 0; b < 256; ++b)
      t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
  return t;
}
constexpr auto kCrcTables = make_crc_tables();

std::uint32_t crc32c_table(const unsigned char* p, std::size_t n, std::uint32_t c) noexcept {
  const auto& t = kCrcTables;
  while (n >= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
    v ^= c;
    c = t[7][v & 0xFF] ^ t[6][(v >> 8) & 0xFF] ^ t[5][(v >> 16) & 0xFF] ^ t[4][(v >> 24) & 0xFF] ^
        t[3][(v >> 32) & 0xFF] ^ t[2][(v >> 40) & 0xFF] ^ t[1][(v >> 48) & 0xFF] ^ t[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n--)
    c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFF];
  return c;
}

#if defined(__x86_64__)
// The crc32 instruction has a latency of 3 cycles but issues every cycle, so one dependent chain
// runs at a third of its speed. Three chains over three consecutive blocks of kBlock bytes run
// together, and their registers are joined by linearity:
//   reg(init, A B C) = M^2K reg(init, A)  ^  M^K reg(0, B)  ^  reg(0, C)
// where M^K advances a register over K zero bytes. M^K is linear in the 32 register bits, so it is
// applied with four 256-entry tables built from the images of the 32 basis vectors.
constexpr std::size_t kBlock = 4096;

struct ZeroShift {
  std::array<std::array<std::uint32_t, 256>, 4> t{};
  explicit ZeroShift(std::size_t bytes) {
    const std::vector<unsigned char> zeros(bytes, 0);
    std::uint32_t image[32];
    for (int i = 0; i < 32; ++i)
      image[i] = crc32c_table(zeros.data(), bytes, 1u << i);
    for (int j = 0; j < 4; ++j)
      for (std::uint32_t b = 0; b < 256; ++b) {
        std::uint32_t v = 0;
        for (int k = 0; k < 8; ++k)
          if (b & (1u << k)) v ^= image[8 * j + k];
        t[j][b] = v;
      }
  }
  std::uint32_t operator()(std::uint32_t x) const noexcept {
    return t[0][x & 0xFF] ^ t[1][(x >> 8) & 0xFF] ^ t[2][(x >> 16) & 0xFF] ^ t[3][x >> 24];
  }
};

__attribute__((target("sse4.2"))) std::uint32_t crc32c_sse42(const unsigned char* p, std::size_t n,
                                                             std::uint32_t c) noexcept {
  if (n >= 3 * kBlock) {
    static const ZeroShift shift1(kBlock), shift2(2 * kBlock);
    while (n >= 3 * kBlock) {
      std::uint64_t a = c, b = 0, d = 0;
      for (std::size_t i = 0; i < kBlock; i += 8) {
        std::uint64_t va, vb, vd;
        std::memcpy(&va, p + i, 8);
        std::memcpy(&vb, p + kBlock + i, 8);
        std::memcpy(&vd, p + 2 * kBlock + i, 8);
        a = _mm_crc32_u64(a, va);
        b = _mm_crc32_u64(b, vb);
        d = _mm_crc32_u64(d, vd);
      }
      c = shift2(static_cast<std::uint32_t>(a)) ^ shift1(static_cast<std::uint32_t>(b)) ^
          static_cast<std::uint32_t>(d);
      p += 3 * kBlock;
      n -= 3 * kBlock;
    }
  }
  std::uint64_t c64 = c;
  while (n >= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = _mm_crc32_u64(c64, v);
    p += 8;
    n -= 8;
  }
  c = static_cast<std::uint32_t>(c64);
  while (n--)
    c = _mm_crc32_u8(c, *p++);
  return c;
}
const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  const std::uint32_t c = ~crc;
#if defined(__x86_64__)
  if (kHaveSse42) return ~crc32c_sse42(p, size, c);
#endif
  return ~crc32c_table(p, size, c);
}

std::uint32_t impl::crc32c_portable(const void* data, std::size_t size,
                                    std::uint32_t crc) noexcept {
  return ~crc32c_table(static_cast<const unsigned char*>(data), size, ~crc);
}

}  // namespace kiln
