#include "kiln/backend.hpp"

#include "errors/check.hpp"

namespace kiln {

namespace impl {
std::shared_ptr<Backend> make_cuda_backend_impl(int ordinal);
}  // namespace impl

const char* backend_kind_name(BackendKind kind) {
  return kind == BackendKind::cpu ? "cpu" : "cuda";
}

Backend::~Backend() = default;

void Backend::begin_capture() {
  KILN_CHECK(false, Status::not_supported, description(), " cannot capture CUDA graphs");
}

int Backend::end_capture() {
  KILN_CHECK(false, Status::not_supported, description(), " cannot capture CUDA graphs");
  return -1;
}

void Backend::replay(int) {
  KILN_CHECK(false, Status::not_supported, description(), " cannot replay CUDA graphs");
}

void Backend::release_graph(int) noexcept {}

std::shared_ptr<Backend> make_backend(BackendKind kind, int ordinal) {
  if (kind == BackendKind::cpu) return make_cpu_backend(DType::f32, 0);
  return impl::make_cuda_backend_impl(ordinal);
}

BackendKind resolve_backend_kind(std::string_view name, std::string* why_not_cuda) {
  if (why_not_cuda) why_not_cuda->clear();
  if (name == "cpu") return BackendKind::cpu;
  if (name == "cuda") return BackendKind::cuda;
  KILN_CHECK_ARG(name == "auto", "unknown backend '", name, "' (known: auto, cuda, cpu)");
  int count = 0;
  if (kiln_device_count(&count) == KILN_STATUS_OK && count > 0) return BackendKind::cuda;
  if (why_not_cuda) *why_not_cuda = kiln_last_error();
  return BackendKind::cpu;
}

std::shared_ptr<Backend> make_backend(std::string_view name, int ordinal, int threads,
                                      std::string* why_not_cuda) {
  if (resolve_backend_kind(name, why_not_cuda) == BackendKind::cpu) {
    return make_cpu_backend(DType::f32, threads);
  }
  return impl::make_cuda_backend_impl(ordinal);
}

}  // namespace kiln
