// The table of measured winners that kiln_gemm's AUTO dispatch starts from: for a problem's shape
// class (not its pointers), the backend that was fastest on a named device. Filled by
// kiln_gemm_tune and kiln_gemm_table_set, read from and written to JSON-lines files
// (kiln_gemm_table_load / _save, KILN_GEMM_TABLE), one object a line:
//   {"device": "NVIDIA H100 80GB HBM3", "m": 4096, "n": 768, "k": 3072, "trans_a": 0,
//    "trans_b": 0, "cd": "bf16", "epilogue": "bias", "beta_nonzero": false, "backend": "sm90"}
// Lines measured on another device are skipped when a file is read.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "kernels/gemm/gemm.hpp"

namespace kiln::impl {

// (m, n, k, trans_a, trans_b, cd is f32, epilogue, c given).
using GemmTableKey = std::tuple<std::int64_t, std::int64_t, std::int64_t, int, int, int, int, int>;
struct GemmTableEntry {
  GemmBackend backend;
  std::string device;  // the device it was measured on
};
using GemmTable = std::map<GemmTableKey, GemmTableEntry>;

GemmTableKey gemm_table_key(const GemmProblem& p);

// The name of the current CUDA device, as the table files record it.
std::string current_device_name();

// The lines of the file at `path` measured on a device named like the current one. Throws
// io_error (cannot open) or data_error (naming the file and line).
GemmTable read_gemm_table(const char* path);
// Writes every entry of `table`, one JSON object a line. Throws io_error.
void write_gemm_table(const GemmTable& table, const char* path);

// KILN_GEMM_TABLE=FILE: that file's entries join `table`, where the entries already there (set
// through the API) win.
void merge_environment_gemm_table(GemmTable& table);

}  // namespace kiln::impl
