// kiln_gemm's argument checks: every check that needs no device, in the order a caller would fix
// them, turning kiln_gemm_params_t into the GemmProblem every backend receives. What each
// epilogue asks for, and what the hand-written kernels' 16-byte copies need, are tables.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "errors/check.hpp"
#include "kernels/gemm/gemm.hpp"

namespace kiln::impl {
namespace {

constexpr const char* kOp = "kiln_gemm";

enum class Need { no, optional, yes };

// What an epilogue asks of the call: one row per public epilogue, in the enum's order.
struct EpilogueRule {
  kiln_gemm_epilogue_t epilogue;
  bool bf16_cd;    // C and D must be bf16
  Need bias;       // bias (N) bf16
  bool residual;   // the residual arrives as c, with beta != 0
  bool bias_grad;  // bias_grad += row sums of op(A): fp32 or bf16 as D, alpha = 1
  bool gelu;       // pre_gelu_out written (bf16, ld_pre_gelu)
  bool dgelu;      // pre_gelu read (bf16, ld_pre_gelu)
};
// clang-format off
constexpr EpilogueRule kEpilogueRules[] = {
    // epilogue                   bf16_cd bias            residual bias_grad gelu   dgelu
    {KILN_GEMM_EPILOGUE_NONE,      false, Need::no,       false,   false,    false, false},
    {KILN_GEMM_EPILOGUE_BIAS,      true,  Need::yes,      false,   false,    false, false},
    {KILN_GEMM_EPILOGUE_BIAS_GELU, true,  Need::yes,      false,   false,    true,  false},
    {KILN_GEMM_EPILOGUE_RESIDUAL,  true,  Need::optional, true,    false,    false, false},
    {KILN_GEMM_EPILOGUE_DGELU,     true,  Need::no,       false,   false,    false, true},
    {KILN_GEMM_EPILOGUE_BIAS_GRAD, false, Need::no,       false,   true,     false, false},
};
// clang-format on
static_assert(sizeof(kEpilogueRules) / sizeof(kEpilogueRules[0]) ==
                  KILN_GEMM_EPILOGUE_BIAS_GRAD + 1,
              "one rule per epilogue");
constexpr bool rules_in_enum_order() {
  for (int e = 0; e <= KILN_GEMM_EPILOGUE_BIAS_GRAD; ++e)
    if (kEpilogueRules[e].epilogue != e) return false;
  return true;
}
static_assert(rules_in_enum_order(), "kEpilogueRules[e] is the rule of epilogue e");

// A leading dimension: `given` or, when 0, the packed row; never shorter than the row.
std::int64_t leading_dim(const char* name, std::int64_t given, std::int64_t row,
                         const char* row_of) {
  const std::int64_t ld = given ? given : row;
  KILN_CHECK_ARG(ld >= row, kOp, ": ", name, " ", ld, " is shorter than ", row_of, " (", row, ")");
  return ld;
}

// Why the hand-written kernels' 16-byte accesses (TMA boxes, cp.async) cannot take `p`: the
// first row of these tables that fails.
std::string hand_written_rejects(const GemmProblem& p, const char* name) {
  const std::size_t cd = p.cd_bytes();
  const bool pre_gelu = p.flags.gelu || p.flags.dgelu;
  struct RowBytes {
    const char* ld_name;
    std::int64_t ld;
    std::size_t elem_bytes;
    bool applies;
  };
  const RowBytes rows[] = {{"lda", p.lda, 2, true},
                           {"ldb", p.ldb, 2, true},
                           {"ldd", p.ldd, cd, true},
                           {"ldc", p.ldc, cd, p.c != nullptr},
                           {"ld_pre_gelu", p.ld_pre_gelu, 2, pre_gelu}};
  for (const RowBytes& r : rows)
    if (r.applies && (r.ld * r.elem_bytes) % 16 != 0)
      return cat(name, " needs ", r.ld_name, " * ", r.elem_bytes, " bytes a multiple of 16 (",
                 r.ld_name, " = ", r.ld, ")");
  struct Alignment {
    const char* ptr_name;
    const void* ptr;
    std::size_t bytes;
    bool applies;
  };
  const Alignment pointers[] = {{"a", p.a, 16, true},
                                {"b", p.b, 16, true},
                                {"d", p.d, 16, true},
                                {"c", p.c, 16, p.c != nullptr},
                                {"pre_gelu_out", p.pre_gelu_out, 16, p.flags.gelu},
                                {"pre_gelu", p.pre_gelu, 16, p.flags.dgelu},
                                {"bias", p.bias, 4, p.flags.bias}};
  for (const Alignment& a : pointers)
    if (a.applies && !is_aligned(a.ptr, a.bytes))
      return cat(name, " needs ", a.ptr_name, " ", a.bytes, "-byte aligned");
  return "";
}

// The epilogue's operands, by its rule.
void check_epilogue(const kiln_gemm_params_t& q, GemmProblem& p) {
  const EpilogueRule& rule = kEpilogueRules[q.epilogue];
  KILN_CHECK_ARG(!rule.bf16_cd || !p.cd_f32, kOp, ": epilogue ",
                 kiln_gemm_epilogue_name(q.epilogue), " needs bf16 C/D (cd_dtype = f32 given)");
  if (rule.residual)
    KILN_CHECK_ARG(p.c != nullptr, kOp,
                   ": epilogue residual needs the residual as c with beta != 0");
  if (rule.bias == Need::yes || (rule.bias == Need::optional && q.bias)) {
    KILN_CHECK_PTR(q.bias, 2, kOp);
    p.flags.bias = true;
    p.bias = q.bias;
  }
  if (rule.bias_grad) {
    KILN_CHECK_PTR(q.bias_grad, p.cd_bytes(), kOp);
    KILN_CHECK_ARG(q.alpha == 1.0f, kOp, ": epilogue bias_grad needs alpha = 1 (got ", q.alpha,
                   "): the bias gradient is the unscaled sum");
    p.flags.bias_grad = true;
    p.bias_grad = q.bias_grad;
  }
  if (rule.gelu || rule.dgelu) {
    p.ld_pre_gelu = leading_dim("ld_pre_gelu", q.ld_pre_gelu, p.n, "a row");
    if (rule.gelu) {
      KILN_CHECK_PTR(q.pre_gelu_out, 2, kOp);
      p.flags.gelu = true;
      p.pre_gelu_out = q.pre_gelu_out;
    } else {
      KILN_CHECK_PTR(q.pre_gelu, 2, kOp);
      p.flags.dgelu = true;
      p.pre_gelu = q.pre_gelu;
    }
  }
}

}  // namespace

std::string sm90_rejects_static(const GemmProblem& p) {
  return hand_written_rejects(p, "the sm90 backend");
}
std::string sm80_rejects_static(const GemmProblem& p) {
  return hand_written_rejects(p, "the sm80 backend");
}

GemmProblem check_gemm_params(const kiln_gemm_params_t* params) {
  KILN_CHECK_ARG(params != nullptr, kOp, ": params is null");
  const kiln_gemm_params_t& q = *params;
  constexpr std::int64_t kMax = std::numeric_limits<std::int32_t>::max();
  KILN_CHECK_ARG(q.m >= 1 && q.n >= 1 && q.k >= 1, kOp, ": M, N, K must be >= 1 (got ", q.m, ", ",
                 q.n, ", ", q.k, ")");
  KILN_CHECK_ARG(q.m <= kMax && q.n <= kMax && q.k <= kMax, kOp, ": M, N, K must be < 2^31 (got ",
                 q.m, ", ", q.n, ", ", q.k, ")");
  KILN_CHECK_ARG(q.trans_a == 0 || q.trans_a == 1, kOp, ": trans_a must be 0 or 1 (got ", q.trans_a,
                 ")");
  KILN_CHECK_ARG(q.trans_b == 0 || q.trans_b == 1, kOp, ": trans_b must be 0 or 1 (got ", q.trans_b,
                 ")");
  KILN_CHECK_ARG(q.cd_dtype == KILN_DTYPE_BF16 || q.cd_dtype == KILN_DTYPE_F32, kOp,
                 ": cd_dtype must be KILN_DTYPE_BF16 or KILN_DTYPE_F32 (got ",
                 static_cast<int>(q.cd_dtype), ")");
  KILN_CHECK_ARG(
      q.epilogue >= KILN_GEMM_EPILOGUE_NONE && q.epilogue <= KILN_GEMM_EPILOGUE_BIAS_GRAD, kOp,
      ": unknown epilogue ", static_cast<int>(q.epilogue));
  KILN_CHECK_ARG(q.backend >= KILN_GEMM_BACKEND_AUTO && q.backend <= KILN_GEMM_BACKEND_SM80, kOp,
                 ": unknown backend ", static_cast<int>(q.backend));
  KILN_CHECK_ARG(std::isfinite(q.alpha) && std::isfinite(q.beta), kOp,
                 ": alpha and beta must be finite (got ", q.alpha, ", ", q.beta, ")");

  GemmProblem p;
  p.m = q.m;
  p.n = q.n;
  p.k = q.k;
  p.trans_a = q.trans_a;
  p.trans_b = q.trans_b;
  p.cd_f32 = q.cd_dtype == KILN_DTYPE_F32;
  p.alpha = q.alpha;
  p.beta = q.beta;
  p.epilogue = q.epilogue;
  const std::size_t cd = p.cd_bytes();

  KILN_CHECK_PTR(q.a, 2, kOp);
  KILN_CHECK_PTR(q.b, 2, kOp);
  KILN_CHECK_PTR(q.d, cd, kOp);
  p.a = q.a;
  p.b = q.b;
  p.d = q.d;
  p.lda = leading_dim("lda", q.lda, p.trans_a ? p.m : p.k, "a row of A");
  p.ldb = leading_dim("ldb", q.ldb, p.trans_b ? p.k : p.n, "a row of B");
  p.ldd = leading_dim("ldd", q.ldd, p.n, "a row of D");
  if (q.beta != 0) {
    KILN_CHECK_ARG(q.c != nullptr, kOp, ": beta is ", q.beta, " but c is null");
    KILN_CHECK_PTR(q.c, cd, kOp);
    p.c = q.c;
    p.ldc = leading_dim("ldc", q.ldc, p.n, "a row of C");
    KILN_CHECK_ARG(p.c != p.d || p.ldc == p.ldd, kOp, ": c is d (in-place accumulation) but ldc ",
                   p.ldc, " != ldd ", p.ldd);
  }
  check_epilogue(q, p);

  if (q.backend == KILN_GEMM_BACKEND_SM90) {
    const std::string why = sm90_rejects_static(p);
    KILN_CHECK_ARG(why.empty(), kOp, ": ", why);
  } else if (q.backend == KILN_GEMM_BACKEND_SM80) {
    const std::string why = sm80_rejects_static(p);
    KILN_CHECK_ARG(why.empty(), kOp, ": ", why);
  }
  return p;
}

}  // namespace kiln::impl
