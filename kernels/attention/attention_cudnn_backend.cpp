// The cudnnBackend* layer of the cuDNN attention backend (attention_cudnn_backend.hpp).
#include "kernels/attention/attention_cudnn_backend.hpp"

#include <algorithm>
#include <array>

#include "errors/check.hpp"
#include "errors/check_libs.hpp"

namespace kiln::impl::cudnn_attn {

std::string cudnn_message(cudnnStatus_t st) {
  std::array<char, 2048> detail{};
  cudnnGetLastErrorString(detail.data(), detail.size());
  std::string m = cudnnGetErrorString(st);
  if (detail[0] != '\0') m += cat(" (", detail.data(), ")");
  return m;
}

[[noreturn]] void cudnn_fail(cudnnStatus_t st, const char* expr, const char* file, int line) {
  throw_library_error(Status::cudnn_error, "cuDNN", static_cast<int>(st), cudnn_message(st).c_str(),
                      expr, file, line);
}

namespace {

cudnnDataType_t to_cudnn(DType t) {
  switch (t) {
    case DType::bf16:
      return CUDNN_DATA_BFLOAT16;
    case DType::f32:
      return CUDNN_DATA_FLOAT;
    case DType::i32:
      return CUDNN_DATA_INT32;
    case DType::boolean:
      return CUDNN_DATA_BOOLEAN;
  }
  return CUDNN_DATA_FLOAT;
}

cudnnPointwiseMode_t to_cudnn(Pw m) {
  switch (m) {
    case Pw::add:
      return CUDNN_POINTWISE_ADD;
    case Pw::sub:
      return CUDNN_POINTWISE_SUB;
    case Pw::mul:
      return CUDNN_POINTWISE_MUL;
    case Pw::div:
      return CUDNN_POINTWISE_DIV;
    case Pw::exp:
      return CUDNN_POINTWISE_EXP;
    case Pw::log:
      return CUDNN_POINTWISE_LOG;
    case Pw::identity:
      return CUDNN_POINTWISE_IDENTITY;
    case Pw::cmp_ge:
      return CUDNN_POINTWISE_CMP_GE;
    case Pw::gen_index:
      return CUDNN_POINTWISE_GEN_INDEX;
    case Pw::binary_select:
      return CUDNN_POINTWISE_BINARY_SELECT;
  }
  return CUDNN_POINTWISE_IDENTITY;
}

Desc make_tensor(const Tensor& t) {
  Desc d(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  d.set_data_type(CUDNN_ATTR_TENSOR_DATA_TYPE, to_cudnn(t.dtype));
  d.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, t.dim.data());
  d.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, t.stride.data());
  d.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &t.uid);
  // Every address kiln binds is 16-byte aligned (caller tensors by contract, the workspace parts
  // by layout), which the tensor-core engines require.
  const int64_t alignment = 16;
  d.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
  const bool is_virtual = t.is_virtual();
  d.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
  if (t.by_value()) {
    const bool by_value = true;
    d.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
  }
  d.finalize();
  return d;
}

const Desc& tensor_desc(const std::vector<std::pair<int64_t, std::size_t>>& index,
                        const std::vector<Desc>& keep, int64_t uid) {
  for (const auto& [u, at] : index)
    if (u == uid) return keep[at];
  KILN_CHECK(false, Status::internal_error, "cuDNN attention graph: uid ", uid, " has no tensor");
  return keep.front();  // unreachable
}

}  // namespace

