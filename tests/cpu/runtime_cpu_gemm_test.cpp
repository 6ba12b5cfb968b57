// The CPU backend's multi-threaded GEMM against the GEMM reference, and its independence of the
// thread count (every element is one sequential double sum, whatever the tiling).
#include <catch2/catch.hpp>

#include <vector>

#include "kernels/gemm/gemm_ref.hpp"
#include "runtime/cpu/gemm_cpu.hpp"
#include "runtime/cpu/thread_pool.hpp"
#include "tests/common/support.hpp"

using kiln::impl::cpu_gemm;
using kiln::impl::MatView;
using kiln::impl::ThreadPool;

namespace {

struct Shape {
  int64_t M, N, K;
};

// The three products of a linear layer, as the backend calls them, against gemm_ref.
void check_linear_products(ThreadPool& pool, Shape s, std::mt19937_64& rng) {
  const auto x = kiln::test::random_uniform(static_cast<std::size_t>(s.M * s.K), -1, 1, rng);
  const auto w = kiln::test::random_uniform(static_cast<std::size_t>(s.N * s.K), -1, 1, rng);
  const auto bias = kiln::test::random_uniform(static_cast<std::size_t>(s.N), -1, 1, rng);
  const auto dy = kiln::test::random_uniform(static_cast<std::size_t>(s.M * s.N), -1, 1, rng);
  std::vector<float> pack(static_cast<std::size_t>(
      pool.size() * kiln::impl::gemm_pack_elements(std::max({s.M, s.N, s.K}))));
  INFO("M " << s.M << " N " << s.N << " K " << s.K << " threads " << pool.size());

  // Forward: Y = X W^T + b.
  std::vector<float> y(static_cast<std::size_t>(s.M * s.N)), y_ref(y.size());
  cpu_gemm<float>(pool, s.M, s.N, s.K, {x.data(), s.K, 1}, {w.data(), 1, s.K}, y.data(), s.N, false,
                  bias.data(), pack.data());
  kiln::ref::GemmRefArgs<float> a;
  a.M = s.M;
  a.N = s.N;
  a.K = s.K;
  a.trans_b = true;
  a.epilogue = kiln::ref::Epilogue::bias;
  a.a = x.data();
  a.b = w.data();
  a.bias = bias.data();
  a.d = y_ref.data();
  kiln::ref::gemm_ref(a);
  for (std::size_t i = 0; i < y.size(); ++i)
    REQUIRE(y[i] == Approx(y_ref[i]).epsilon(1e-6).margin(1e-6));

  // dX = dY W.
  std::vector<float> dx(static_cast<std::size_t>(s.M * s.K)), dx_ref(dx.size());
  cpu_gemm<float>(pool, s.M, s.K, s.N, {dy.data(), s.N, 1}, {w.data(), s.K, 1}, dx.data(), s.K,
                  false, nullptr, pack.data());
  kiln::ref::GemmRefArgs<float> b;
  b.M = s.M;
  b.N = s.K;
  b.K = s.N;
  b.a = dy.data();
  b.b = w.data();
  b.d = dx_ref.data();
  kiln::ref::gemm_ref(b);
  for (std::size_t i = 0; i < dx.size(); ++i)
    REQUIRE(dx[i] == Approx(dx_ref[i]).epsilon(1e-6).margin(1e-6));

  // dW += dY^T X, starting from a non-zero dW (accumulation over micro-steps).
  std::vector<float> dw =
      kiln::test::random_uniform(static_cast<std::size_t>(s.N * s.K), -1, 1, rng);
  std::vector<float> dw_ref = dw;
  cpu_gemm<float>(pool, s.N, s.K, s.M, {dy.data(), 1, s.N}, {x.data(), s.K, 1}, dw.data(), s.K,
                  true, nullptr, pack.data());
  kiln::ref::GemmRefArgs<float> c;
  c.M = s.N;
  c.N = s.K;
  c.K = s.M;
  c.trans_a = true;
  c.beta = 1;
  c.a = dy.data();
  c.b = x.data();
  c.c = dw_ref.data();
  c.d = dw_ref.data();
  kiln::ref::gemm_ref(c);
  for (std::size_t i = 0; i < dw.size(); ++i)
    REQUIRE(dw[i] == Approx(dw_ref[i]).epsilon(1e-6).margin(1e-6));

  // db += colsum(dY).
  std::vector<float> db(static_cast<std::size_t>(s.N), 0.5f);
  kiln::impl::cpu_colsum_accumulate<float>(pool, db.data(), dy.data(), s.M, s.N);
  for (int64_t n = 0; n < s.N; ++n) {
    double sum = 0.5;
    for (int64_t m = 0; m < s.M; ++m)
      sum += dy[static_cast<std::size_t>(m * s.N + n)];
    REQUIRE(db[static_cast<std::size_t>(n)] == Approx(sum).epsilon(1e-6).margin(1e-6));
  }
}

}  // namespace

