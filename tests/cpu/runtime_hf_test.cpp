// Hugging Face GPT-2 safetensors: export / import round trip, the Conv1D transposition against an
// independently built file in HF's layout, an lm_head of its own importing untied, and refusal of
// wrong names, shapes and dtypes.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/generate.hpp"
#include "kiln/hf_gpt2.hpp"
#include "kiln/io.hpp"
#include "kiln/safetensors.hpp"
#include "kiln/trainer.hpp"
#include "tests/common/support.hpp"

namespace fs = std::filesystem;

namespace {

kiln::ModelConfig model() {
  kiln::ModelConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 8;
  c.vocab_size = 19;
  c.max_seq_len = 6;
  c.layernorm_eps = 1e-5;
  return c.resolved();
}

struct TempDir {
  fs::path path;
  TempDir() {
    path =
        fs::temp_directory_path() / ("kiln_hf_test_" + std::to_string(kiln::test::make_rng(77)()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::vector<float> random_params(const kiln::ModelConfig& m) {
  const kiln::ParamLayout layout(m);
  std::vector<float> p(static_cast<std::size_t>(layout.total()), 0.0f);
  auto rng = kiln::test::make_rng(31);
  std::uniform_real_distribution<float> d(-1, 1);
  for (const auto& t : layout.tensors()) {
    const int64_t n = t.kind == kiln::ParamKind::wte ? m.vocab_size * m.n_embd : t.numel();
    for (int64_t i = 0; i < n; ++i)
      p[static_cast<std::size_t>(t.offset + i)] = d(rng);
  }
  return p;
}

std::pair<kiln::Status, std::string> error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return {e.status(), e.message()};
  }
  return {kiln::Status::ok, ""};
}

// An HF-layout file built here, independently of export_hf_gpt2: Conv1D weights (in, out), the
// GPT2LMHeadModel prefix, a tied lm_head and the attention-mask buffers.
struct HfFile {
  std::vector<std::vector<float>> storage;
  std::vector<kiln::SafetensorsEntry> entries;

  void add(const std::string& name, std::vector<int64_t> shape, std::vector<float> data,
           kiln::SafeDtype dtype = kiln::SafeDtype::F32) {
    storage.push_back(std::move(data));
    entries.push_back({name, dtype, std::move(shape), storage.back(), {}});
  }
};

HfFile hf_from_kiln(const kiln::ModelConfig& m, const std::vector<float>& p) {
  HfFile f;
  f.storage.reserve(64);
  const kiln::ParamLayout layout(m);
  for (const auto& t : layout.tensors()) {
    const float* src = p.data() + t.offset;
    const bool conv = t.kind == kiln::ParamKind::qkv_w || t.kind == kiln::ParamKind::attproj_w ||
                      t.kind == kiln::ParamKind::fc_w || t.kind == kiln::ParamKind::fcproj_w;
    const std::string name = "transformer." + t.name;
    if (t.kind == kiln::ParamKind::wte) {
      f.add(name, {m.vocab_size, t.cols}, std::vector<float>(src, src + m.vocab_size * t.cols));
    } else if (conv) {
      std::vector<float> w(static_cast<std::size_t>(t.numel()));
      for (int64_t in = 0; in < t.cols; ++in) {
        for (int64_t out = 0; out < t.rows; ++out)
          w[static_cast<std::size_t>(in * t.rows + out)] = src[out * t.cols + in];
      }
      f.add(name, {t.cols, t.rows}, std::move(w));
    } else if (t.rows == 1) {
      f.add(name, {t.cols}, std::vector<float>(src, src + t.cols));
    } else {
      f.add(name, {t.rows, t.cols}, std::vector<float>(src, src + t.numel()));
    }
  }
  for (int64_t l = 0; l < m.n_layer; ++l) {
    f.add("transformer.h." + std::to_string(l) + ".attn.bias", {1, 1, m.max_seq_len, m.max_seq_len},
          std::vector<float>(static_cast<std::size_t>(m.max_seq_len * m.max_seq_len), 1.0f));
  }
  // GPT2LMHeadModel saves the tied head as a copy of the embedding.
  const auto& wte = layout.get(kiln::ParamKind::wte);
  f.add("lm_head.weight", {m.vocab_size, m.n_embd},
        std::vector<float>(p.data() + wte.offset, p.data() + wte.offset + m.vocab_size * m.n_embd));
  return f;
}

void write_config(const fs::path& dir, int64_t n_head, int64_t n_layer) {
  std::ofstream(dir / "config.json")
      << "{\"model_type\": \"gpt2\", \"n_head\": " << n_head << ", \"n_layer\": " << n_layer
      << ", \"layer_norm_epsilon\": 1e-05}";
}

}  // namespace

TEST_CASE("HF GPT-2 export then import gives the same model and weights", "[runtime]") {
  TempDir dir;
  const kiln::ModelConfig m = model();
  const std::vector<float> p = random_params(m);
  kiln::export_hf_gpt2(dir.path / "model.safetensors", m, p);
  CHECK(fs::exists(dir.path / "config.json"));
  // HF names and Conv1D shapes in the file.
  const kiln::SafetensorsReader r(dir.path / "model.safetensors");
  CHECK(r.info("h.1.attn.c_attn.weight").shape == std::vector<int64_t>{8, 24});
  CHECK(r.info("h.0.mlp.c_proj.weight").shape == std::vector<int64_t>{32, 8});
  CHECK(r.info("wte.weight").shape == std::vector<int64_t>{19, 8});
  std::vector<float> back;
  const kiln::ModelConfig imported = kiln::import_hf_gpt2(dir.path / "model.safetensors", 0, &back);
  CHECK(imported == m);
  CHECK(back == p);
  // Encoders are not GPT-2 models.
  kiln::ModelConfig enc = m;
  enc.kind = kiln::ModelKind::encoder;
  enc.mask_token_id = 18;
  CHECK(error_of([&] { kiln::export_hf_gpt2(dir.path / "enc.safetensors", enc, p); }).first ==
        kiln::Status::invalid_argument);
}

TEST_CASE("HF GPT-2 import transposes Conv1D weights from a GPT2LMHeadModel file", "[runtime]") {
  TempDir dir;
  const kiln::ModelConfig m = model();
  const std::vector<float> p = random_params(m);
  HfFile f = hf_from_kiln(m, p);
  kiln::write_safetensors(dir.path / "model.safetensors", f.entries, {{"format", "pt"}});
  write_config(dir.path, 2, 2);
  std::vector<float> back;
  const kiln::ModelConfig imported = kiln::import_hf_gpt2(dir.path / "model.safetensors", 0, &back);
  CHECK(imported == m);
  CHECK(back == p);
  // The imported weights compute what the originals compute.
  kiln::Generator a(m, kiln::make_cpu_backend(kiln::DType::f32, 1), p);
  kiln::Generator b(imported, kiln::make_cpu_backend(kiln::DType::f32, 1), back);
  const std::vector<int32_t> prompt{3, 1, 4, 1, 5};
  CHECK(a.feed(prompt) == b.feed(prompt));
}

TEST_CASE("bad HF files are refused naming the file and the tensor", "[runtime]") {
  TempDir dir;
  const kiln::ModelConfig m = model();
  const std::vector<float> p = random_params(m);
  const fs::path path = dir.path / "model.safetensors";
  auto import = [&](int64_t heads = 2) {
    return error_of([&] {
      std::vector<float> out;
      kiln::import_hf_gpt2(path, heads, &out);
    });
  };
  auto write_without = [&](const std::string& drop) {
    HfFile f = hf_from_kiln(m, p);
    std::vector<kiln::SafetensorsEntry> kept;
    for (auto& e : f.entries) {
      if (e.name != drop) kept.push_back(e);
    }
    kiln::write_safetensors(path, kept);
  };

  write_without("transformer.h.1.mlp.c_fc.bias");
  auto [s1, m1] = import();
  CHECK(s1 == kiln::Status::data_error);
  CHECK_THAT(m1, Catch::Contains("model.safetensors") && Catch::Contains("h.1.mlp.c_fc.bias"));

  {
    HfFile f = hf_from_kiln(m, p);
    for (auto& e : f.entries) {
      if (e.name == "transformer.h.0.attn.c_proj.weight")
        e.shape = {4, 16};  // same size, wrong shape
    }
    kiln::write_safetensors(path, f.entries);
    auto [s, msg] = import();
    CHECK(s == kiln::Status::data_error);
    CHECK_THAT(msg, Catch::Contains("h.0.attn.c_proj.weight") && Catch::Contains("(4, 16)") &&
                        Catch::Contains("expected (8, 8)"));
  }
  {
    HfFile f = hf_from_kiln(m, p);
    std::vector<int32_t> ints(8, 1);
    for (auto& e : f.entries) {
      if (e.name == "transformer.ln_f.bias") {
        e.dtype = kiln::SafeDtype::I32;
        e.data = {};
        e.raw = std::as_bytes(std::span<const int32_t>(ints));
      }
    }
    kiln::write_safetensors(path, f.entries);
    CHECK_THAT(import().second, Catch::Contains("ln_f.bias") && Catch::Contains("I32"));
  }
  {
    HfFile f = hf_from_kiln(m, p);
    f.add("transformer.h.0.attn.extra", {2}, {1.0f, 2.0f});
    kiln::write_safetensors(path, f.entries);
    CHECK_THAT(import().second, Catch::Contains("unexpected tensor 'transformer.h.0.attn.extra'"));
  }
  {
    HfFile f = hf_from_kiln(m, p);
    kiln::write_safetensors(path, f.entries);
    // No config.json and no head count.
    auto [s, msg] = import(0);
    CHECK(s == kiln::Status::invalid_argument);
    CHECK_THAT(msg, Catch::Contains("head count"));
    CHECK(import(3).first == kiln::Status::invalid_argument);  // 3 does not divide 8
    write_config(dir.path, 2, 5);
    CHECK_THAT(import(0).second, Catch::Contains("n_layer 5"));
    fs::remove(dir.path / "config.json");
    CHECK(import(2).first == kiln::Status::ok);
  }
  // Truncated and missing files.
  {
    const std::string whole = [&] {
      std::ifstream in(path, std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(in), {});
    }();
    std::ofstream(path, std::ios::binary) << whole.substr(0, whole.size() / 2);
    auto [s, msg] = import();
    CHECK(s == kiln::Status::data_error);
    CHECK_THAT(msg, Catch::Contains("model.safetensors"));
  }
  fs::remove(path);
  CHECK(import().first == kiln::Status::io_error);
}

TEST_CASE("an HF GPT-2 lm_head.weight that differs from wte.weight imports untied",
          "[runtime][hf]") {
  TempDir dir;
  const kiln::ModelConfig m = model();
  const std::vector<float> p = random_params(m);
  const fs::path path = dir.path / "model.safetensors";
  write_config(dir.path, 2, 2);
  // A head of its own: other values (here the embedding's, reversed).
  HfFile f = hf_from_kiln(m, p);
  std::vector<float> head;
  for (auto& e : f.entries) {
    if (e.name == "lm_head.weight") {
      head.assign(e.data.rbegin(), e.data.rend());
      e.data = head;
    }
  }
  kiln::write_safetensors(path, f.entries);
  std::vector<float> back;
  const kiln::ModelConfig untied = kiln::import_hf_gpt2(path, 0, &back);
  CHECK_FALSE(untied.tied_embeddings);
  const kiln::ParamLayout layout(untied);
  const auto& t = layout.get(kiln::ParamKind::lm_head);
  CHECK(std::vector<float>(back.begin() + t.offset,
                           back.begin() + t.offset + static_cast<int64_t>(head.size())) == head);
  const kiln::ParamLayout tied_layout(m);
  for (const auto& w : tied_layout.tensors()) {
    const auto& u = layout.get(w.kind, w.layer);
    for (int64_t i = 0; i < w.numel(); ++i)
      REQUIRE(back[static_cast<std::size_t>(u.offset + i)] ==
              p[static_cast<std::size_t>(w.offset + i)]);
  }
  // The untied model goes back out with its head, and comes in again the same.
  kiln::export_hf_gpt2(dir.path / "out.safetensors", untied, back);
  CHECK_FALSE(
      nlohmann::json::parse(kiln::read_file(dir.path / "config.json"))["tie_word_embeddings"]);
  std::vector<float> again;
  CHECK(kiln::import_hf_gpt2(dir.path / "out.safetensors", 0, &again) == untied);
  CHECK(again == back);
  // A head that only rounds the embedding (bf16) is not the embedding either: untied, never tied
  // to values it does not hold.
  for (auto& e : f.entries) {
    if (e.name == "lm_head.weight") {
      e.data =
          std::span<const float>(p.data() + kiln::ParamLayout(m).get(kiln::ParamKind::wte).offset,
                                 static_cast<std::size_t>(m.vocab_size * m.n_embd));
      e.dtype = kiln::SafeDtype::BF16;
    }
  }
  kiln::write_safetensors(path, f.entries);
  CHECK_FALSE(kiln::import_hf_gpt2(path, 0, &back).tied_embeddings);
}