cudnnBackendDescriptor_t build_operation_graph(const Graph& g, cudnnHandle_t handle,
                                               std::vector<Desc>& keep) {
  keep.reserve(keep.size() + g.tensors.size() + 2 * g.nodes.size() + 1);
  std::vector<std::pair<int64_t, std::size_t>> index;
  for (const Tensor& t : g.tensors) {
    keep.push_back(make_tensor(t));
    index.emplace_back(t.uid, keep.size() - 1);
  }
  std::vector<cudnnBackendDescriptor_t> ops;
  for (const Node& n : g.nodes) {
    const auto in = [&](std::size_t i) -> const Desc& { return tensor_desc(index, keep, n.in[i]); };
    const Desc& out = tensor_desc(index, keep, n.out);
    switch (n.kind) {
      case OpKind::matmul: {
        Desc mm(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
        mm.set_data_type(CUDNN_ATTR_MATMUL_COMP_TYPE, to_cudnn(n.math));
        mm.finalize();
        Desc op(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
        op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_ADESC, in(0));
        op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_BDESC, in(1));
        op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_CDESC, out);
        op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_DESC, mm);
        op.finalize();
        keep.push_back(std::move(mm));
        keep.push_back(std::move(op));
        break;
      }
      case OpKind::pointwise: {
        Desc pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
        const cudnnPointwiseMode_t mode = to_cudnn(n.pw);
        pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
        pw.set_data_type(CUDNN_ATTR_POINTWISE_MATH_PREC, to_cudnn(n.math));
        if (n.axis >= 0) {
          const int64_t axis = n.axis;
          pw.set(CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
        }
        pw.finalize();
        Desc op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
        op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw);
        op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, in(0));
        if (n.in.size() > 1) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, in(1));
        if (n.in.size() > 2) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, in(2));
        op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, out);
        op.finalize();
        keep.push_back(std::move(pw));
        keep.push_back(std::move(op));
        break;
      }
      case OpKind::reduction: {
        Desc red(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
        const cudnnReduceTensorOp_t mode =
            n.red == Red::max ? CUDNN_REDUCE_TENSOR_MAX : CUDNN_REDUCE_TENSOR_ADD;
        red.set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
        red.set_data_type(CUDNN_ATTR_REDUCTION_COMP_TYPE, to_cudnn(n.math));
        red.finalize();
        Desc op(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
        op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, in(0));
        op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, out);
        op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_DESC, red);
        op.finalize();
        keep.push_back(std::move(red));
        keep.push_back(std::move(op));
        break;
      }
      case OpKind::reshape: {
        Desc op(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
        op.set_desc(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, in(0));
        op.set_desc(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, out);
        op.finalize();
        keep.push_back(std::move(op));
        break;
      }
    }
    ops.push_back(keep.back().get());
  }
  Desc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
  graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
            static_cast<int64_t>(ops.size()), ops.data());
  graph.finalize();
  keep.push_back(std::move(graph));
  return keep.back().get();
}

namespace {

// Whether the engine of `cfg` carries the non-deterministic numerical note.
bool nondeterministic(cudnnBackendDescriptor_t cfg) {
  Desc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t e = engine.get();
  int64_t n = 0;
  KILN_CUDNN_CALL(cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &e));
  std::array<cudnnBackendNumericalNote_t, CUDNN_NUMERICAL_NOTE_TYPE_COUNT> notes{};
  KILN_CUDNN_CALL(cudnnBackendGetAttribute(e, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                                           CUDNN_TYPE_NUMERICAL_NOTE, notes.size(), &n,
                                           notes.data()));
  for (int64_t i = 0; i < n; ++i)
    if (notes[static_cast<std::size_t>(i)] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) return true;
  return false;
}

}  // namespace

Engine choose_engine(cudnnHandle_t handle, cudnnBackendDescriptor_t op_graph, bool deterministic) {
  Engine engine;
  std::string last_refusal = "the heuristics proposed no engine";
  for (const cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    Desc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op_graph);
    heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (cudnnBackendFinalize(heur.get()) != CUDNN_STATUS_SUCCESS) continue;
    int64_t count = 0;
    KILN_CUDNN_CALL(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
    if (count <= 0) continue;
    std::vector<Desc> cfgs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(cfgs.back().get());
    }
    KILN_CUDNN_CALL(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &count,
                                             raw.data()));
    for (int64_t i = 0; i < count; ++i) {
      const std::size_t at = static_cast<std::size_t>(i);
      if (deterministic && nondeterministic(raw[at])) {
        last_refusal = "every engine cuDNN proposed is non-deterministic";
        continue;
      }
      auto exec = std::make_unique<Desc>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      exec->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
      exec->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                &raw[at]);
      const cudnnStatus_t st = cudnnBackendFinalize(exec->get());
      if (st != CUDNN_STATUS_SUCCESS) {
        last_refusal = cudnn_message(st);
        continue;
      }
      int64_t ws = 0, n = 0;
      KILN_CUDNN_CALL(cudnnBackendGetAttribute(
          exec->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws));
      engine.workspace = static_cast<std::size_t>(std::max<int64_t>(ws, 0));
      engine.config = std::make_unique<Desc>(std::move(cfgs[at]));
      engine.plan = std::move(exec);
      engine.supported = true;
      return engine;
    }
  }
  engine.refusal = last_refusal;
  return engine;
}

void execute_plan(cudnnHandle_t handle, const Desc& plan, std::vector<int64_t>& uids,
                  std::vector<void*>& ptrs, void* workspace) {
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(uids.size()),
           uids.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
           static_cast<int64_t>(ptrs.size()), ptrs.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  pack.finalize();
  KILN_CUDNN_CALL(cudnnBackendExecute(handle, plan.get(), pack.get()));
}

}  // namespace kiln::impl::cudnn_attn
