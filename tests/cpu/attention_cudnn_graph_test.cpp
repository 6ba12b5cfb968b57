// The cuDNN attention graphs (kernels/attention/attention_cudnn_graph.*), without cuDNN or a GPU:
// their structure (every tensor defined once before use, operand shapes that agree, the caller's
// strides on the bound tensors, the workspace parts), and their meaning: a small interpreter
// evaluates each graph in double over the caller's strided buffers with cuDNN's semantics
// (batched matmul with GQA head broadcast, broadcasting pointwise ops, gen_index, reductions that
// also sum a head group, reshape as a strided view) and the result must equal the attention
// reference, after the glue kiln applies around cuDNN (rows that see no key). The interpreter is in
// attention_cudnn_interpreter.hpp.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "kernels/attention/attention_cudnn_graph.hpp"
#include "kernels/attention/attention_ref.hpp"
#include "tests/common/support.hpp"
#include "tests/cpu/attention_cudnn_interpreter.hpp"

namespace ca = kiln::impl::cudnn_attn;
using kiln::ref::AttentionLayout;
using kiln::ref::AttentionStrides;

using kiln::test::cudnn_graph::Dims;
using kiln::test::cudnn_graph::Interpreter;
using kiln::test::cudnn_graph::Storage;

namespace {

enum class Layout { contiguous, packed_qkv, bhsd };

struct Case {
  int64_t B, Tq, Tk, NHq, NHkv, HD;
  bool causal;
  Layout layout;
  std::string str() const {
    const char* l = layout == Layout::contiguous   ? "BTHD"
                    : layout == Layout::packed_qkv ? "QKV"
                                                   : "BHTD";
    return "B " + std::to_string(B) + " Tq " + std::to_string(Tq) + " Tk " + std::to_string(Tk) +
           " NHq " + std::to_string(NHq) + " NHkv " + std::to_string(NHkv) + " HD " +
           std::to_string(HD) + (causal ? " causal " : " ") + l;
  }
};

AttentionLayout layout_of(const Case& c) {
  switch (c.layout) {
    case Layout::packed_qkv:
      return AttentionLayout::packed_qkv(c.Tq, c.NHq, c.NHkv, c.HD);
    case Layout::bhsd: {
      const AttentionStrides q{c.NHq * c.Tq * c.HD, c.HD, c.Tq * c.HD};
      const AttentionStrides kv{c.NHkv * c.Tk * c.HD, c.HD, c.Tk * c.HD};
      return {q, kv, kv, q};
    }
    case Layout::contiguous:
      break;
  }
  return AttentionLayout::contiguous(c.Tq, c.Tk, c.NHq, c.NHkv, c.HD);
}

kiln::impl::AttnStrides strides(const AttentionStrides& s) {
  return {s.batch, s.token, s.head};
}

kiln::impl::AttnShape shape_of(const Case& c, bool deterministic) {
  kiln::impl::AttnShape s;
  s.B = static_cast<int>(c.B);
  s.Tq = static_cast<int>(c.Tq);
  s.Tk = static_cast<int>(c.Tk);
  s.NHq = static_cast<int>(c.NHq);
  s.NHkv = static_cast<int>(c.NHkv);
  s.HD = static_cast<int>(c.HD);
  s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.HD)));
  s.causal = c.causal;
  s.deterministic = deterministic;
  const AttentionLayout l = layout_of(c);
  s.q = strides(l.q);
  s.k = strides(l.k);
  s.v = strides(l.v);
  s.o = strides(l.o);
  return s;
}

