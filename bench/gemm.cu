// bench_gemm: TFLOP/s of every kiln GEMM backend (forced, and AUTO) beside cuBLAS (cublasGemmEx,
// no epilogue), cuBLASLt with the same fused epilogue (kiln's cuBLASLt backend: cuBLASLt does the
// work, kiln only caches its descriptors), and the unfused alternative (cublasGemmEx followed by
// a separate epilogue kernel), all in one run. Shapes: 4096^3, 8192^3 and GPT-2 124M's layer
// GEMMs (B*T = 8192 tokens) forward and backward.
//
// Every implementation's output is checked against the unfused cuBLAS result before it is timed.
// --table FILE writes the fastest kiln backend of each problem in kiln_gemm_table_load's format
// (AUTO then uses it: kiln_gemm_table_load(context, FILE)).
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/harness/harness.hpp"
#include "errors/check.hpp"
#include "errors/check_libs.hpp"
#include "kiln/device.hpp"
#include "kiln/gemm.h"

namespace {

using bf16 = __nv_bfloat16;
using kiln::bench::DType;

// ---- the unfused epilogues: separate kernels after a plain cuBLAS GEMM ----------------------

__device__ float gelu_tanh(float x) {
  return 0.5f * x * (1.0f + tanhf(0.7978845608f * (x + 0.044715f * x * x * x)));
}
__device__ float gelu_tanh_grad(float x) {
  const float t = tanhf(0.7978845608f * (x + 0.044715f * x * x * x));
  return 0.5f * (1.0f + t) +
         0.5f * x * (1.0f - t * t) * 0.7978845608f * (1.0f + 3.0f * 0.044715f * x * x);
}

// d (M, N) bf16 in place, 8 elements (16 bytes) per thread per step; N % 8 == 0.
// mode 0: d += bias; 1: pre = d + bias, d = gelu(pre); 2: d *= gelu'(pre).
__global__ void epilogue_kernel(bf16* d, bf16* pre, const bf16* bias, std::int64_t M,
                                std::int64_t N, int mode) {
  const std::int64_t total = M * N / 8;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t e = i * 8, n = e % N;
    uint4 dv = *reinterpret_cast<const uint4*>(d + e);
    bf16* dx = reinterpret_cast<bf16*>(&dv);
    uint4 pv = mode == 0 ? uint4{} : *reinterpret_cast<const uint4*>(pre + e);
    bf16* px = reinterpret_cast<bf16*>(&pv);
    uint4 bv = mode == 2 ? uint4{} : *reinterpret_cast<const uint4*>(bias + n);
    const bf16* bx = reinterpret_cast<const bf16*>(&bv);
    for (int j = 0; j < 8; ++j) {
      float v = __bfloat162float(dx[j]);
      if (mode == 0) {
        v += __bfloat162float(bx[j]);
      } else if (mode == 1) {
        v += __bfloat162float(bx[j]);
        px[j] = __float2bfloat16(v);
        v = gelu_tanh(v);
      } else {
        v *= gelu_tanh_grad(__bfloat162float(px[j]));
      }
      dx[j] = __float2bfloat16(v);
    }
    *reinterpret_cast<uint4*>(d + e) = dv;
    if (mode == 1) *reinterpret_cast<uint4*>(pre + e) = pv;
  }
}

// db (N) fp32 += column sums of dy (M, N) bf16: 64 columns per block (two per lane), 8 row
// groups reduced through shared memory in a fixed order.
__global__ void column_sum_kernel(float* db, const bf16* dy, std::int64_t M, std::int64_t N) {
  __shared__ float part[8][64];
  const int lane = threadIdx.x % 32, group = threadIdx.x / 32;
  const std::int64_t col = blockIdx.x * 64 + 2 * lane;
  float s0 = 0, s1 = 0;
  if (col < N)
    for (std::int64_t r = group; r < M; r += 8) {
      const __nv_bfloat162 v = *reinterpret_cast<const __nv_bfloat162*>(dy + r * N + col);
      s0 += __low2float(v);
      s1 += __high2float(v);
    }
  part[group][2 * lane] = s0;
  part[group][2 * lane + 1] = s1;
  __syncthreads();
  if (threadIdx.x < 64 && blockIdx.x * 64 + threadIdx.x < N) {
    float s = 0;
    for (int g = 0; g < 8; ++g)
      s += part[g][threadIdx.x];
    db[blockIdx.x * 64 + threadIdx.x] += s;
  }
}

