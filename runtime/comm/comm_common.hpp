// Internal: what the communicators share: argument checks, the deadline clock, and the
// fixed-order host reduction that makes the in-process and TCP communicators bitwise equal.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "errors/check.hpp"
#include "kiln/communicator.hpp"

namespace kiln::impl {

using Clock = std::chrono::steady_clock;

// Seconds for messages: "0.25 s", "600 s".
std::string format_seconds(std::chrono::milliseconds ms);

// The collectives, as names for messages and codes for the wire / the in-process slots.
enum class CollectiveKind : uint32_t {
  all_reduce = 1,
  reduce_scatter = 2,
  all_gather = 3,
  broadcast = 4,
  barrier = 5,
  all_reduce_value = 6,
};
const char* collective_name(CollectiveKind kind);

// Argument checks every communicator runs before it communicates (kiln::Error(invalid_argument)).
void check_count(const char* who, const char* op, int64_t count);
void check_reduce_dtype(const char* who, DType dtype, bool bf16_ok);
void check_bounds(const char* who, std::span<const int64_t> bounds, int world_size);
void check_root(const char* who, int root, int world_size);

// acc (n) := acc + x, element by element in the element type (the order of a rank-order sum).
void host_accumulate(void* acc, const void* x, int64_t n, DType dtype, ReduceOp op);
// acc (n) := acc / world for ReduceOp::mean (nothing otherwise), in the element type.
void host_finish(void* acc, int64_t n, DType dtype, ReduceOp op, int world_size);
// The same two steps over doubles (all_reduce_value).
double scalar_accumulate(double acc, double x, ReduceOp op);
double scalar_finish(double acc, ReduceOp op, int world_size);

inline std::size_t bytes_of(int64_t count, DType dtype) {
  return static_cast<std::size_t>(count) * dtype_size(dtype);
}
inline char* byte_ptr(void* p, int64_t elements, DType dtype) {
  return static_cast<char*>(p) + bytes_of(elements, dtype);
}

}  // namespace kiln::impl