// Structure: unique uids; each tensor written by at most one node (virtual ones exactly once,
// before any read); matmul shapes agree; the bound tensors carry the caller's strides.
void check_structure(const ca::Graph& g, const ca::Problem& p, bool backward) {
  std::set<int64_t> uids, written;
  for (const ca::Tensor& t : g.tensors) {
    CHECK(t.uid > 0);
    CHECK(uids.insert(t.uid).second);
  }
  for (const ca::Node& n : g.nodes) {
    INFO("node " << n.name);
    for (const int64_t in : n.in) {
      const ca::Tensor& t = g.tensor(in);
      if (t.is_virtual()) CHECK(written.count(in) == 1);  // produced before it is read
    }
    CHECK(written.insert(n.out).second);
    if (n.kind == ca::OpKind::matmul) {
      const ca::Tensor &a = g.tensor(n.in[0]), &b = g.tensor(n.in[1]), &c = g.tensor(n.out);
      CHECK(a.dim[3] == b.dim[2]);
      CHECK(c.dim[2] == a.dim[2]);
      CHECK(c.dim[3] == b.dim[3]);
      CHECK(c.dim[1] % b.dim[1] == 0);  // K/V heads broadcast over their query heads
    }
    if (n.kind == ca::OpKind::pointwise && n.pw == ca::Pw::binary_select) {
      REQUIRE(n.in.size() == 3);
      CHECK(g.tensor(n.in[2]).dtype == ca::DType::boolean);
    }
  }
  for (const ca::Tensor& t : g.tensors)
    if (t.is_virtual()) CHECK(written.count(t.uid) == 1);

  // The bound tensors, with the caller's strides (the head dim contiguous; K, V transposed).
  const auto bound = [&](ca::Bind b) -> const ca::Tensor& {
    const ca::Tensor* t = g.find(b);
    REQUIRE(t != nullptr);
    return *t;
  };
  const ca::Tensor& q = bound(ca::Bind::q);
  CHECK(q.dim == Dims{p.B, p.NHq, p.Tq, p.HD});
  CHECK(q.stride == Dims{p.q.b, p.q.h, p.q.t, 1});
  const ca::Tensor& k = bound(ca::Bind::k);
  CHECK(k.dim == Dims{p.B, p.NHkv, p.HD, p.Tk});
  CHECK(k.stride == Dims{p.k.b, p.k.h, 1, p.k.t});
  const ca::Tensor& o = bound(ca::Bind::o);
  CHECK(o.stride == Dims{p.o.b, p.o.h, p.o.t, 1});
  CHECK(o.dtype == ca::DType::bf16);
  const ca::Tensor& stats = bound(ca::Bind::stats);
  CHECK(stats.dtype == ca::DType::f32);
  CHECK(stats.dim == Dims{p.B, p.NHq, p.Tq, 1});
  CHECK(bound(ca::Bind::scale).by_value());
  CHECK((g.find(ca::Bind::dq) != nullptr) == backward);
  CHECK((g.find(ca::Bind::softmax_sum) != nullptr) == backward);
  CHECK((g.find(ca::Bind::dq_accum) != nullptr) == (backward && !p.deterministic));
  if (backward) {
    CHECK(bound(ca::Bind::dk).stride == Dims{p.k.b, p.k.h, p.k.t, 1});
    CHECK(bound(ca::Bind::dv).stride == Dims{p.v.b, p.v.h, p.v.t, 1});
    CHECK(bound(ca::Bind::dout).stride == Dims{p.o.b, p.o.h, p.o.t, 1});
  }
  // The causal mask's operations appear exactly when needed; the index shift only when the
  // (sliced) problem is not square.
  int gen_index = 0, shifts = 0;
  for (const ca::Node& n : g.nodes) {
    if (n.kind == ca::OpKind::pointwise && n.pw == ca::Pw::gen_index) ++gen_index;
    if (n.kind == ca::OpKind::pointwise && n.math == ca::DType::i32) ++shifts;
  }
  CHECK(gen_index == (p.causal ? 2 : 0));
  CHECK(shifts == (p.causal && p.Tq != p.Tk ? 2 : 0));
  // cuDNN's second GEMM of the forward takes P in the I/O type.
  if (!backward) {
    const ca::Node& bmm2 = g.nodes.back();
    CHECK(bmm2.kind == ca::OpKind::matmul);
    CHECK(g.tensor(bmm2.in[0]).dtype == ca::DType::bf16);
  }
}

Storage storage(std::vector<double>& v, int64_t base = 0) {
  // Shares the caller's vector without owning it.
  return Storage{std::shared_ptr<std::vector<double>>(&v, [](std::vector<double>*) {}), base};
}

