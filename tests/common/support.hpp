// Shared helpers of kiln's tests: seeded random inputs, bf16 rounding on the host, and central
// finite differences. The seed is printed once per process; KILN_TEST_SEED=<n> repeats a run.
#pragma once

#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace kiln::test {

// True when KILN_TEST_QUICK=1: GPU tests then skip their largest shapes (scripts/gpu-window.sh
// sets it for the smoke and sanitizer runs, since compute-sanitizer slows kernels a hundredfold).
bool quick_mode();

// The process's test seed: KILN_TEST_SEED if set, else fresh entropy. Printed on first use.
std::uint64_t seed();

// A generator seeded from seed() and `stream`, so each test draws its own reproducible sequence.
std::mt19937_64 make_rng(std::uint64_t stream = 0);

std::vector<float> random_uniform(std::size_t n, float lo, float hi, std::mt19937_64& rng);
std::vector<float> random_normal(std::size_t n, float mean, float stddev, std::mt19937_64& rng);
std::vector<double> random_uniform_double(std::size_t n, double lo, double hi,
                                          std::mt19937_64& rng);

// bf16 on the host (round to nearest even, as the device's __float2bfloat16).
std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& x);
std::vector<float> to_float(const std::vector<__nv_bfloat16>& x);
// Rounds every element to the nearest bf16 value, keeping float storage.
std::vector<float> round_to_bf16(const std::vector<float>& x);
std::vector<double> to_double(const std::vector<float>& x);
std::vector<double> to_double(const std::vector<__nv_bfloat16>& x);

// Central finite differences of a scalar function in double: g[i] = (f(x+h e_i) - f(x-h e_i)) / 2h.
std::vector<double> central_difference(const std::function<double(const std::vector<double>&)>& f,
                                       std::vector<double> x, double h = 1e-6);

// The scalar sum(w * y): backward passes are checked as the gradient of this against the
// analytic backward fed with dy = w.
double weighted_sum(const std::vector<double>& y, const std::vector<double>& w);

// The gradient of sum(w * f(v)) at v by central differences: what the backward of f must give
// for dy = w, one input at a time.
std::vector<double> weighted_gradient(
    const std::function<std::vector<double>(const std::vector<double>&)>& f,
    const std::vector<double>& v, const std::vector<double>& w);

// What an accumulating (+=) backward added: after - before. The references' backward passes
// accumulate; tests start them from random values, not zeros, so that a plain store fails.
std::vector<double> added(const std::vector<double>& after, const std::vector<double>& before);

}  // namespace kiln::test
