// The cuDNN operation graphs of kiln attention, as plain data: tensors (unique id, dims, strides,
// type, where the address comes from) and operations in order. attention_cudnn.cpp turns a Graph
// into cudnnBackend* descriptors one for one; keeping the description free of cuDNN lets the CPU
// tests check it (structure, and its meaning by interpreting it against the reference) where no
// GPU exists.
//
// The graphs are the composite ones cudnn-frontend lowers its SDPA nodes to for cuDNN 9.x, which
// cuDNN's fused flash-attention engines recognize (cuDNN 9.19's dedicated SDPA operation has no
// causal mask, hence the composite form):
//   forward:  S = Q K^T; S *= scale; [causal: S = select(row + Tk - Tq >= col, S, -inf)];
//             M = rowmax(S); E = exp(S - M); L = rowsum(E); Stats = M + log(L); P = E / L;
//             O = P V                                           (P in bf16, Stats fp32)
//   backward: D = rowsum(dO * O); S = (Q K^T) * scale - Stats; [causal mask]; P = exp(S);
//             dV = P^T dO; dS = P * (dO V^T - D) * scale; dK = dS^T Q; dQ = dS K
//             (per query head, then summed over the GQA group into dK, dV; dQ through an fp32
//             accumulator in the workspace unless deterministic)
// Tensors are 4-D (b, h, s, d) in cuDNN's order. K enters S = Q K^T as K^T: dims (b, h, d, s)
// with K's strides swapped; transposes elsewhere are reshape operations (views with other strides).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/attention/attention.hpp"

namespace kiln::impl::cudnn_attn {

enum class DType { bf16, f32, i32, boolean };

// Where a tensor's address comes from when the plan runs. `none`: virtual (never in memory).
enum class Bind {
  none,
  constant,  // by-value host scalar fixed by the graph (-inf, 1, Tq, Tk)
  scale,     // by-value host scalar: the call's softmax scale
  q,         // caller's tensors (offset past rows that see no key, see Problem::skipped)
  k,
  v,
  o,
  dout,
  dq,
  dk,
  dv,
  stats,        // workspace: (B, NHq, Tq, 1) fp32, LSE of the rows cuDNN computes
  softmax_sum,  // workspace: (B, NHq, Tq, 1) fp32, D = rowsum(dO * O) (backward)
  dq_accum      // workspace: (B, NHq, Tq, HD) fp32, dQ accumulator (non-deterministic backward)
};

enum class OpKind { matmul, pointwise, reduction, reshape };
enum class Pw { add, sub, mul, div, exp, log, identity, cmp_ge, gen_index, binary_select };
enum class Red { add, max };

struct Tensor {
  int64_t uid = 0;
  const char* name = "";
  DType dtype = DType::f32;
  std::array<int64_t, 4> dim{};
  std::array<int64_t, 4> stride{};
  Bind bind = Bind::none;
  double value = 0;  // Bind::constant: the scalar (as f32 or i32 by dtype)
  bool is_virtual() const { return bind == Bind::none; }
  bool by_value() const { return bind == Bind::constant || bind == Bind::scale; }
};

struct Node {
  OpKind kind = OpKind::pointwise;
  const char* name = "";
  Pw pw = Pw::identity;     // pointwise mode
  Red red = Red::add;       // reduction operator
  DType math = DType::f32;  // compute type (matmul, pointwise, reduction)
  int axis = -1;            // pointwise axis (gen_index, and the index arithmetic after it)
  std::vector<int64_t> in;  // input uids: matmul A, B; pointwise X[, B[, T]]; reduction / reshape X
  int64_t out = 0;          // output uid
};

struct Graph {
  std::vector<Tensor> tensors;
  std::vector<Node> nodes;
  const Tensor& tensor(int64_t uid) const;  // throws internal_error for an unknown uid
  const Tensor* find(Bind bind) const;      // the tensor bound to `bind`, or null
};

// The attention problem cuDNN is handed. Causal attention with Tq > Tk has leading query rows that
// see no key; cuDNN's bottom-right causal mask requires Tq <= Tk, so kiln passes only the last Tk
// query rows (a square, top-left causal problem) and fills the others itself (O = 0, LSE = -inf,
// dQ = 0). `skipped` is that row count; q, o (and dq, dout) pointers start `skipped` tokens in.
struct Problem {
  int64_t B = 0, Tq = 0, Tk = 0, NHq = 0, NHkv = 0, HD = 0;
  bool causal = false;
  bool deterministic = false;
  AttnStrides q, k, v, o;
  int64_t skipped = 0;
};
Problem make_problem(const AttnShape& s);

Graph forward_graph(const Problem& p);
Graph backward_graph(const Problem& p);

// kiln's workspace parts in front of cuDNN's own, each 256-byte aligned (offsets in bytes; 0 size
// when unused).
struct WorkspaceLayout {
  std::size_t stats = 0, softmax_sum = 0, dq_accum = 0, cudnn = 0;  // offsets
  std::size_t stats_bytes = 0, softmax_sum_bytes = 0, dq_accum_bytes = 0;
  std::size_t kiln_bytes() const { return cudnn; }
};
WorkspaceLayout workspace_layout(const Problem& p, bool backward);

}  // namespace kiln::impl::cudnn_attn