// ---- problems ----------------------------------------------------------------------------------

struct Problem {
  std::string name;
  std::int64_t M, N, K;
  bool ta, tb;
  kiln_gemm_epilogue_t epi;
  bool f32;    // fp32 C/D (the dW accumulation)
  float beta;  // 1 for residual / accumulation (C = D in place)
};

std::vector<Problem> problems(bool quick) {
  const std::int64_t BT = quick ? 2048 : 8192, C = 768, V = 50304;
  std::vector<Problem> p;
  for (std::int64_t n :
       quick ? std::vector<std::int64_t>{4096} : std::vector<std::int64_t>{4096, 8192}) {
    p.push_back({"square", n, n, n, false, true, KILN_GEMM_EPILOGUE_NONE, false, 0});
    p.push_back({"square", n, n, n, false, false, KILN_GEMM_EPILOGUE_NONE, false, 0});
  }
  p.push_back({"gpt2 qkv", BT, 3 * C, C, false, true, KILN_GEMM_EPILOGUE_BIAS, false, 0});
  p.push_back({"gpt2 fc", BT, 4 * C, C, false, true, KILN_GEMM_EPILOGUE_BIAS_GELU, false, 0});
  p.push_back({"gpt2 attn proj", BT, C, C, false, true, KILN_GEMM_EPILOGUE_RESIDUAL, false, 1});
  p.push_back({"gpt2 fc proj", BT, C, 4 * C, false, true, KILN_GEMM_EPILOGUE_RESIDUAL, false, 1});
  p.push_back({"gpt2 lm head", BT, V, C, false, true, KILN_GEMM_EPILOGUE_NONE, false, 0});
  p.push_back({"gpt2 dX fc proj", BT, 4 * C, C, false, false, KILN_GEMM_EPILOGUE_DGELU, false, 0});
  p.push_back({"gpt2 dX qkv", BT, C, 3 * C, false, false, KILN_GEMM_EPILOGUE_NONE, false, 0});
  p.push_back({"gpt2 dX lm head", BT, C, V, false, false, KILN_GEMM_EPILOGUE_NONE, false, 0});
  p.push_back({"gpt2 dW qkv", 3 * C, C, BT, true, false, KILN_GEMM_EPILOGUE_BIAS_GRAD, true, 1});
  p.push_back({"gpt2 dW fc", 4 * C, C, BT, true, false, KILN_GEMM_EPILOGUE_BIAS_GRAD, true, 1});
  p.push_back(
      {"gpt2 dW fc proj", C, 4 * C, BT, true, false, KILN_GEMM_EPILOGUE_BIAS_GRAD, true, 1});
  p.push_back({"gpt2 dW lm head", V, C, BT, true, false, KILN_GEMM_EPILOGUE_NONE, true, 1});
  return p;
}

std::string shape_of(const Problem& p) {
  return std::to_string(p.M) + "x" + std::to_string(p.N) + "x" + std::to_string(p.K) + " " +
         (p.ta ? "T" : "N") + (p.tb ? "T" : "N") + (p.f32 ? " f32" : "");
}

struct Buffers {
  bf16 *a = nullptr, *b = nullptr, *bias = nullptr, *pre = nullptr;
  void* d = nullptr;
  float* db = nullptr;
  std::size_t d_bytes = 0;
};

// Fills the inputs and resets the outputs to the same values, so every implementation's check
// run starts from identical state (C = D accumulates in place).
void reset_outputs(const Problem& p, const Buffers& b, cudaStream_t s) {
  kiln::bench::fill_random(b.d, p.M * p.N, p.f32 ? DType::f32 : DType::bf16, 4, -1, 1, s);
  kiln::bench::fill_random(b.db, p.M, DType::f32, 5, -1, 1, s);
  if (p.epi != KILN_GEMM_EPILOGUE_BIAS_GELU)
    kiln::bench::fill_random(b.pre, p.M * p.N, DType::bf16, 6, -3, 3, s);
}

}  // namespace

