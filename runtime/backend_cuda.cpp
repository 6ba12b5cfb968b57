// The cuda backend lands with the kernels' C++ APIs; until then asking for it is not_supported.
#include <memory>

#include "kernels/common/check.hpp"
#include "kiln/backend.hpp"

namespace kiln::impl {

std::shared_ptr<Backend> make_cuda_backend_impl(int ordinal) {
  KILN_CHECK(false, Status::not_supported, "the cuda backend is not built yet (device ", ordinal,
             ")");
  return nullptr;
}

}  // namespace kiln::impl
