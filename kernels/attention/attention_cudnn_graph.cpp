// The cuDNN attention graphs as data (see attention_cudnn_graph.hpp). Operation names follow
// cudnn-frontend's, so a cuDNN log of kiln's graph reads like one of the frontend's.
#include "kernels/attention/attention_cudnn_graph.hpp"

#include <limits>
#include <utility>

#include "errors/check.hpp"

namespace kiln::impl::cudnn_attn {
namespace {

using Dims = std::array<int64_t, 4>;

Dims packed(const Dims& d) {
  return {d[1] * d[2] * d[3], d[2] * d[3], d[3], 1};
}

std::size_t align256(std::size_t bytes) {
  return (bytes + 255) / 256 * 256;
}

class Builder {
 public:
  Graph g;

  int64_t tensor(const char* name, DType t, const Dims& dim, const Dims& stride, Bind bind,
                 double value = 0) {
    Tensor x;
    x.uid = next_++;
    x.name = name;
    x.dtype = t;
    x.dim = dim;
    x.stride = stride;
    x.bind = bind;
    x.value = value;
    g.tensors.push_back(x);
    return x.uid;
  }
  // A virtual tensor with packed (b, h, s, d) strides.
  int64_t virt(const char* name, DType t, const Dims& dim) {
    return tensor(name, t, dim, packed(dim), Bind::none);
  }
  int64_t constant(const char* name, DType t, double value) {
    return tensor(name, t, {1, 1, 1, 1}, {1, 1, 1, 1}, Bind::constant, value);
  }
  const Dims& dim(int64_t uid) const { return g.tensor(uid).dim; }

  int64_t matmul(const char* name, int64_t a, int64_t b, int64_t c) {
    Node n;
    n.kind = OpKind::matmul;
    n.name = name;
    n.in = {a, b};
    n.out = c;
    g.nodes.push_back(std::move(n));
    return c;
  }
  int64_t pointwise(const char* name, Pw mode, std::vector<int64_t> in, int64_t out,
                    DType math = DType::f32, int axis = -1) {
    Node n;
    n.kind = OpKind::pointwise;
    n.name = name;
    n.pw = mode;
    n.math = math;
    n.axis = axis;
    n.in = std::move(in);
    n.out = out;
    g.nodes.push_back(std::move(n));
    return out;
  }
  int64_t reduction(const char* name, Red op, int64_t x, int64_t y) {
    Node n;
    n.kind = OpKind::reduction;
    n.name = name;
    n.red = op;
    n.in = {x};
    n.out = y;
    g.nodes.push_back(std::move(n));
    return y;
  }
  int64_t reshape(const char* name, int64_t x, int64_t y) {
    Node n;
    n.kind = OpKind::reshape;
    n.name = name;
    n.in = {x};
    n.out = y;
    g.nodes.push_back(std::move(n));
    return y;
  }

  // Causal mask on scores `x` of shape (b, h, Tq, Tk), cudnn-frontend's composite diagonal band
  // (right bound 0): keep (i, j) where i + Tk - Tq >= j, else -inf. The index arithmetic is int32,
  // the comparison boolean; with Tq == Tk the alignment is top-left and needs no arithmetic.
  int64_t causal_mask(int64_t x, const Problem& p) {
    const Dims d = dim(x);
    int64_t row =
        pointwise("gen_row_index", Pw::gen_index, {x}, virt("row", DType::i32, d), DType::f32, 2);
    const int64_t col =
        pointwise("gen_col_index", Pw::gen_index, {x}, virt("col", DType::i32, d), DType::f32, 3);
    if (p.Tq != p.Tk) {
      row = pointwise("row+skv", Pw::add, {row, constant("s_kv", DType::i32, double(p.Tk))},
                      virt("row+skv", DType::i32, d), DType::i32, 3);
      row = pointwise("row+skv-sq", Pw::sub, {row, constant("s_q", DType::i32, double(p.Tq))},
                      virt("row+skv-sq", DType::i32, d), DType::i32, 3);
    }
    const int64_t keep = pointwise("row>=col", Pw::cmp_ge, {row, col},
                                   virt("keep", DType::boolean, d), DType::boolean);
    const int64_t ninf = constant("-inf", DType::f32, -std::numeric_limits<double>::infinity());
    return pointwise("binary_select", Pw::binary_select, {x, ninf, keep},
                     virt("masked", DType::f32, d));
  }