TEST_CASE("the CPU GEMM computes a linear layer's three products as gemm_ref does", "[runtime]") {
  auto rng = kiln::test::make_rng(101);
  ThreadPool one(1), three(3);
  // Sizes that are not multiples of the 4 x 8 tiles, and degenerate ones.
  const Shape shapes[] = {{1, 1, 1},    {3, 5, 7},   {17, 9, 33},
                          {64, 48, 16}, {5, 130, 3}, {128, 1, 40}};
  for (const Shape& s : shapes) {
    check_linear_products(one, s, rng);
    check_linear_products(three, s, rng);
  }
}

TEST_CASE("the CPU GEMM gives the same bits on any number of threads", "[runtime]") {
  auto rng = kiln::test::make_rng(102);
  const int64_t M = 37, N = 53, K = 91;
  const auto a = kiln::test::random_uniform(static_cast<std::size_t>(M * K), -1, 1, rng);
  const auto b = kiln::test::random_uniform(static_cast<std::size_t>(N * K), -1, 1, rng);
  std::vector<float> results[3];
  int i = 0;
  for (int threads : {1, 2, 5}) {
    ThreadPool pool(threads);
    std::vector<float> pack(static_cast<std::size_t>(threads * kiln::impl::gemm_pack_elements(K)));
    results[i].assign(static_cast<std::size_t>(M * N), 0.0f);
    cpu_gemm<float>(pool, M, N, K, {a.data(), K, 1}, {b.data(), 1, K}, results[i].data(), N, false,
                    nullptr, pack.data());
    ++i;
  }
  CHECK(results[0] == results[1]);
  CHECK(results[0] == results[2]);
  // And equal to a naive double-accumulating loop, bit for bit.
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) {
        s += static_cast<double>(a[static_cast<std::size_t>(m * K + k)]) *
             static_cast<double>(b[static_cast<std::size_t>(n * K + k)]);
      }
      REQUIRE(results[0][static_cast<std::size_t>(m * N + n)] == static_cast<float>(s));
    }
  }
}

TEST_CASE("the thread pool runs every index once and reports a body's exception", "[runtime]") {
  ThreadPool pool(3);
  std::vector<int> hits(1000, 0);
  pool.parallel_for(1000, 1, [&](int, int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      hits[static_cast<std::size_t>(i)] += 1;
  });
  for (int h : hits)
    REQUIRE(h == 1);
  CHECK_THROWS_AS(pool.parallel_for(10, 1,
                                    [&](int part, int64_t, int64_t) {
                                      if (part == 1) throw std::runtime_error("boom");
                                    }),
                  std::runtime_error);
  // Still usable afterwards.
  int64_t total = 0;
  std::mutex m;
  pool.parallel_for(100, 1, [&](int, int64_t b, int64_t e) {
    std::lock_guard<std::mutex> lock(m);
    total += e - b;
  });
  CHECK(total == 100);
}