int main(int argc, char** argv) {
  // The harness parses the common options; --table is this program's own.
  std::string table_path;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::string(argv[i]) == "--table" && i + 1 < argc) {
      table_path = argv[++i];
      continue;
    }
    rest.push_back(argv[i]);
  }
  const kiln::bench::Options opt = kiln::bench::parse_options(
      static_cast<int>(rest.size()), rest.data(),
      "bench_gemm: kiln GEMM backends vs cuBLAS / cuBLASLt (fused and unfused epilogues). Also: "
      "--table FILE writes the fastest kiln backend per problem for kiln_gemm_table_load.");
  if (const int skip = kiln::bench::device_or_skip()) return skip;

  kiln::Device device(0);
  cudaStream_t stream = device.stream();
  kiln::GemmContext ctx(device.cublaslt(), device.workspace(), device.workspace_bytes());
  cublasHandle_t cublas = nullptr;
  KILN_CUBLAS_CHECK(cublasCreate(&cublas));
  KILN_CUBLAS_CHECK(cublasSetStream(cublas, stream));

  kiln::bench::Report report("gemm", opt);
  if (!opt.skip_ceilings) report.set_ceilings(kiln::bench::measure_ceilings(stream, opt));

  for (const Problem& p : problems(opt.quick)) {
    Buffers buf;
    const std::size_t cd = p.f32 ? 4 : 2;
    KILN_CUDA_CHECK(cudaMalloc(&buf.a, p.M * p.K * 2));
    KILN_CUDA_CHECK(cudaMalloc(&buf.b, p.N * p.K * 2));
    KILN_CUDA_CHECK(cudaMalloc(&buf.bias, p.N * 2));
    KILN_CUDA_CHECK(cudaMalloc(&buf.pre, p.M * p.N * 2));
    KILN_CUDA_CHECK(cudaMalloc(&buf.d, p.M * p.N * cd));
    KILN_CUDA_CHECK(cudaMalloc(&buf.db, p.M * 4 + p.N * 4));
    buf.d_bytes = p.M * p.N * cd;
    void* check = nullptr;  // the unfused cuBLAS result every implementation is compared with
    KILN_CUDA_CHECK(cudaMalloc(&check, buf.d_bytes));
    kiln::bench::fill_random(buf.a, p.M * p.K, DType::bf16, 1, -1, 1, stream);
    kiln::bench::fill_random(buf.b, p.N * p.K, DType::bf16, 2, -1, 1, stream);
    kiln::bench::fill_random(buf.bias, p.N, DType::bf16, 3, -1, 1, stream);

    kiln_gemm_params_t kp;
    kiln_gemm_params_init(&kp);
    kp.m = p.M;
    kp.n = p.N;
    kp.k = p.K;
    kp.trans_a = p.ta;
    kp.trans_b = p.tb;
    kp.a = buf.a;
    kp.b = buf.b;
    kp.c = p.beta != 0 ? buf.d : nullptr;
    kp.d = buf.d;
    kp.beta = p.beta;
    kp.cd_dtype = p.f32 ? KILN_DTYPE_F32 : KILN_DTYPE_BF16;
    kp.epilogue = p.epi;
    kp.bias = p.epi == KILN_GEMM_EPILOGUE_DGELU || p.epi == KILN_GEMM_EPILOGUE_NONE ||
                      p.epi == KILN_GEMM_EPILOGUE_BIAS_GRAD
                  ? nullptr
                  : buf.bias;
    kp.pre_gelu_out = buf.pre;
    kp.pre_gelu = buf.pre;
    kp.bias_grad = buf.db;

    // The unfused alternative: cublasGemmEx (beta*C included), then the epilogue kernel. For
    // bias_grad the column sums of dY = A (K, M) run as their own kernel.
    const float alpha = 1.0f;
    auto unfused = [&](cudaStream_t s, bool gemm_only) {
      KILN_CUBLAS_CHECK(cublasGemmEx(
          cublas, p.tb ? CUBLAS_OP_T : CUBLAS_OP_N, p.ta ? CUBLAS_OP_T : CUBLAS_OP_N,
          static_cast<int>(p.N), static_cast<int>(p.M), static_cast<int>(p.K), &alpha, buf.b,
          CUDA_R_16BF, static_cast<int>(p.tb ? p.K : p.N), buf.a, CUDA_R_16BF,
          static_cast<int>(p.ta ? p.M : p.K), &p.beta, buf.d, p.f32 ? CUDA_R_32F : CUDA_R_16BF,
          static_cast<int>(p.N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      if (gemm_only) return;
      const int threads = 256;
      const int blocks =
          static_cast<int>(std::min<std::int64_t>((p.M * p.N / 8 + 255) / 256, 4096));
      switch (p.epi) {
        case KILN_GEMM_EPILOGUE_BIAS:
        case KILN_GEMM_EPILOGUE_RESIDUAL:
          epilogue_kernel<<<blocks, threads, 0, s>>>(static_cast<bf16*>(buf.d), buf.pre, buf.bias,
                                                     p.M, p.N, 0);
          break;
        case KILN_GEMM_EPILOGUE_BIAS_GELU:
          epilogue_kernel<<<blocks, threads, 0, s>>>(static_cast<bf16*>(buf.d), buf.pre, buf.bias,
                                                     p.M, p.N, 1);
          break;
        case KILN_GEMM_EPILOGUE_DGELU:
          epilogue_kernel<<<blocks, threads, 0, s>>>(static_cast<bf16*>(buf.d), buf.pre, buf.bias,
                                                     p.M, p.N, 2);
          break;
        case KILN_GEMM_EPILOGUE_BIAS_GRAD:
          // dY is A stored (K, M): column sums over its K rows.
          column_sum_kernel<<<static_cast<unsigned>((p.M + 63) / 64), 256, 0, s>>>(buf.db, buf.a,
                                                                                   p.K, p.M);
          break;
        default:
          return;
      }
      KILN_LAUNCH_CHECK(s);
    };

    // Reference output for the checks: the unfused path from the reset state.
    reset_outputs(p, buf, stream);
    unfused(stream, false);
    KILN_CUDA_CHECK(cudaMemcpyAsync(check, buf.d, buf.d_bytes, cudaMemcpyDeviceToDevice, stream));
    std::vector<float> want_db(p.M);
    KILN_CUDA_CHECK(
        cudaMemcpyAsync(want_db.data(), buf.db, p.M * 4, cudaMemcpyDeviceToHost, stream));
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));

    // Largest |difference| relative to the largest |value|, over D (and the bias gradient).
    auto max_rel_diff = [&]() {
      const std::size_t n = p.M * p.N;
      std::vector<float> got(n), want(n);
      auto fetch = [&](void* src, std::vector<float>& out) {
        if (p.f32) {
          KILN_CUDA_CHECK(cudaMemcpy(out.data(), src, n * 4, cudaMemcpyDeviceToHost));
        } else {
          std::vector<bf16> h(n);
          KILN_CUDA_CHECK(cudaMemcpy(h.data(), src, n * 2, cudaMemcpyDeviceToHost));
          for (std::size_t i = 0; i < n; ++i)
            out[i] = __bfloat162float(h[i]);
        }
      };
      fetch(buf.d, got);
      fetch(check, want);
      double diff = 0, scale = 1e-30;
      for (std::size_t i = 0; i < n; ++i) {
        if (!std::isfinite(got[i])) return static_cast<double>(INFINITY);
        diff = std::max(diff, static_cast<double>(std::fabs(got[i] - want[i])));
        scale = std::max(scale, static_cast<double>(std::fabs(want[i])));
      }
      double rel = diff / scale;
      if (p.epi == KILN_GEMM_EPILOGUE_BIAS_GRAD) {
        std::vector<float> db(p.M);
        KILN_CUDA_CHECK(cudaMemcpy(db.data(), buf.db, p.M * 4, cudaMemcpyDeviceToHost));
        double dd = 0, ds = 1e-30;
        for (std::int64_t i = 0; i < p.M; ++i) {
          dd = std::max(dd, static_cast<double>(std::fabs(db[i] - want_db[i])));
          ds = std::max(ds, static_cast<double>(std::fabs(want_db[i])));
        }
        rel = std::max(rel, dd / ds);
      }
      return rel;
    };

    const double flops = 2.0 * p.M * p.N * p.K;
    const std::string op = std::string("gemm_") + kiln_gemm_epilogue_name(p.epi);
    auto record = [&](const std::string& impl, const kiln::bench::Timing& t, double check_err) {
      nlohmann::json r = {{"op", op},
                          {"impl", impl},
                          {"shape", shape_of(p)},
                          {"problem", p.name},
                          {"ms", t.median_ms},
                          {"tflops", kiln::bench::tflops(flops, t.median_ms)},
                          {"max_rel_diff_vs_unfused_cublas", check_err}};
      report.add(r);
    };

    // Peers.
    record("cublas",
           kiln::bench::time_region([&](cudaStream_t s) { unfused(s, true); }, stream, opt), 0.0);
    if (p.epi != KILN_GEMM_EPILOGUE_NONE)
      record("cublas+kernel",
             kiln::bench::time_region([&](cudaStream_t s) { unfused(s, false); }, stream, opt),
             0.0);

    // kiln's backends, each checked first; bf16 outputs agree to a few bf16 ulps.
    const double tolerance = p.f32 ? 1e-4 : 3e-2;
    double best_ms = INFINITY;
    kiln_gemm_backend_t best = KILN_GEMM_BACKEND_AUTO;
    for (kiln_gemm_backend_t backend : {KILN_GEMM_BACKEND_CUBLASLT, KILN_GEMM_BACKEND_SM90,
                                        KILN_GEMM_BACKEND_SM80, KILN_GEMM_BACKEND_AUTO}) {
      int ok = 0;
      kiln::check(kiln_gemm_backend_available(backend, &ok));
      if (!ok) continue;
      kp.backend = backend;
      reset_outputs(p, buf, stream);
      if (kiln_gemm(ctx.get(), &kp, stream) != KILN_STATUS_OK) {
        std::printf("# %s %s: %s skipped: %s\n", p.name.c_str(), shape_of(p).c_str(),
                    kiln_gemm_backend_name(backend), kiln_last_error());
        continue;
      }
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      const double err = max_rel_diff();
      if (!(err <= tolerance)) {
        kiln::bench::check_failed(p.name + " " + shape_of(p) + ": " +
                                  kiln_gemm_backend_name(backend) + " max relative difference " +
                                  std::to_string(err));
        continue;
      }
      const kiln::bench::Timing t = kiln::bench::time_region(
          [&](cudaStream_t s) { kiln::check(kiln_gemm(ctx.get(), &kp, s)); }, stream, opt);
      const std::string name =
          std::string("kiln-") + (backend == KILN_GEMM_BACKEND_CUBLASLT
                                      ? "cublaslt"  // cuBLASLt with the same fused epilogue
                                      : kiln_gemm_backend_name(backend));
      record(name, t, err);
      if (backend != KILN_GEMM_BACKEND_AUTO && t.median_ms < best_ms) {
        best_ms = t.median_ms;
        best = backend;
      }
    }
    kp.backend = KILN_GEMM_BACKEND_AUTO;
    if (!table_path.empty() && best != KILN_GEMM_BACKEND_AUTO)
      kiln::check(kiln_gemm_table_set(ctx.get(), &kp, best));

    KILN_CUDA_CHECK(cudaFree(check));
    for (void* ptr :
         {static_cast<void*>(buf.a), static_cast<void*>(buf.b), static_cast<void*>(buf.bias),
          static_cast<void*>(buf.pre), buf.d, static_cast<void*>(buf.db)})
      KILN_CUDA_CHECK(cudaFree(ptr));
  }
  if (!table_path.empty()) {
    kiln::check(kiln_gemm_table_save(ctx.get(), table_path.c_str()));
    std::printf("# wrote the table of fastest kiln backends to %s\n", table_path.c_str());
  }
  KILN_CUBLAS_CHECK(cublasDestroy(cublas));
  return kiln::bench::exit_status();
}
