// Internals of runtime/io shared with other runtime sources and the tests.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kiln/export.h"

namespace kiln::impl {

// crc32c() without the hardware path, so a test can check that both paths agree.
KILN_API std::uint32_t crc32c_portable(const void* data, std::size_t size,
                                       std::uint32_t crc = 0) noexcept;

}  // namespace kiln::impl
