// An interpreter of kiln's cuDNN attention graphs (kernels/attention/attention_cudnn_graph.*) for
// attention_cudnn_graph_test.cpp: it evaluates a graph in double over the caller's strided
// buffers with cuDNN's semantics (batched matmul with GQA head broadcast, broadcasting pointwise
// ops, gen_index, reductions that also sum a head group, reshape as a strided view). A node that
// reads a tensor nobody defined fails the test.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include "kernels/attention/attention_cudnn_graph.hpp"

namespace kiln::test::cudnn_graph {

namespace ca = kiln::impl::cudnn_attn;

using Dims = std::array<int64_t, 4>;

// Storage shared by a tensor and its reshaped views; `base` is the tensor's first element.
struct Storage {
  std::shared_ptr<std::vector<double>> data;
  int64_t base = 0;
};

class Interpreter {
 public:
  explicit Interpreter(const ca::Graph& g) : g_(g) {}

  void bind(int64_t uid, Storage s) { vals_[uid] = std::move(s); }

  // Runs every node in order; a node reading a tensor nobody defined fails the test.
  void run(double scale) {
    for (const ca::Tensor& t : g_.tensors) {
      if (t.bind == ca::Bind::constant) bind_scalar(t.uid, t.value);
      if (t.bind == ca::Bind::scale) bind_scalar(t.uid, scale);
    }
    for (const ca::Node& n : g_.nodes) {
      INFO("node " << n.name);
      for (const int64_t in : n.in)
        REQUIRE(vals_.count(in) == 1);
      const ca::Tensor& out = g_.tensor(n.out);
      if (n.kind == ca::OpKind::reshape) {
        vals_[n.out] = vals_.at(n.in[0]);  // a view: same memory, the output's strides
        continue;
      }
      if (!vals_.count(n.out)) {
        REQUIRE(out.is_virtual());  // caller and workspace tensors are bound before the run
        vals_[n.out] = fresh(out);
      }
      switch (n.kind) {
        case ca::OpKind::matmul:
          matmul(n);
          break;
        case ca::OpKind::pointwise:
          pointwise(n);
          break;
        case ca::OpKind::reduction:
          reduction(n);
          break;
        case ca::OpKind::reshape:
          break;
      }
    }
  }

  double at(int64_t uid, const Dims& i) const {
    const ca::Tensor& t = g_.tensor(uid);
    const Storage& s = vals_.at(uid);
    return (*s.data)[static_cast<size_t>(s.base + offset(t, i))];
  }

 private:
  static int64_t offset(const ca::Tensor& t, const Dims& i) {
    return i[0] * t.stride[0] + i[1] * t.stride[1] + i[2] * t.stride[2] + i[3] * t.stride[3];
  }
  // cuDNN's broadcast of an operand of dims `d` to an index of a result: equal dims index
  // directly, dims of 1 broadcast, a dim dividing the result's is shared by consecutive groups
  // (the query heads of one K/V head).
  static Dims map_index(const Dims& d, const Dims& result_dim, const Dims& i) {
    Dims r{};
    for (int a = 0; a < 4; ++a) {
      if (d[a] == result_dim[a])
        r[a] = i[a];
      else if (d[a] == 1)
        r[a] = 0;
      else {
        REQUIRE(result_dim[a] % d[a] == 0);
        r[a] = i[a] / (result_dim[a] / d[a]);
      }
    }
    return r;
  }
  template <typename F>
  static void for_each(const Dims& d, F&& f) {
    Dims i{};
    for (i[0] = 0; i[0] < d[0]; ++i[0])
      for (i[1] = 0; i[1] < d[1]; ++i[1])
        for (i[2] = 0; i[2] < d[2]; ++i[2])
          for (i[3] = 0; i[3] < d[3]; ++i[3])
            f(i);
  }
  Storage fresh(const ca::Tensor& t) {
    int64_t size = 1;
    for (int a = 0; a < 4; ++a)
      size += (t.dim[a] - 1) * t.stride[a];
    return Storage{std::make_shared<std::vector<double>>(static_cast<size_t>(size),
                                                         std::numeric_limits<double>::quiet_NaN()),
                   0};
  }
  void bind_scalar(int64_t uid, double v) {
    vals_[uid] = Storage{std::make_shared<std::vector<double>>(1, v), 0};
  }
  void put(int64_t uid, const Dims& i, double v) {
    const ca::Tensor& t = g_.tensor(uid);
    Storage& s = vals_.at(uid);
    (*s.data)[static_cast<size_t>(s.base + offset(t, i))] = v;
  }
  double read(int64_t uid, const Dims& result_dim, const Dims& i) const {
    return at(uid, map_index(g_.tensor(uid).dim, result_dim, i));
  }

