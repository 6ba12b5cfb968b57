#include <cuda_runtime_api.h>

#include <algorithm>

#include "errors/check.hpp"
#include "runtime/comm/in_process_cuda.hpp"

namespace kiln::impl {
namespace {

template <typename T>
struct ReduceArgs {
  const T* in[kMaxInProcessDeviceRanks];  // (n) per rank
  T* out[kMaxInProcessDeviceRanks];       // (n) per output
  int world;
  int outs;
  int op;  // ReduceOp
  int64_t n;
};

// One thread per element (grid-stride): the rank-order reduction of the host path, element type
// arithmetic, so the result is bitwise that of the cpu-side communicators.
template <typename T>
__global__ void fixed_order_reduce_kernel(const ReduceArgs<T> a) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.n;
       i += stride) {
    T acc = a.in[0][i];
    for (int r = 1; r < a.world; ++r) {
      const T x = a.in[r][i];
      if (a.op == static_cast<int>(ReduceOp::max)) {
        acc = (acc != acc || x != x) ? acc + x : (x > acc ? x : acc);
      } else {
        acc += x;
      }
    }
    if (a.op == static_cast<int>(ReduceOp::mean)) acc = acc / static_cast<T>(a.world);
    for (int o = 0; o < a.outs; ++o)
      a.out[o][i] = acc;
  }
}

template <typename T>
void launch_reduce(const std::vector<const void*>& in, const std::vector<void*>& out, int64_t n,
                   ReduceOp op, cudaStream_t stream) {
  ReduceArgs<T> a{};
  a.world = static_cast<int>(in.size());
  a.outs = static_cast<int>(out.size());
  a.op = static_cast<int>(op);
  a.n = n;
  for (std::size_t r = 0; r < in.size(); ++r)
    a.in[r] = static_cast<const T*>(in[r]);
  for (std::size_t o = 0; o < out.size(); ++o)
    a.out[o] = static_cast<T*>(out[o]);
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 8192);
  fixed_order_reduce_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(a);
  KILN_LAUNCH_CHECK(stream);
}

cudaStream_t as_stream(void* s) {
  return static_cast<cudaStream_t>(s);
}
cudaEvent_t as_event(void* e) {
  return static_cast<cudaEvent_t>(e);
}

}  // namespace

InProcessDevice::InProcessDevice(int world_size) : world_(world_size) {
  KILN_CHECK_ARG(world_size >= 1 && world_size <= kMaxInProcessDeviceRanks,
                 "in-process communicator: at most ", kMaxInProcessDeviceRanks,
                 " ranks share a device (got ", world_size, ")");
  ready_.assign(static_cast<std::size_t>(world_size), nullptr);
}

InProcessDevice::~InProcessDevice() {
  for (void* e : ready_) {
    if (e) cudaEventDestroy(as_event(e));
  }
  if (done_) cudaEventDestroy(as_event(done_));
  if (stream_) cudaStreamDestroy(as_stream(stream_));
}

// On the device current on the first rank that communicates: every rank's buffers live there.
void InProcessDevice::create() {
  if (created_) return;
  cudaStream_t s = nullptr;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream_ = s;
  cudaEvent_t e = nullptr;
  KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  done_ = e;
  for (void*& r : ready_) {
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    r = e;
  }
  created_ = true;
}

void InProcessDevice::record_ready(int rank, void* stream) {
  create();
  KILN_CUDA_CHECK(
      cudaEventRecord(as_event(ready_[static_cast<std::size_t>(rank)]), as_stream(stream)));
}

void InProcessDevice::begin() {
  create();
  for (void* e : ready_)
    KILN_CUDA_CHECK(cudaStreamWaitEvent(as_stream(stream_), as_event(e), 0));
}

void InProcessDevice::reduce(const std::vector<const void*>& in, const std::vector<void*>& out,
                             int64_t n, DType dtype, ReduceOp op) {
  if (n <= 0 || out.empty()) return;
  KILN_CHECK(static_cast<int>(in.size()) == world_, Status::internal_error,
             "in-process reduce: ", in.size(), " inputs for ", world_, " ranks");
  if (dtype == DType::f64) {
    launch_reduce<double>(in, out, n, op, as_stream(stream_));
  } else {
    KILN_CHECK(dtype == DType::f32, Status::internal_error, "in-process reduce of ",
               dtype_name(dtype));
    launch_reduce<float>(in, out, n, op, as_stream(stream_));
  }
}

void InProcessDevice::copy(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0 || dst == src) return;
  KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, as_stream(stream_)));
}

void InProcessDevice::end() {
  KILN_CUDA_CHECK(cudaEventRecord(as_event(done_), as_stream(stream_)));
}

void InProcessDevice::wait_done(void* stream) {
  if (!created_) return;
  KILN_CUDA_CHECK(cudaStreamWaitEvent(as_stream(stream), as_event(done_), 0));
}

}  // namespace kiln::impl
