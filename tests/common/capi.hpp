// Helpers of the C ABI argument tests (tests/cpu/<op>_capi_test.cpp). The checks run before any
// CUDA call, so these tests need no GPU; the pointers they pass are host addresses that are never
// dereferenced (every call fails its checks, or has nothing to do and launches nothing).
#pragma once

#include <catch2/catch.hpp>

#include <cstddef>
#include <string>

#include "kiln/core.h"

namespace kiln::test {

// A host address `offset` bytes into a 256-byte-aligned arena of 64 KiB: aligned or misaligned
// pointers on demand, distinct or overlapping as a test needs.
inline void* arena_at(std::size_t offset) {
  alignas(256) static unsigned char arena[1 << 16];
  return arena + offset;
}

inline float* arena_f32(std::size_t offset) {
  return static_cast<float*>(arena_at(offset));
}

// The call was refused as an invalid argument, with a message containing `needle`.
inline void expect_invalid(kiln_status_t status, const std::string& needle) {
  CHECK(status == KILN_STATUS_INVALID_ARGUMENT);
  CHECK_THAT(std::string(kiln_last_error()), Catch::Contains(needle));
}

}  // namespace kiln::test
