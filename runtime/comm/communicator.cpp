#include <algorithm>
#include <cstdio>

#include "runtime/comm/comm_common.hpp"

namespace kiln {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::mean:
      return "mean";
    case ReduceOp::max:
      return "max";
  }
  return "?";
}

Communicator::~Communicator() = default;

void Communicator::start_all_reduce(void* data, int64_t count, DType dtype, ReduceOp op,
                                    void* stream) {
  all_reduce(data, count, dtype, op, stream);
}

void Communicator::start_reduce_scatter(void* data, std::span<const int64_t> bounds, DType dtype,
                                        ReduceOp op, void* stream) {
  reduce_scatter(data, bounds, dtype, op, stream);
}

void Communicator::wait_started(void*) {}

void Communicator::check() {}

void Communicator::abort(const std::string&) {}

void SingleRankCommunicator::reduce_scatter(void*, std::span<const int64_t> bounds, DType, ReduceOp,
                                            void*) {
  impl::check_bounds("single-rank communicator", bounds, 1);
}

void SingleRankCommunicator::broadcast(void*, int64_t, DType, int root, void*) {
  impl::check_root("single-rank communicator", root, 1);
}

namespace impl {

std::string format_seconds(std::chrono::milliseconds ms) {
  char buf[32];
  const double s = static_cast<double>(ms.count()) / 1000.0;
  if (s >= 10 || s == static_cast<double>(static_cast<int64_t>(s))) {
    std::snprintf(buf, sizeof buf, "%.0f s", s);
  } else {
    std::snprintf(buf, sizeof buf, "%.3g s", s);
  }
  return buf;
}

const char* collective_name(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::all_reduce:
      return "all_reduce";
    case CollectiveKind::reduce_scatter:
      return "reduce_scatter";
    case CollectiveKind::all_gather:
      return "all_gather";
    case CollectiveKind::broadcast:
      return "broadcast";
    case CollectiveKind::barrier:
      return "barrier";
    case CollectiveKind::all_reduce_value:
      return "all_reduce_value";
  }
  return "?";
}

void check_count(const char* who, const char* op, int64_t count) {
  KILN_CHECK_ARG(count >= 0, who, ": ", op, " count must be >= 0 (got ", count, ")");
}

void check_reduce_dtype(const char* who, DType dtype, bool bf16_ok) {
  KILN_CHECK_ARG(dtype == DType::f32 || dtype == DType::f64 || (bf16_ok && dtype == DType::bf16),
                 who, ": cannot reduce ", dtype_name(dtype), " (f32 and f64",
                 bf16_ok ? " and bf16" : "", " only)");
}

void check_bounds(const char* who, std::span<const int64_t> bounds, int world_size) {
  KILN_CHECK_ARG(bounds.size() == static_cast<std::size_t>(world_size) + 1, who,
                 ": reduce_scatter needs world_size + 1 = ", world_size + 1, " bounds, got ",
                 bounds.size());
  KILN_CHECK_ARG(bounds[0] >= 0, who, ": reduce_scatter bounds must start at >= 0 (got ", bounds[0],
                 ")");
  for (std::size_t i = 1; i < bounds.size(); ++i) {
    KILN_CHECK_ARG(bounds[i] >= bounds[i - 1], who,
                   ": reduce_scatter bounds must not decrease (bounds[", i - 1,
                   "] = ", bounds[i - 1], ", bounds[", i, "] = ", bounds[i], ")");
  }
}

void check_root(const char* who, int root, int world_size) {
  KILN_CHECK_ARG(root >= 0 && root < world_size, who, ": broadcast root ", root, " is outside [0, ",
                 world_size, ")");
}

namespace {

template <typename T>
void accumulate(T* acc, const T* x, int64_t n, ReduceOp op) {
  if (op == ReduceOp::max) {
    // NaN wins, as in a sum: a non-finite contribution must not disappear from the result.
    for (int64_t i = 0; i < n; ++i)
      acc[i] = (acc[i] != acc[i] || x[i] != x[i]) ? acc[i] + x[i] : std::max(acc[i], x[i]);
  } else {
    for (int64_t i = 0; i < n; ++i)
      acc[i] += x[i];
  }
}

}  // namespace

void host_accumulate(void* acc, const void* x, int64_t n, DType dtype, ReduceOp op) {
  if (dtype == DType::f64) {
    accumulate(static_cast<double*>(acc), static_cast<const double*>(x), n, op);
  } else {
    KILN_CHECK(dtype == DType::f32, Status::internal_error, "host reduction of ",
               dtype_name(dtype));
    accumulate(static_cast<float*>(acc), static_cast<const float*>(x), n, op);
  }
}

void host_finish(void* acc, int64_t n, DType dtype, ReduceOp op, int world_size) {
  if (op != ReduceOp::mean) return;
  if (dtype == DType::f64) {
    double* a = static_cast<double*>(acc);
    const double w = world_size;
    for (int64_t i = 0; i < n; ++i)
      a[i] = a[i] / w;
  } else {
    float* a = static_cast<float*>(acc);
    const float w = static_cast<float>(world_size);
    for (int64_t i = 0; i < n; ++i)
      a[i] = a[i] / w;
  }
}

double scalar_accumulate(double acc, double x, ReduceOp op) {
  double a = acc;
  accumulate(&a, &x, 1, op);
  return a;
}

double scalar_finish(double acc, ReduceOp op, int world_size) {
  return op == ReduceOp::mean ? acc / static_cast<double>(world_size) : acc;
}

}  // namespace impl
}  // namespace kiln