void run_case(const Case& c, uint64_t stream) {
  INFO(c.str());
  const AttentionLayout l = layout_of(c);
  auto rng = kiln::test::make_rng(stream);
  // Buffers big enough for every layout (packed QKV holds all three).
  const int64_t q_span = c.B * c.Tq * (c.NHq + 2 * c.NHkv) * c.HD;
  std::vector<double> qkv =
      kiln::test::random_uniform_double(static_cast<size_t>(q_span), -1, 1, rng);
  std::vector<double> kbuf = kiln::test::random_uniform_double(
      static_cast<size_t>(c.B * c.Tk * c.NHkv * c.HD), -1, 1, rng);
  std::vector<double> vbuf = kiln::test::random_uniform_double(kbuf.size(), -1, 1, rng);
  const bool packed = c.layout == Layout::packed_qkv;
  const int64_t k_off = packed ? c.NHq * c.HD : 0, v_off = packed ? (c.NHq + c.NHkv) * c.HD : 0;
  std::vector<double>& kmem = packed ? qkv : kbuf;
  std::vector<double>& vmem = packed ? qkv : vbuf;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.HD));
  const size_t o_elems = static_cast<size_t>(c.B * c.Tq * c.NHq * c.HD);

  // Reference forward and backward over the same strided buffers.
  std::vector<double> ref_o(o_elems), ref_lse(static_cast<size_t>(c.B * c.NHq * c.Tq));
  kiln::ref::attention_fwd_ref(ref_o.data(), ref_lse.data(), qkv.data(), kmem.data() + k_off,
                               vmem.data() + v_off, c.B, c.Tq, c.Tk, c.NHq, c.NHkv, c.HD, scale,
                               c.causal, l);
  std::vector<double> dout = kiln::test::random_uniform_double(o_elems, -1, 1, rng);
  std::vector<double> ref_dq(qkv.size(), 0.0), ref_dk(kmem.size(), 0.0), ref_dv(vmem.size(), 0.0);
  std::vector<double>& ref_dk_mem = packed ? ref_dq : ref_dk;
  std::vector<double>& ref_dv_mem = packed ? ref_dq : ref_dv;
  kiln::ref::attention_bwd_ref(ref_dq.data(), ref_dk_mem.data() + k_off, ref_dv_mem.data() + v_off,
                               dout.data(), qkv.data(), kmem.data() + k_off, vmem.data() + v_off,
                               c.B, c.Tq, c.Tk, c.NHq, c.NHkv, c.HD, scale, c.causal, l);

  for (const bool deterministic : {false, true}) {
    const ca::Problem p = ca::make_problem(shape_of(c, deterministic));
    INFO((deterministic ? "deterministic" : "atomic dQ") << ", skipped rows " << p.skipped);
    CHECK(p.skipped == (c.causal && c.Tq > c.Tk ? c.Tq - c.Tk : 0));
    CHECK(p.Tq == c.Tq - p.skipped);
    const int64_t q_rows = p.skipped * l.q.token, o_rows = p.skipped * l.o.token;

    // Forward: O and stats, then kiln's glue for the skipped rows (O = 0, LSE = -inf).
    const ca::Graph fg = ca::forward_graph(p);
    check_structure(fg, p, false);
    std::vector<double> o(o_elems, std::numeric_limits<double>::quiet_NaN());
    std::vector<double> stats(static_cast<size_t>(p.B * p.NHq * p.Tq),
                              std::numeric_limits<double>::quiet_NaN());
    Interpreter fwd(fg);
    fwd.bind(fg.find(ca::Bind::q)->uid, storage(qkv, q_rows));
    fwd.bind(fg.find(ca::Bind::k)->uid, storage(kmem, k_off));
    fwd.bind(fg.find(ca::Bind::v)->uid, storage(vmem, v_off));
    fwd.bind(fg.find(ca::Bind::o)->uid, storage(o, o_rows));
    fwd.bind(fg.find(ca::Bind::stats)->uid, storage(stats));
    fwd.run(scale);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t t = 0; t < p.skipped; ++t)
        for (int64_t h = 0; h < c.NHq; ++h)
          for (int64_t d = 0; d < c.HD; ++d)
            o[static_cast<size_t>(b * l.o.batch + t * l.o.token + h * l.o.head + d)] = 0;
    double worst_o = 0;
    for (size_t i = 0; i < o_elems; ++i)
      worst_o = std::max(worst_o, std::fabs(o[i] - ref_o[i]));
    CHECK(worst_o < 1e-12);
    double worst_lse = 0;
    for (int64_t bh = 0; bh < c.B * c.NHq; ++bh)
      for (int64_t i = 0; i < c.Tq; ++i) {
        const double want = ref_lse[static_cast<size_t>(bh * c.Tq + i)];
        if (i < p.skipped) {
          CHECK(std::isinf(want));
          continue;
        }
        const double got = stats[static_cast<size_t>(bh * p.Tq + i - p.skipped)];
        worst_lse = std::max(worst_lse, std::fabs(got - want));
      }
    CHECK(worst_lse < 1e-12);

    // Backward: from the reference O and LSE (sliced as kiln hands them over).
    const ca::Graph bg = ca::backward_graph(p);
    check_structure(bg, p, true);
    std::vector<double> bstats(stats.size());
    for (int64_t bh = 0; bh < c.B * c.NHq; ++bh)
      for (int64_t i = 0; i < p.Tq; ++i)
        bstats[static_cast<size_t>(bh * p.Tq + i)] =
            ref_lse[static_cast<size_t>(bh * c.Tq + i + p.skipped)];
    std::vector<double> dq(qkv.size(), 0.0), dk(kmem.size(), 0.0), dv(vmem.size(), 0.0);
    std::vector<double>& dk_mem = packed ? dq : dk;
    std::vector<double>& dv_mem = packed ? dq : dv;
    std::vector<double> softmax_sum(stats.size()),
        dq_accum(static_cast<size_t>(p.B * p.NHq * p.Tq * p.HD));
    Interpreter bwd(bg);
    bwd.bind(bg.find(ca::Bind::q)->uid, storage(qkv, q_rows));
    bwd.bind(bg.find(ca::Bind::k)->uid, storage(kmem, k_off));
    bwd.bind(bg.find(ca::Bind::v)->uid, storage(vmem, v_off));
    bwd.bind(bg.find(ca::Bind::o)->uid, storage(ref_o, o_rows));
    bwd.bind(bg.find(ca::Bind::dout)->uid, storage(dout, o_rows));
    bwd.bind(bg.find(ca::Bind::stats)->uid, storage(bstats));
    bwd.bind(bg.find(ca::Bind::dq)->uid, storage(dq, q_rows));
    bwd.bind(bg.find(ca::Bind::dk)->uid, storage(dk_mem, k_off));
    bwd.bind(bg.find(ca::Bind::dv)->uid, storage(dv_mem, v_off));
    bwd.bind(bg.find(ca::Bind::softmax_sum)->uid, storage(softmax_sum));
    if (const ca::Tensor* acc = bg.find(ca::Bind::dq_accum)) bwd.bind(acc->uid, storage(dq_accum));
    bwd.run(scale);
    double worst = 0;
    for (size_t i = 0; i < dq.size(); ++i)
      worst = std::max(worst, std::fabs(dq[i] - ref_dq[i]));
    for (size_t i = 0; i < dk.size(); ++i)
      worst = std::max(worst, std::fabs(dk[i] - ref_dk[i]));
    for (size_t i = 0; i < dv.size(); ++i)
      worst = std::max(worst, std::fabs(dv[i] - ref_dv[i]));
    CHECK(worst < 1e-11);
  }
}

}  // namespace

