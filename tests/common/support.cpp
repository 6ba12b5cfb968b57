#include "tests/common/support.hpp"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace kiln::test {

bool quick_mode() {
  const char* env = std::getenv("KILN_TEST_QUICK");
  return env && *env && std::string(env) != "0";
}

std::uint64_t seed() {
  static std::once_flag once;
  static std::uint64_t value = 0;
  std::call_once(once, [] {
    if (const char* env = std::getenv("KILN_TEST_SEED"); env && *env) {
      value = std::strtoull(env, nullptr, 10);
    } else {
      std::random_device rd;
      value = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    }
    std::fprintf(stderr, "kiln test seed: %llu (KILN_TEST_SEED=%llu repeats this run)\n",
                 static_cast<unsigned long long>(value), static_cast<unsigned long long>(value));
  });
  return value;
}

std::mt19937_64 make_rng(std::uint64_t stream) {
  std::seed_seq seq{seed(), stream, std::uint64_t{0x6b696c6e}};
  return std::mt19937_64(seq);
}

std::vector<float> random_uniform(std::size_t n, float lo, float hi, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v)
    x = d(rng);
  return v;
}

std::vector<float> random_normal(std::size_t n, float mean, float stddev, std::mt19937_64& rng) {
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v)
    x = d(rng);
  return v;
}

std::vector<double> random_uniform_double(std::size_t n, double lo, double hi,
                                          std::mt19937_64& rng) {
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v)
    x = d(rng);
  return v;
}

std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& x) {
  std::vector<__nv_bfloat16> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    y[i] = __float2bfloat16(x[i]);
  return y;
}

std::vector<float> to_float(const std::vector<__nv_bfloat16>& x) {
  std::vector<float> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    y[i] = __bfloat162float(x[i]);
  return y;
}

std::vector<float> round_to_bf16(const std::vector<float>& x) {
  return to_float(to_bf16(x));
}

std::vector<double> to_double(const std::vector<float>& x) {
  return std::vector<double>(x.begin(), x.end());
}

std::vector<double> to_double(const std::vector<__nv_bfloat16>& x) {
  std::vector<double> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    y[i] = __bfloat162float(x[i]);
  return y;
}

std::vector<double> central_difference(const std::function<double(const std::vector<double>&)>& f,
                                       std::vector<double> x, double h) {
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = f(x);
    x[i] = saved - h;
    const double down = f(x);
    x[i] = saved;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

double weighted_sum(const std::vector<double>& y, const std::vector<double>& w) {
  double s = 0;
  for (std::size_t i = 0; i < y.size(); ++i)
    s += y[i] * w[i];
  return s;
}

std::vector<double> weighted_gradient(
    const std::function<std::vector<double>(const std::vector<double>&)>& f,
    const std::vector<double>& v, const std::vector<double>& w) {
  return central_difference([&](const std::vector<double>& x) { return weighted_sum(f(x), w); }, v);
}

std::vector<double> added(const std::vector<double>& after, const std::vector<double>& before) {
  std::vector<double> d(after.size());
  for (std::size_t i = 0; i < after.size(); ++i)
    d[i] = after[i] - before[i];
  return d;
}

}  // namespace kiln::test
