// A thin C++ layer over cuDNN's backend API (cudnnBackend*) for the attention graphs of
// attention_cudnn_graph.hpp: descriptors that destroy themselves, a graph turned into finalized
// operation descriptors, an engine chosen by cuDNN's heuristics, and an execution. What is cached
// and bound is attention_cudnn.cpp's business.
#pragma once

#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/attention/attention_cudnn_graph.hpp"

namespace kiln::impl::cudnn_attn {

// cuDNN's status string plus its last-error detail (which names the failing check).
std::string cudnn_message(cudnnStatus_t st);
[[noreturn]] void cudnn_fail(cudnnStatus_t st, const char* expr, const char* file, int line);

#define KILN_CUDNN_CALL(expr)                                                     \
  do {                                                                            \
    const cudnnStatus_t kiln_cst_ = (expr);                                       \
    if (kiln_cst_ != CUDNN_STATUS_SUCCESS)                                        \
      ::kiln::impl::cudnn_attn::cudnn_fail(kiln_cst_, #expr, __FILE__, __LINE__); \
  } while (0)

// One cudnnBackendDescriptor_t, destroyed with its owner.
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) {
    KILN_CUDNN_CALL(cudnnBackendCreateDescriptor(type, &d_));
  }
  ~Desc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  Desc(Desc&& other) noexcept : d_(std::exchange(other.d_, nullptr)) {}
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  Desc& operator=(Desc&&) = delete;

  cudnnBackendDescriptor_t get() const { return d_; }
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
           const void* values) {
    KILN_CUDNN_CALL(cudnnBackendSetAttribute(d_, name, type, count, values));
  }
  void set_desc(cudnnBackendAttributeName_t name, const Desc& other) {
    const cudnnBackendDescriptor_t h = other.get();
    set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &h);
  }
  void set_data_type(cudnnBackendAttributeName_t name, cudnnDataType_t t) {
    set(name, CUDNN_TYPE_DATA_TYPE, 1, &t);
  }
  void finalize() { KILN_CUDNN_CALL(cudnnBackendFinalize(d_)); }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

// The operations of `g` as finalized backend descriptors (appended to `keep`), then the
// operation graph (returned, also in `keep`).
cudnnBackendDescriptor_t build_operation_graph(const Graph& g, cudnnHandle_t handle,
                                               std::vector<Desc>& keep);

// The engine cuDNN's heuristics chose for an operation graph, or why there is none.
struct Engine {
  bool supported = false;
  std::string refusal;           // why cuDNN has no engine (when !supported)
  std::size_t workspace = 0;     // bytes the plan needs
  std::unique_ptr<Desc> config;  // the engine configuration the plan references
  std::unique_ptr<Desc> plan;    // the finalized execution plan
};
// The engine configurations cuDNN's heuristics (mode A, then the fallback list) propose, best
// first; an execution plan from the first that accepts the graph (and, with `deterministic`,
// carries no non-deterministic note).
Engine choose_engine(cudnnHandle_t handle, cudnnBackendDescriptor_t op_graph, bool deterministic);

// Runs `plan` on the handle's stream with the tensors `uids` at `ptrs`.
void execute_plan(cudnnHandle_t handle, const Desc& plan, std::vector<int64_t>& uids,
                  std::vector<void*>& ptrs, void* workspace);

}  // namespace kiln::impl::cudnn_attn