  void matmul(const ca::Node& n) {
    const ca::Tensor &a = g_.tensor(n.in[0]), &b = g_.tensor(n.in[1]), &c = g_.tensor(n.out);
    REQUIRE(a.dim[3] == b.dim[2]);  // the contraction
    REQUIRE(a.dim[2] == c.dim[2]);
    REQUIRE(b.dim[3] == c.dim[3]);
    for_each(c.dim, [&](const Dims& i) {
      const Dims ai = map_index({a.dim[0], a.dim[1], 1, 1}, {c.dim[0], c.dim[1], 1, 1}, i);
      const Dims bi = map_index({b.dim[0], b.dim[1], 1, 1}, {c.dim[0], c.dim[1], 1, 1}, i);
      double acc = 0;
      for (int64_t k = 0; k < a.dim[3]; ++k)
        acc += at(a.uid, {ai[0], ai[1], i[2], k}) * at(b.uid, {bi[0], bi[1], k, i[3]});
      put(c.uid, i, acc);
    });
  }

  void pointwise(const ca::Node& n) {
    const ca::Tensor& y = g_.tensor(n.out);
    for_each(y.dim, [&](const Dims& i) {
      const double x = read(n.in[0], y.dim, i);
      const double b = n.in.size() > 1 ? read(n.in[1], y.dim, i) : 0;
      double r = 0;
      switch (n.pw) {
        case ca::Pw::add:
          r = x + b;
          break;
        case ca::Pw::sub:
          r = x - b;
          break;
        case ca::Pw::mul:
          r = x * b;
          break;
        case ca::Pw::div:
          r = x / b;
          break;
        case ca::Pw::exp:
          r = std::exp(x);
          break;
        case ca::Pw::log:
          r = std::log(x);
          break;
        case ca::Pw::identity:
          r = x;
          break;
        case ca::Pw::cmp_ge:
          r = x >= b ? 1 : 0;
          break;
        case ca::Pw::gen_index:
          REQUIRE(n.axis >= 0);
          REQUIRE(n.axis < 4);
          r = static_cast<double>(i[static_cast<size_t>(n.axis)]);
          break;
        case ca::Pw::binary_select:
          r = read(n.in[2], y.dim, i) != 0 ? x : b;
          break;
      }
      put(y.uid, i, r);
    });
  }

  void reduction(const ca::Node& n) {
    const ca::Tensor &x = g_.tensor(n.in[0]), &y = g_.tensor(n.out);
    const double init = n.red == ca::Red::max ? -std::numeric_limits<double>::infinity() : 0.0;
    for_each(y.dim, [&](const Dims& i) { put(y.uid, i, init); });
    for_each(x.dim, [&](const Dims& i) {
      const Dims yi = map_index(y.dim, x.dim, i);
      const double v = at(x.uid, i), cur = at(y.uid, yi);
      put(y.uid, yi, n.red == ca::Red::max ? std::max(cur, v) : cur + v);
    });
  }

  const ca::Graph& g_;
  std::map<int64_t, Storage> vals_;
};

}  // namespace kiln::test::cudnn_graph