 private:
  int64_t next_ = 1;
};

// Caller tensors in cuDNN's (b, h, s, d) order from kiln's (batch, token, head) strides.
Dims bhsd(const AttnStrides& s) {
  return {s.b, s.h, s.t, 1};
}
Dims bhds(const AttnStrides& s) {  // the transpose (b, h, d, s): K^T, V^T
  return {s.b, s.h, 1, s.t};
}

}  // namespace

const Tensor& Graph::tensor(int64_t uid) const {
  for (const Tensor& t : tensors)
    if (t.uid == uid) return t;
  KILN_CHECK(false, Status::internal_error, "cuDNN attention graph: no tensor with uid ", uid);
  return tensors.front();  // unreachable
}

const Tensor* Graph::find(Bind bind) const {
  for (const Tensor& t : tensors)
    if (t.bind == bind) return &t;
  return nullptr;
}

Problem make_problem(const AttnShape& s) {
  Problem p;
  p.skipped = s.causal && s.Tq > s.Tk ? s.Tq - s.Tk : 0;
  p.B = s.B;
  p.Tq = s.Tq - p.skipped;
  p.Tk = s.Tk;
  p.NHq = s.NHq;
  p.NHkv = s.NHkv;
  p.HD = s.HD;
  p.causal = s.causal;
  p.deterministic = s.deterministic;
  p.q = s.q;
  p.k = s.k;
  p.v = s.v;
  p.o = s.o;
  return p;
}

Graph forward_graph(const Problem& p) {
  Builder b;
  const Dims q_dim{p.B, p.NHq, p.Tq, p.HD}, kv_dim{p.B, p.NHkv, p.Tk, p.HD};
  const Dims kt_dim{p.B, p.NHkv, p.HD, p.Tk}, s_dim{p.B, p.NHq, p.Tq, p.Tk};
  const Dims row_dim{p.B, p.NHq, p.Tq, 1};
  const int64_t q = b.tensor("Q", DType::bf16, q_dim, bhsd(p.q), Bind::q);
  const int64_t kt = b.tensor("K^T", DType::bf16, kt_dim, bhds(p.k), Bind::k);
  const int64_t v = b.tensor("V", DType::bf16, kv_dim, bhsd(p.v), Bind::v);
  const int64_t o = b.tensor("O", DType::bf16, q_dim, bhsd(p.o), Bind::o);
  const int64_t stats = b.tensor("Stats", DType::f32, row_dim, packed(row_dim), Bind::stats);
  const int64_t scale = b.tensor("attn_scale", DType::f32, {1, 1, 1, 1}, {1, 1, 1, 1}, Bind::scale);

  int64_t s = b.matmul("bmm1", q, kt, b.virt("S", DType::f32, s_dim));
  s = b.pointwise("attn_scale", Pw::mul, {s, scale}, b.virt("S*scale", DType::f32, s_dim));
  if (p.causal) s = b.causal_mask(s, p);
  const int64_t m = b.reduction("Max", Red::max, s, b.virt("M", DType::f32, row_dim));
  const int64_t z = b.pointwise("sub", Pw::sub, {s, m}, b.virt("S-M", DType::f32, s_dim));
  const int64_t e = b.pointwise("exp", Pw::exp, {z}, b.virt("exp(S-M)", DType::f32, s_dim));
  const int64_t l = b.reduction("sum", Red::add, e, b.virt("SumExp", DType::f32, row_dim));
  const int64_t lg = b.pointwise("log", Pw::log, {l}, b.virt("log(SumExp)", DType::f32, row_dim));
  b.pointwise("add", Pw::add, {m, lg}, stats);
  const int64_t pr = b.pointwise("div", Pw::div, {e, l}, b.virt("P", DType::bf16, s_dim));
  b.matmul("bmm2", pr, v, o);
  return std::move(b.g);
}

Graph backward_graph(const Problem& p) {
  Builder b;
  const Dims q_dim{p.B, p.NHq, p.Tq, p.HD}, kv_dim{p.B, p.NHkv, p.Tk, p.HD};
  const Dims kt_dim{p.B, p.NHkv, p.HD, p.Tk}, s_dim{p.B, p.NHq, p.Tq, p.Tk};
  const Dims st_dim{p.B, p.NHq, p.Tk, p.Tq}, full_kv_dim{p.B, p.NHq, p.Tk, p.HD};
  const Dims row_dim{p.B, p.NHq, p.Tq, 1};
  // S^T as a view of S (b, h, Tq, Tk) packed: element (b, h, j, i) is S (b, h, i, j).
  const Dims st_stride{p.NHq * p.Tq * p.Tk, p.Tq * p.Tk, 1, p.Tk};
  const int64_t q = b.tensor("Q", DType::bf16, q_dim, bhsd(p.q), Bind::q);
  const int64_t kt = b.tensor("K^T", DType::bf16, kt_dim, bhds(p.k), Bind::k);
  const int64_t vt = b.tensor("V^T", DType::bf16, kt_dim, bhds(p.v), Bind::v);
  const int64_t o = b.tensor("O", DType::bf16, q_dim, bhsd(p.o), Bind::o);
  const int64_t dout = b.tensor("dO", DType::bf16, q_dim, bhsd(p.o), Bind::dout);
  const int64_t stats = b.tensor("Stats", DType::f32, row_dim, packed(row_dim), Bind::stats);
  const int64_t dq = b.tensor("dQ", DType::bf16, q_dim, bhsd(p.q), Bind::dq);
  const int64_t dk = b.tensor("dK", DType::bf16, kv_dim, bhsd(p.k), Bind::dk);
  const int64_t dv = b.tensor("dV", DType::bf16, kv_dim, bhsd(p.v), Bind::dv);
  const int64_t scale = b.tensor("attn_scale", DType::f32, {1, 1, 1, 1}, {1, 1, 1, 1}, Bind::scale);
  const bool gqa = p.NHq != p.NHkv;

  // D = rowsum(dO * O), kept in the workspace (cuDNN reads it once per key block).
  int64_t t = b.pointwise("mul_dO_O", Pw::mul, {dout, o}, b.virt("dO*O", DType::f32, q_dim));
  t = b.reduction("reduce_dO_o", Red::add, t, b.virt("rowsum(dO*O)", DType::f32, row_dim));
  const int64_t dsum =
      b.pointwise("scale_dropout_inv", Pw::mul, {t, b.constant("one", DType::f32, 1.0)},
                  b.tensor("softmax_sum", DType::f32, row_dim, packed(row_dim), Bind::softmax_sum));

  // P = exp(S * scale - Stats), masked.
  int64_t s = b.matmul("matmul_Q_KT", q, kt, b.virt("S", DType::f32, s_dim));
  s = b.pointwise("mul_s_attn_scale", Pw::mul, {s, scale}, b.virt("S*scale", DType::f32, s_dim));
  s = b.pointwise("sub_s_m", Pw::sub, {s, stats}, b.virt("S-LSE", DType::f32, s_dim));
  if (p.causal) s = b.causal_mask(s, p);
  const int64_t pr = b.pointwise("exp_s", Pw::exp, {s}, b.virt("P", DType::f32, s_dim));

  // dV = P^T dO (summed over the query heads of each K/V head).
  const int64_t pt =
      b.reshape("reshape_p", pr, b.tensor("P^T", DType::bf16, st_dim, st_stride, Bind::none));
  if (!gqa) {
    b.matmul("matmul_pT_dO", pt, dout, dv);
  } else {
    const int64_t full =
        b.matmul("matmul_pT_dO", pt, dout, b.virt("dV_fullhead", DType::bf16, full_kv_dim));
    b.reduction("red_dV_head", Red::add, full, dv);
  }

  // dS = P * (dO V^T - D) * scale.
  int64_t ds = b.matmul("matmul_dO_VT", dout, vt, b.virt("dP", DType::f32, s_dim));
  ds = b.pointwise("sub_dP_softmax_sum", Pw::sub, {ds, dsum}, b.virt("dP-D", DType::f32, s_dim));
  ds = b.pointwise("mul_dP_exp_s", Pw::mul, {ds, pr}, b.virt("P*(dP-D)", DType::f32, s_dim));
  ds = b.pointwise("mul_dS_attn_scale", Pw::mul, {ds, scale}, b.virt("dS", DType::f32, s_dim));

  // dK = dS^T Q (summed over the group).
  const int64_t dst =
      b.reshape("reshape_dS", ds, b.tensor("dS^T", DType::bf16, st_dim, st_stride, Bind::none));
  if (!gqa) {
    b.matmul("matmul_dST_Q", dst, q, dk);
  } else {
    const int64_t full =
        b.matmul("matmul_dST_Q", dst, q, b.virt("dK_fullhead", DType::bf16, full_kv_dim));
    b.reduction("red_dK_head", Red::add, full, dk);
  }

  // dQ = dS K: K as a (b, h, Tk, HD) view of K^T. The fp32 accumulator in the workspace is how
  // the graph asks for the atomic (non-deterministic) dQ; without it cuDNN picks its
  // deterministic algorithm.
  const int64_t kview =
      b.reshape("reshape_k", kt, b.tensor("K", DType::f32, kv_dim, bhsd(p.k), Bind::none));
  if (!p.deterministic) {
    const int64_t acc =
        b.matmul("matmul_dS_K", ds, kview,
                 b.tensor("dQ_accum", DType::f32, q_dim, packed(q_dim), Bind::dq_accum));
    b.pointwise("identity_dQ", Pw::identity, {acc}, dq);
  } else {
    b.matmul("matmul_dS_K", ds, kview, dq);
  }
  return std::move(b.g);
}

WorkspaceLayout workspace_layout(const Problem& p, bool backward) {
  WorkspaceLayout w;
  const std::size_t rows = static_cast<std::size_t>(p.B * p.NHq * p.Tq);
  std::size_t at = 0;
  w.stats = at;
  w.stats_bytes = rows * sizeof(float);
  at += align256(w.stats_bytes);
  if (backward) {
    w.softmax_sum = at;
    w.softmax_sum_bytes = rows * sizeof(float);
    at += align256(w.softmax_sum_bytes);
    if (!p.deterministic) {
      w.dq_accum = at;
      w.dq_accum_bytes = rows * static_cast<std::size_t>(p.HD) * sizeof(float);
      at += align256(w.dq_accum_bytes);
    }
  }
  w.cudnn = at;
  return w;
}

}  // namespace kiln::impl::cudnn_attn