TEST_CASE("cuDNN attention graphs compute the reference attention", "[attention]") {
  uint64_t stream = 900;
  for (const bool causal : {false, true}) {
    run_case({2, 13, 13, 4, 4, 16, causal, Layout::contiguous}, stream++);
    run_case({1, 9, 9, 6, 2, 8, causal, Layout::packed_qkv}, stream++);   // GQA 3, packed QKV
    run_case({2, 7, 11, 4, 1, 8, causal, Layout::bhsd}, stream++);        // MQA, Tq < Tk
    run_case({1, 12, 5, 2, 2, 8, causal, Layout::contiguous}, stream++);  // Tq > Tk
    run_case({1, 1, 6, 2, 1, 24, causal, Layout::contiguous}, stream++);  // one query
  }
}

TEST_CASE("cuDNN attention slices off causal rows that see no key", "[attention]") {
  kiln::impl::AttnShape s;
  s.B = 2;
  s.Tq = 200;
  s.Tk = 64;
  s.NHq = 4;
  s.NHkv = 2;
  s.HD = 96;
  s.causal = true;
  ca::Problem p = ca::make_problem(s);
  CHECK(p.skipped == 136);
  CHECK(p.Tq == 64);
  s.causal = false;
  p = ca::make_problem(s);
  CHECK(p.skipped == 0);
  CHECK(p.Tq == 200);
  s.causal = true;
  s.Tq = 64;
  s.Tk = 200;
  p = ca::make_problem(s);
  CHECK(p.skipped == 0);
  CHECK(p.Tq == 64);
}

TEST_CASE("cuDNN attention workspace parts are aligned and sized", "[attention]") {
  kiln::impl::AttnShape s;
  s.B = 3;
  s.Tq = 77;
  s.Tk = 77;
  s.NHq = 8;
  s.NHkv = 2;
  s.HD = 256;
  ca::Problem p = ca::make_problem(s);
  const ca::WorkspaceLayout f = ca::workspace_layout(p, false);
  CHECK(f.stats == 0);
  CHECK(f.stats_bytes == 3u * 8 * 77 * 4);
  CHECK(f.softmax_sum_bytes == 0);
  CHECK(f.dq_accum_bytes == 0);
  CHECK(f.kiln_bytes() % 256 == 0);
  CHECK(f.kiln_bytes() >= f.stats_bytes);
  const ca::WorkspaceLayout b = ca::workspace_layout(p, true);
  CHECK(b.softmax_sum % 256 == 0);
  CHECK(b.dq_accum % 256 == 0);
  CHECK(b.softmax_sum >= b.stats + b.stats_bytes);
  CHECK(b.dq_accum >= b.softmax_sum + b.softmax_sum_bytes);
  CHECK(b.dq_accum_bytes == 3u * 8 * 77 * 256 * 4);
  CHECK(b.kiln_bytes() >= b.dq_accum + b.dq_accum_bytes);
  CHECK(b.kiln_bytes() % 256 == 0);
  s.deterministic = true;
  p = ca::make_problem(s);
  const ca::WorkspaceLayout d = ca::workspace_layout(p, true);
  CHECK(d.dq_accum_bytes == 0);
  CHECK(d.kiln_bytes() < b.kiln_bytes());
}
