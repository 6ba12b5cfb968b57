#include "tests/common/compare.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>

namespace kiln::test {
namespace {

bool same_nonfinite(double a, double b) {
  if (std::isnan(a)) return std::isnan(b);
  if (std::isinf(a)) return a == b;
  return false;
}

}  // namespace

ErrorReport compare(const std::vector<double>& reference, const std::vector<double>& result) {
  REQUIRE(reference.size() == result.size());
  ErrorReport r;
  for (std::size_t i = 0; i < reference.size(); ++i) {
    const double a = reference[i], b = result[i];
    if (!std::isfinite(a) || !std::isfinite(b)) {
      if (!same_nonfinite(a, b)) {
        if (r.nonfinite_mismatches++ == 0) r.first_nonfinite_mismatch = i;
      }
      continue;
    }
    const double e = std::fabs(a - b);
    if (e > r.max_abs_error) {
      r.max_abs_error = e;
      r.worst = i;
    }
  }
  return r;
}

void check_rule(const std::string& what, const std::vector<double>& reference,
                const std::vector<double>& result, const std::vector<double>& baseline,
                double atol) {
  const ErrorReport got = compare(reference, result);
  const ErrorReport base = compare(reference, baseline);
  const double bound = 2 * base.max_abs_error + atol;
  std::ostringstream os;
  os << what << ": max error " << got.max_abs_error << " at " << got.worst;
  if (!reference.empty())
    os << " (reference " << reference[got.worst] << ", got " << result[got.worst] << ")";
  os << ", bound 2 * " << base.max_abs_error << " + " << atol << " = " << bound;
  if (got.nonfinite_mismatches)
    os << "; " << got.nonfinite_mismatches << " non-finite mismatch(es), first at "
       << got.first_nonfinite_mismatch << " (reference " << reference[got.first_nonfinite_mismatch]
       << ", got " << result[got.first_nonfinite_mismatch] << ")";
  INFO(os.str());
  CHECK(got.nonfinite_mismatches == 0);
  CHECK(got.max_abs_error <= bound);
}

void check_close(const std::string& what, const std::vector<double>& reference,
                 const std::vector<double>& result, double rtol, double atol) {
  REQUIRE(reference.size() == result.size());
  std::size_t failures = 0, first = 0;
  double worst_excess = 0;
  for (std::size_t i = 0; i < reference.size(); ++i) {
    const double a = reference[i], b = result[i];
    bool ok;
    if (!std::isfinite(a) || !std::isfinite(b)) {
      ok = same_nonfinite(a, b);
    } else {
      const double excess = std::fabs(a - b) - (atol + rtol * std::fabs(a));
      ok = excess <= 0;
      if (!ok && excess > worst_excess) worst_excess = excess;
    }
    if (!ok && failures++ == 0) first = i;
  }
  std::ostringstream os;
  os << what << ": " << failures << " of " << reference.size() << " elements outside atol " << atol
     << " + rtol " << rtol;
  if (failures)
    os << "; first at " << first << " (reference " << reference[first] << ", got " << result[first]
       << ")";
  INFO(os.str());
  CHECK(failures == 0);
}

}  // namespace kiln::test
