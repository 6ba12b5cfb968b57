// kiln attention through cuDNN's fused flash attention (backend graph API): the graphs of
// attention_cudnn_graph.cpp turned into cudnnBackend* descriptors (attention_cudnn_backend.cpp),
// an execution plan per (thread, device, direction, shape, strides, causal, deterministic) chosen
// by cuDNN's heuristics once and cached, the tensors bound at each call, and the glue cuDNN does
// not do (LSE in kiln's layout, rows that see no key).
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

#include "errors/check.hpp"
#include "kernels/attention/attention.hpp"
#include "kernels/attention/attention_cudnn_backend.hpp"
#include "kernels/attention/attention_cudnn_graph.hpp"
#include "kernels/common/device.hpp"

namespace kiln::impl {
namespace {

using namespace cudnn_attn;

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
  Graph graph;
  WorkspaceLayout layout;
  std::vector<Desc> keep;  // tensors, operations, graph: alive as long as the plan
  Engine engine;           // the plan chosen (or cuDNN's refusal); refers to `keep`
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

std::shared_ptr<Plan> build_plan(const PlanKey& key, const Problem& p, cudnnHandle_t handle) {
  auto plan = std::make_shared<Plan>();
  plan->key = key;
  plan->graph = key.backward ? backward_graph(p) : forward_graph(p);
  plan->layout = workspace_layout(p, key.backward);
  const cudnnBackendDescriptor_t op_graph = build_operation_graph(plan->graph, handle, plan->keep);
  plan->engine = choose_engine(handle, op_graph, key.deterministic && key.backward);
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
  KILN_CHECK(plan->engine.supported, Status::not_supported, op, ": cuDNN ", cudnnGetVersion(),
             " has no engine for this attention ", backward ? "backward" : "forward", " (B ", p.B,
             ", Tq ", p.Tq, ", Tk ", p.Tk, ", NHq ", p.NHq, ", NHkv ", p.NHkv, ", HD ", p.HD,
             p.causal ? ", causal" : "", p.deterministic ? ", deterministic" : "",
             "): ", plan->engine.refusal);
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
  void* cudnn_ws = plan.engine.workspace > 0 ? a.workspace + plan.layout.cudnn : nullptr;
  const cudnnHandle_t h = handle_for(plan.key.device);
  KILN_CUDNN_CALL(cudnnSetStream(h, stream));
  execute_plan(h, *plan.engine.plan, uids, ptrs, cudnn_ws);
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
  return plan->layout.kiln_bytes() + plan->engine.workspace;
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
