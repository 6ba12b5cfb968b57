// The table of measured winners and its file format (gemm_winners.hpp).
#include "kernels/gemm/gemm_winners.hpp"

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "errors/check.hpp"

namespace kiln::impl {
namespace {

GemmBackend parse_backend(const std::string& name) {
  for (GemmBackend b : {GemmBackend::cublaslt, GemmBackend::sm90, GemmBackend::sm80})
    if (name == backend_name(b)) return b;
  throw_error(Status::data_error, cat("gemm table: unknown backend \"", name, "\""), nullptr,
              __FILE__, __LINE__);
}

int parse_epilogue(const std::string& name) {
  for (int e = KILN_GEMM_EPILOGUE_NONE; e <= KILN_GEMM_EPILOGUE_BIAS_GRAD; ++e)
    if (name == kiln_gemm_epilogue_name(static_cast<kiln_gemm_epilogue_t>(e))) return e;
  throw_error(Status::data_error, cat("gemm table: unknown epilogue \"", name, "\""), nullptr,
              __FILE__, __LINE__);
}

}  // namespace

GemmTableKey gemm_table_key(const GemmProblem& p) {
  return {p.m,           p.n, p.k, p.trans_a, p.trans_b, p.cd_f32, static_cast<int>(p.epilogue),
          p.c != nullptr};
}

std::string current_device_name() {
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  KILN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

GemmTable read_gemm_table(const char* path) {
  std::ifstream in(path);
  KILN_CHECK(in.good(), kiln::Status::io_error, "kiln_gemm_table_load: cannot open ", path);
  const std::string device = current_device_name();
  GemmTable loaded;
  std::string text;
  int line_no = 0;
  while (std::getline(in, text)) {
    ++line_no;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const nlohmann::json j = nlohmann::json::parse(text);
      if (j.at("device").get<std::string>() != device) continue;
      const std::string cd = j.at("cd").get<std::string>();
      KILN_CHECK(cd == "bf16" || cd == "f32", kiln::Status::data_error, "unknown cd \"", cd, "\"");
      const GemmTableKey key{j.at("m").get<std::int64_t>(),    j.at("n").get<std::int64_t>(),
                             j.at("k").get<std::int64_t>(),    j.at("trans_a").get<int>(),
                             j.at("trans_b").get<int>(),       cd == "f32",
                             parse_epilogue(j.at("epilogue")), j.at("beta_nonzero").get<bool>()};
      loaded[key] = GemmTableEntry{parse_backend(j.at("backend").get<std::string>()), device};
    } catch (const nlohmann::json::exception& e) {
      throw_error(kiln::Status::data_error,
                  cat("kiln_gemm_table_load: ", path, " line ", line_no, ": ", e.what()), nullptr,
                  __FILE__, __LINE__);
    } catch (const kiln::Error& e) {
      throw_error(kiln::Status::data_error,
                  cat("kiln_gemm_table_load: ", path, " line ", line_no, ": ", e.message()),
                  nullptr, __FILE__, __LINE__);
    }
  }
  return loaded;
}

void write_gemm_table(const GemmTable& table, const char* path) {
  std::ofstream out(path, std::ios::trunc);
  KILN_CHECK(out.good(), kiln::Status::io_error, "kiln_gemm_table_save: cannot open ", path);
  for (const auto& [key, entry] : table) {
    const auto& [m, n, k, ta, tb, f32, epilogue, has_c] = key;
    nlohmann::json line = {
        {"device", entry.device},
        {"m", m},
        {"n", n},
        {"k", k},
        {"trans_a", ta},
        {"trans_b", tb},
        {"cd", f32 ? "f32" : "bf16"},
        {"epilogue", kiln_gemm_epilogue_name(static_cast<kiln_gemm_epilogue_t>(epilogue))},
        {"beta_nonzero", has_c != 0},
        {"backend", backend_name(entry.backend)}};
    out << line.dump() << "\n";
  }
  KILN_CHECK(out.good(), kiln::Status::io_error, "kiln_gemm_table_save: writing ", path, " failed");
}

void merge_environment_gemm_table(GemmTable& table) {
  const char* path = std::getenv("KILN_GEMM_TABLE");
  if (!path || !*path) return;
  for (auto& [key, entry] : read_gemm_table(path))
    table.emplace(key, entry);  // entries set through the API win
}

}  // namespace kiln::impl
