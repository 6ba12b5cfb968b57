// kiln attention through cuDNN's fused flash attention (backend graph API): the graphs of
// attention_cudnn_graph.cpp turned into cudnnBackend* descriptors, an execution plan per
// (thread, device, direction, shape, strides, causal, deterministic) chosen by cuDNN's
// heuristics once and cached, and the glue cuDNN does not do (LSE in kiln's layout, rows that see
// no key).
//
// Caching: plans and cuDNN handles are per thread (a cudnnHandle_t must not be used by two threads
// at once; a trainer drives a device from one thread), in a small LRU. The softmax scale is a
// by-value scalar of the graph, so one plan serves every scale. A shape cuDNN refuses is cached
// too, with cuDNN's message, so asking again costs nothing.
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/attention/attention.hpp"
#include "kernels/attention/attention_cudnn_graph.hpp"
#include "kernels/common/check.hpp"
#include "kernels/common/check_libs.hpp"
#include "kernels/common/device.hpp"

namespace kiln::impl {
namespace {

using namespace cudnn_attn;

// cuDNN's status string plus its last-error detail (which names the failing check).
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

#define KILN_CUDNN_CALL(expr)                                                                \
  do {                                                                                       \
    const cudnnStatus_t kiln_cst_ = (expr);                                                  \
    if (kiln_cst_ != CUDNN_STATUS_SUCCESS) cudnn_fail(kiln_cst_, #expr, __FILE__, __LINE__); \
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

struct PlanKey {
  int device = 0;
  bool backward = false;
  int64_t B = 0, Tq = 0, Tk = 0, NHq = 0, NHkv = 0, HD = 0;
  bool causal = false, deterministic = false;
  std::array<int64_t, 12> strides{};
  bool operator==(const PlanKey&) const = default;
};

PlanKey key_of(int device, bool backward, const Problem& p) {
  PlanKey k;
  k.device = device;
  k.backward = backward;
  k.B = p.B;
  k.Tq = p.Tq;
  k.Tk = p.Tk;
  k.NHq = p.NHq;
  k.NHkv = p.NHkv;
  k.HD = p.HD;
  k.causal = p.causal;
  k.deterministic = p.deterministic;
  k.strides = {p.q.b, p.q.t, p.q.h, p.k.b, p.k.t, p.k.h, p.v.b, p.v.t, p.v.h, p.o.b, p.o.t, p.o.h};
  return k;
}

// A built execution plan and everything it references, or cuDNN's refusal.
struct Plan {
  PlanKey key;
  bool supported = false;
  std::string refusal;  // why cuDNN has no engine for it (when !supported)
  Graph graph;
  WorkspaceLayout layout;
  std::size_t cudnn_workspace = 0;
  std::vector<Desc> keep;  // tensors, operations, graph, engine config: alive as long as the plan
  std::unique_ptr<Desc> plan;
  uint64_t last_use = 0;
};

struct ThreadState {
  std::vector<std::pair<int, cudnnHandle_t>> handles;  // per device ordinal
  std::vector<std::shared_ptr<Plan>> plans;
  uint64_t clock = 0;
  std::size_t builds = 0;
  ~ThreadState() {
    plans.clear();  // plans reference the handles
    for (auto& [device, h] : handles)
      cudnnDestroy(h);  // at exit: errors have nowhere to go
  }
};
constexpr std::size_t kMaxPlans = 64;  // a model's attention shapes, both directions, with room

ThreadState& state() {
  thread_local ThreadState s;
  return s;
}

cudnnHandle_t handle_for(int device) {
  ThreadState& s = state();
  for (const auto& [d, h] : s.handles)
    if (d == device) return h;
  cudnnHandle_t h = nullptr;
  KILN_CUDNN_CALL(cudnnCreate(&h));
  s.handles.emplace_back(device, h);
  return h;
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

// The operations of `g` as finalized backend descriptors (appended to `keep`), then the
// operation graph (returned, also in `keep`).
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

// The engine configurations cuDNN's heuristics (mode A, then the fallback list) propose, best
// first; a finalized execution plan from the first that accepts the graph.
void choose_plan(Plan& plan, cudnnHandle_t handle, cudnnBackendDescriptor_t op_graph) {
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
      if (plan.key.deterministic && plan.key.backward && nondeterministic(raw[at])) {
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
      plan.cudnn_workspace = static_cast<std::size_t>(std::max<int64_t>(ws, 0));
      plan.keep.push_back(std::move(cfgs[at]));
      plan.plan = std::move(exec);
      plan.supported = true;
      return;
    }
  }
  plan.refusal = last_refusal;
}

std::shared_ptr<Plan> build_plan(const PlanKey& key, const Problem& p, cudnnHandle_t handle) {
  auto plan = std::make_shared<Plan>();
  plan->key = key;
  plan->graph = key.backward ? backward_graph(p) : forward_graph(p);
  plan->layout = workspace_layout(p, key.backward);
  const cudnnBackendDescriptor_t op_graph = build_operation_graph(plan->graph, handle, plan->keep);
  choose_plan(*plan, handle, op_graph);
  return plan;
}

std::shared_ptr<Plan> get_plan(const Problem& p, bool backward) {
  const int device = current_device_facts().ordinal;
  const PlanKey key = key_of(device, backward, p);
  ThreadState& s = state();
  ++s.clock;
  for (const auto& plan : s.plans)
    if (plan->key == key) {
      plan->last_use = s.clock;
      return plan;
    }
  std::shared_ptr<Plan> plan = build_plan(key, p, handle_for(device));
  ++s.builds;
  plan->last_use = s.clock;
  if (s.plans.size() >= kMaxPlans) {
    const auto oldest =
        std::min_element(s.plans.begin(), s.plans.end(),
                         [](const auto& a, const auto& b) { return a->last_use < b->last_use; });
    s.plans.erase(oldest);
  }
  s.plans.push_back(plan);
  return plan;
}

// Problems with no row for cuDNN (B == 0, or Tq == 0) are served without a plan.
bool empty(const Problem& p) {
  return p.B == 0 || p.Tq == 0;
}

std::shared_ptr<Plan> checked_plan(const Problem& p, bool backward, const char* op) {
  std::shared_ptr<Plan> plan = get_plan(p, backward);
  KILN_CHECK(plan->supported, Status::not_supported, op, ": cuDNN ", cudnnGetVersion(),
             " has no engine for this attention ", backward ? "backward" : "forward", " (B ", p.B,
             ", Tq ", p.Tq, ", Tk ", p.Tk, ", NHq ", p.NHq, ", NHkv ", p.NHkv, ", HD ", p.HD,
             p.causal ? ", causal" : "", p.deterministic ? ", deterministic" : "",
             "): ", plan->refusal);
  return plan;
}

struct Addresses {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* o = nullptr;
  const void* dout = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  char* workspace = nullptr;
};

void execute(const Plan& plan, const Addresses& a, float scale, cudaStream_t stream) {
  const Graph& g = plan.graph;
  std::vector<int64_t> uids;
  std::vector<void*> ptrs;
  // By-value scalars live here until cudnnBackendExecute returns (it reads them at launch).
  std::vector<std::array<unsigned char, 8>> values(g.tensors.size());
  for (std::size_t i = 0; i < g.tensors.size(); ++i) {
    const Tensor& t = g.tensors[i];
    void* p = nullptr;
    switch (t.bind) {
      case Bind::none:
        continue;
      case Bind::constant:
      case Bind::scale: {
        const double x = t.bind == Bind::scale ? static_cast<double>(scale) : t.value;
        if (t.dtype == DType::i32) {
          const int32_t v = static_cast<int32_t>(x);
          std::memcpy(values[i].data(), &v, sizeof v);
        } else {
          const float v = static_cast<float>(x);
          std::memcpy(values[i].data(), &v, sizeof v);
        }
        p = values[i].data();
        break;
      }
      case Bind::q:
        p = const_cast<void*>(a.q);
        break;
      case Bind::k:
        p = const_cast<void*>(a.k);
        break;
      case Bind::v:
        p = const_cast<void*>(a.v);
        break;
      case Bind::o:
        p = const_cast<void*>(a.o);
        break;
      case Bind::dout:
        p = const_cast<void*>(a.dout);
        break;
      case Bind::dq:
        p = a.dq;
        break;
      case Bind::dk:
        p = a.dk;
        break;
      case Bind::dv:
        p = a.dv;
        break;
      case Bind::stats:
        p = a.workspace + plan.layout.stats;
        break;
      case Bind::softmax_sum:
        p = a.workspace + plan.layout.softmax_sum;
        break;
      case Bind::dq_accum:
        p = a.workspace + plan.layout.dq_accum;
        break;
    }
    uids.push_back(t.uid);
    ptrs.push_back(p);
  }
  void* cudnn_ws = plan.cudnn_workspace > 0 ? a.workspace + plan.layout.cudnn : nullptr;
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(uids.size()),
           uids.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
           static_cast<int64_t>(ptrs.size()), ptrs.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &cudnn_ws);
  pack.finalize();
  const cudnnHandle_t h = handle_for(plan.key.device);
  KILN_CUDNN_CALL(cudnnSetStream(h, stream));
  KILN_CUDNN_CALL(cudnnBackendExecute(h, plan.plan->get(), pack.get()));
  KILN_LAUNCH_CHECK(stream);
}

const bf16* rows_in(const bf16* x, const AttnStrides& s, int64_t rows) {
  return x + rows * s.t;
}
bf16* rows_in(bf16* x, const AttnStrides& s, int64_t rows) {
  return x + rows * s.t;
}

}  // namespace

std::size_t attention_cudnn_plan_builds() {
  return state().builds;
}

void attention_cudnn_check(const AttnShape& s, bool backward, const char* op) {
  const Problem p = cudnn_attn::make_problem(s);
  if (!empty(p)) checked_plan(p, backward, op);
}

std::size_t attention_cudnn_workspace(const AttnShape& s, bool backward) {
  const Problem p = cudnn_attn::make_problem(s);
  if (empty(p)) return 0;
  const std::shared_ptr<Plan> plan = checked_plan(p, backward, "attention (cuDNN)");
  return plan->layout.kiln_bytes() + plan->cudnn_workspace;
}

void attention_fwd_cudnn(const AttnFwdArgs& a, void* workspace, cudaStream_t stream) {
  const Problem p = cudnn_attn::make_problem(a.s);
  const std::shared_ptr<Plan> plan = checked_plan(p, false, "kiln_attention_fwd");
  if (p.skipped > 0) attention_zero_rows(a.o, a.s.o, a.s.B, p.skipped, a.s.NHq, a.s.HD, stream);
  Addresses addr;
  addr.q = rows_in(a.q, a.s.q, p.skipped);
  addr.k = a.k;
  addr.v = a.v;
  addr.o = rows_in(a.o, a.s.o, p.skipped);
  addr.workspace = static_cast<char*>(workspace);
  execute(*plan, addr, a.s.scale, stream);
  const float* stats = reinterpret_cast<const float*>(addr.workspace + plan->layout.stats);
  attention_cudnn_lse_out(stats, a.lse, a.s.B, a.s.NHq, a.s.Tq, static_cast<int>(p.skipped),
                          stream);
}

void attention_bwd_cudnn(const AttnBwdArgs& a, void* workspace, cudaStream_t stream) {
  const Problem p = cudnn_attn::make_problem(a.s);
  if (empty(p)) {  // Tq == 0: no query sees a key, so dK = dV = 0
    attention_zero_rows(a.dk, a.s.k, a.s.B, a.s.Tk, a.s.NHkv, a.s.HD, stream);
    attention_zero_rows(a.dv, a.s.v, a.s.B, a.s.Tk, a.s.NHkv, a.s.HD, stream);
    return;
  }
  const std::shared_ptr<Plan> plan = checked_plan(p, true, "kiln_attention_bwd");
  char* ws = static_cast<char*>(workspace);
  if (p.skipped > 0) attention_zero_rows(a.dq, a.s.q, a.s.B, p.skipped, a.s.NHq, a.s.HD, stream);
  attention_cudnn_lse_in(a.lse, reinterpret_cast<float*>(ws + plan->layout.stats), a.s.B, a.s.NHq,
                         a.s.Tq, static_cast<int>(p.skipped), stream);
  // Before 9.6 cuDNN expected the caller to zero the dQ accumulator (cudnn-frontend did).
  if (plan->layout.dq_accum_bytes > 0 && cudnnGetVersion() < 90600)
    KILN_CUDA_CHECK(
        cudaMemsetAsync(ws + plan->layout.dq_accum, 0, plan->layout.dq_accum_bytes, stream));
  Addresses addr;
  addr.q = rows_in(a.q, a.s.q, p.skipped);
  addr.k = a.k;
  addr.v = a.v;
  addr.o = rows_in(a.o, a.s.o, p.skipped);
  addr.dout = rows_in(a.dout, a.s.o, p.skipped);
  addr.dq = rows_in(a.dq, a.s.q, p.skipped);
  addr.dk = a.dk;
  addr.dv = a.dv;
  addr.workspace = ws;
  execute(*plan, addr, a.s.scale, stream);
}

}  // namespace kiln::impl
