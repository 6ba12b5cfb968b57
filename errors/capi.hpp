// The guard every extern "C" entry runs its body in: exceptions never cross the C ABI. A
// kiln::Error becomes its status; std::bad_alloc becomes out_of_memory; anything else becomes
// internal_error. The message is kept per thread for kiln_last_error().
#pragma once

#include <exception>
#include <new>
#include <string>

#include "kiln/core.h"
#include "kiln/error.hpp"
#include "kiln/export.h"

namespace kiln::impl {

// Records `message` as the calling thread's last error.
KILN_API void set_last_error(const std::string& message);

template <typename Body>
kiln_status_t capi_guard(Body&& body) noexcept {
  try {
    body();
    return KILN_STATUS_OK;
  } catch (const Error& e) {
    set_last_error(e.what());
    return static_cast<kiln_status_t>(e.status());
  } catch (const std::bad_alloc&) {
    set_last_error("out of host memory");
    return KILN_STATUS_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(std::string("internal error: ") + e.what());
    return KILN_STATUS_INTERNAL_ERROR;
  } catch (...) {
    set_last_error("internal error: unknown exception");
    return KILN_STATUS_INTERNAL_ERROR;
  }
}

}  // namespace kiln::impl
