// Comparing a result against kiln's double-precision references (DESIGN.md section 4).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace kiln::test {

struct ErrorReport {
  double max_abs_error = 0;              // over the elements where both are finite
  std::size_t worst = 0;                 // index of the largest error
  std::size_t nonfinite_mismatches = 0;  // NaN/Inf where the other is not (or a different Inf)
  std::size_t first_nonfinite_mismatch = 0;
};

ErrorReport compare(const std::vector<double>& reference, const std::vector<double>& result);

// The tolerance rule: `result` passes when
//   max |result - reference| <= 2 * max |baseline - reference| + atol
// where `baseline` is a plain computation in the kernel's precision (bf16 inputs, fp32 arithmetic,
// op by op, bf16 outputs where the kernel writes bf16), and `result` is non-finite exactly where
// `reference` is (NaN and Inf propagate; nothing else may turn into one). Records a Catch check.
void check_rule(const std::string& what, const std::vector<double>& reference,
                const std::vector<double>& result, const std::vector<double>& baseline,
                double atol);

// Element-wise |result - reference| <= atol + rtol * |reference|, non-finite exactly where the
// reference is. For checks of references against finite differences and of exact identities.
void check_close(const std::string& what, const std::vector<double>& reference,
                 const std::vector<double>& result, double rtol, double atol);

// Bitwise equality of two runs (determinism).
template <typename T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b);

}  // namespace kiln::test

#include <cstring>
template <typename T>
bool kiln::test::bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}
