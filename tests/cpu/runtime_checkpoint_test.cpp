// Checkpoints: resume is bit-exact, and every kind of bad file is refused with an error naming
// the file and the problem, leaving the trainer untouched; a failed save keeps the old file.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/trainer.hpp"
#include "tests/common/support.hpp"

namespace fs = std::filesystem;

namespace {

kiln::ModelConfig model(kiln::ModelKind kind = kiln::ModelKind::decoder) {
  kiln::ModelConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.vocab_size = 29;
  c.max_seq_len = 8;
  c.kind = kind;
  if (kind == kiln::ModelKind::encoder) c.mask_token_id = 28;
  return c.resolved();
}

kiln::TrainConfig config() {
  kiln::TrainConfig t;
  t.batch = 2;
  t.seq_len = 8;
  t.grad_accum = 2;
  t.optimizer.lr = 3e-3;
  t.optimizer.warmup_steps = 2;
  t.optimizer.decay_steps = 10;
  return t;
}

// The batch of step `s`: a pure function of s, as a data loader restored to the same position
// would give.
void batch(int64_t s, std::vector<int32_t>& in, std::vector<int32_t>& tg) {
  in.resize(32);
  tg.resize(32);
  for (int64_t i = 0; i < 32; ++i) {
    in[static_cast<std::size_t>(i)] = static_cast<int32_t>((s * 7 + i * 3) % 27);
    tg[static_cast<std::size_t>(i)] = static_cast<int32_t>((s * 5 + i * 11 + 1) % 27);
  }
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("kiln_ckpt_test_" + std::to_string(kiln::test::make_rng(99)()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::pair<kiln::Status, std::string> error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return {e.status(), e.message()};
  }
  return {kiln::Status::ok, ""};
}

// A CPU backend whose downloads start failing after `budget` calls: a save that dies midway.
class FailingBackend final : public kiln::Backend {
 public:
  explicit FailingBackend(std::shared_ptr<kiln::Backend> inner) : inner_(std::move(inner)) {}
  int budget = 1 << 30;

  kiln::BackendKind kind() const override { return inner_->kind(); }
  std::string description() const override { return "failing " + inner_->description(); }
  kiln::BackendTypes types() const override { return inner_->types(); }
  void* allocate(std::size_t b) override { return inner_->allocate(b); }
  void deallocate(void* p) noexcept override { inner_->deallocate(p); }
  void upload(void* d, const void* s, std::size_t b) override { inner_->upload(d, s, b); }
  void download(void* d, const void* s, std::size_t b) override { inner_->download(d, s, b); }
  void fill_zero(void* p, std::size_t b) override { inner_->fill_zero(p, b); }
  void upload_f32(void* d, kiln::DType t, const float* s, int64_t n) override {
    inner_->upload_f32(d, t, s, n);
  }
  void download_f32(float* d, const void* s, kiln::DType t, int64_t n) override {
    if (--budget < 0) throw kiln::Error(kiln::Status::cuda_error, "device lost (test)");
    inner_->download_f32(d, s, t, n);
  }
  void upload_f64(void* d, kiln::DType t, const double* s, int64_t n) override {
    inner_->upload_f64(d, t, s, n);
  }
  void download_f64(double* d, const void* s, kiln::DType t, int64_t n) override {
    inner_->download_f64(d, s, t, n);
  }
  void convert(void* d, kiln::DType dt, const void* s, kiln::DType st, int64_t n) override {
    inner_->convert(d, dt, s, st, n);
  }
  void synchronize() override { inner_->synchronize(); }
  std::size_t workspace_bytes(const kiln::ModelConfig& c, int64_t b, int64_t t) const override {
    return inner_->workspace_bytes(c, b, t);
  }
  void set_workspace(void* w, std::size_t b) override { inner_->set_workspace(w, b); }
  void embedding_fwd(void* o, const int32_t* t, const void* a, const void* b, int64_t B, int64_t T,
                     int64_t C, int64_t V, int64_t maxT) override {
    inner_->embedding_fwd(o, t, a, b, B, T, C, V, maxT);
  }
  void embedding_bwd(void* a, void* b, const void* d, const int32_t* t, int64_t B, int64_t T,
                     int64_t C, int64_t V, int64_t maxT) override {
    inner_->embedding_bwd(a, b, d, t, B, T, C, V, maxT);
  }
  void layernorm_fwd(void* y, void* m, void* r, const void* x, const void* g, const void* b,
                     int64_t N, int64_t C, double eps) override {
    inner_->layernorm_fwd(y, m, r, x, g, b, N, C, eps);
  }
  void residual_layernorm_fwd(void* res, void* y, void* m, void* r, const void* a, const void* b,
                              const void* g, const void* be, int64_t N, int64_t C,
                              double eps) override {
    inner_->residual_layernorm_fwd(res, y, m, r, a, b, g, be, N, C, eps);
  }
  void layernorm_bwd(void* dx, void* dg, void* db, const void* dy, const void* x, const void* g,
                     const void* m, const void* r, int64_t N, int64_t C) override {
    inner_->layernorm_bwd(dx, dg, db, dy, x, g, m, r, N, C);
  }
  void linear_fwd(void* o, void* pre, const void* in, const void* w, const void* b, int64_t M,
                  int64_t K, int64_t N) override {
    inner_->linear_fwd(o, pre, in, w, b, M, K, N);
  }
  void linear_bwd(void* di, void* dw, void* db, const void* dout, const void* in, const void* w,
                  const void* pre, int64_t M, int64_t K, int64_t N) override {
    inner_->linear_bwd(di, dw, db, dout, in, w, pre, M, K, N);
  }
  void gelu_fwd(void* y, const void* x, int64_t n) override { inner_->gelu_fwd(y, x, n); }
  void rmsnorm_fwd(void* y, void* r, const void* x, const void* g, int64_t N, int64_t C,
                   double eps) override {
    inner_->rmsnorm_fwd(y, r, x, g, N, C, eps);
  }
  void residual_rmsnorm_fwd(void* res, void* y, void* r, const void* a, const void* b,
                            const void* g, int64_t N, int64_t C, double eps) override {
    inner_->residual_rmsnorm_fwd(res, y, r, a, b, g, N, C, eps);
  }
  void rmsnorm_bwd(void* dx, void* dg, const void* dy, const void* x, const void* g, const void* r,
                   int64_t N, int64_t C) override {
    inner_->rmsnorm_bwd(dx, dg, dy, x, g, r, N, C);
  }
  void rope_fwd(void* x, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD, int64_t p,
                const kiln::RopeConfig& r) override {
    inner_->rope_fwd(x, B, T, NH, NKV, HD, p, r);
  }
  void rope_bwd(void* x, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD, int64_t p,
                const kiln::RopeConfig& r) override {
    inner_->rope_bwd(x, B, T, NH, NKV, HD, p, r);
  }
  void swiglu_fwd(void* o, const void* gu, int64_t N, int64_t I) override {
    inner_->swiglu_fwd(o, gu, N, I);
  }
  void swiglu_bwd(void* dgu, const void* d, const void* gu, int64_t N, int64_t I) override {
    inner_->swiglu_bwd(dgu, d, gu, N, I);
  }
  void copy_rows(void* d, int64_t ds, const void* s, int64_t ss, int64_t r, int64_t c) override {
    inner_->copy_rows(d, ds, s, ss, r, c);
  }
  void attention_fwd(void* o, void* l, const void* q, int64_t B, int64_t T, int64_t NH, int64_t NKV,
                     int64_t HD, bool c) override {
    inner_->attention_fwd(o, l, q, B, T, NH, NKV, HD, c);
  }
  void attention_bwd(void* dq, const void* d, const void* q, const void* o, const void* l,
                     int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD, bool c) override {
    inner_->attention_bwd(dq, d, q, o, l, B, T, NH, NKV, HD, c);
  }
  void attention_cached(void* o, void* l, const void* q, int64_t qs, const void* kv, int64_t p,
                        int64_t T, int64_t NH, int64_t NKV, int64_t HD) override {
    inner_->attention_cached(o, l, q, qs, kv, p, T, NH, NKV, HD);
  }
  void classifier(void* l, void* lo, const int32_t* t, int64_t N, int64_t V, int64_t Vp, double d,
                  int32_t ig) override {
    inner_->classifier(l, lo, t, N, V, Vp, d, ig);
  }
  void accumulate_loss(double* s, const void* l, int64_t N, double sc) override {
    inner_->accumulate_loss(s, l, N, sc);
  }
  void optimizer_update(const kiln::OptimizerUpdate& u) override { inner_->optimizer_update(u); }
  void grad_sum_squares(const kiln::OptimizerUpdate& u) override { inner_->grad_sum_squares(u); }

 private:
  std::shared_ptr<kiln::Backend> inner_;
};

}  // namespace

TEST_CASE("resuming from a checkpoint continues bit-exactly", "[runtime]") {
  TempDir dir;
  for (kiln::ModelKind kind : {kiln::ModelKind::decoder, kiln::ModelKind::encoder}) {
    const kiln::ModelConfig m = model(kind);
    const bool enc = kind == kiln::ModelKind::encoder;
    std::vector<int32_t> in, tg;
    std::vector<double> uninterrupted;
    const fs::path ckpt = dir.path / "run.ckpt";
    {
      // The run that saves asked for a non-deterministic backward, which the cpu backend is not
      // (the resumed run still matches bit for bit); the checkpoint keeps the setting.
      kiln::TrainConfig saving = config();
      saving.deterministic = false;
      kiln::Trainer a(m, saving, kiln::make_cpu_backend(kiln::DType::f32, 2), 5);
      for (int64_t s = 0; s < 6; ++s) {
        if (s == 3) a.save_checkpoint(ckpt, "{\"loader\": 3}");
        batch(s, in, tg);
        uninterrupted.push_back(a.step(in, enc ? std::vector<int32_t>{} : tg).loss);
      }
    }
    kiln::Trainer b(m, config(), kiln::make_cpu_backend(kiln::DType::f32, 1), 999);
    const kiln::CheckpointInfo info = b.load_checkpoint(ckpt);
    CHECK(info.step == 3);
    CHECK(info.data_state == "{\"loader\": 3}");
    CHECK(info.model == m);
    CHECK(info.train.grad_accum == 2);
    CHECK(info.train.optimizer.decay_steps == 10);
    CHECK_FALSE(info.train.deterministic);
    CHECK(b.step_count() == 3);
    for (int64_t s = 3; s < 6; ++s) {
      batch(s, in, tg);
      const double loss = b.step(in, enc ? std::vector<int32_t>{} : tg).loss;
      CHECK(loss == uninterrupted[static_cast<std::size_t>(s)]);  // bit for bit
    }
    std::vector<float> weights;
    const kiln::CheckpointInfo read = kiln::read_checkpoint(ckpt, &weights);
    CHECK(read.step == 3);
    CHECK(static_cast<int64_t>(weights.size()) == b.layout().total());
  }
}

TEST_CASE("bad checkpoints are refused naming the file; the trainer is unchanged", "[runtime]") {
  TempDir dir;
  const kiln::ModelConfig m = model();
  kiln::Trainer t(m, config(), kiln::make_cpu_backend(kiln::DType::f32, 1), 5);
  const fs::path good = dir.path / "good.ckpt";
  t.save_checkpoint(good, "state");
  std::vector<int32_t> in, tg;
  batch(0, in, tg);
  t.step(in, tg);
  const auto params = t.parameters();
  const std::string bytes = [&] {
    std::ifstream f(good, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }();
  auto write = [&](const std::string& name, const std::string& content) {
    const fs::path p = dir.path / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  };
  auto load = [&](const fs::path& p) { return error_of([&] { t.load_checkpoint(p); }); };

  auto [s0, m0] = load(dir.path / "missing.ckpt");
  CHECK(s0 == kiln::Status::io_error);
  CHECK_THAT(m0, Catch::Contains("missing.ckpt"));

  auto [s1, m1] = load(write("short.ckpt", bytes.substr(0, 40)));
  CHECK(s1 == kiln::Status::data_error);
  CHECK_THAT(m1, Catch::Contains("short.ckpt") && Catch::Contains("truncated"));

  auto [s2, m2] = load(write("cut.ckpt", bytes.substr(0, bytes.size() - 100)));
  CHECK(s2 == kiln::Status::data_error);
  CHECK_THAT(m2, Catch::Contains("cut.ckpt") && Catch::Contains("truncated"));

  std::string flipped = bytes;
  flipped[bytes.size() - 2000] ^= 0x10;  // inside adam_v
  auto [s3, m3] = load(write("flip.ckpt", flipped));
  CHECK(s3 == kiln::Status::data_error);
  CHECK_THAT(m3, Catch::Contains("flip.ckpt") && Catch::Contains("checksum mismatch"));

  std::string magic = bytes;
  magic[0] = 'X';
  CHECK_THAT(load(write("magic.ckpt", magic)).second, Catch::Contains("not a kiln checkpoint"));

  std::string meta = bytes;
  const std::size_t pos = meta.find("\"n_layer\"");
  REQUIRE(pos != std::string::npos);
  meta[pos + 2] = 'X';
  CHECK_THAT(load(write("meta.ckpt", meta)).second, Catch::Contains("metadata checksum"));

  CHECK_THAT(load(write("empty.ckpt", "")).second, Catch::Contains("too short"));

  // Another model's checkpoint.
  kiln::ModelConfig other = m;
  other.n_layer = 1;
  kiln::Trainer o(other, config(), kiln::make_cpu_backend(kiln::DType::f32, 1), 5);
  o.save_checkpoint(dir.path / "other.ckpt");
  auto [s4, m4] = load(dir.path / "other.ckpt");
  CHECK(s4 == kiln::Status::invalid_argument);
  CHECK_THAT(m4, Catch::Contains("L=1") && Catch::Contains("L=2"));

  CHECK(t.parameters() == params);
  CHECK(t.step_count() == 1);
}

TEST_CASE("a save that fails midway leaves the previous checkpoint intact", "[runtime]") {
  TempDir dir;
  auto failing = std::make_shared<FailingBackend>(kiln::make_cpu_backend(kiln::DType::f32, 1));
  kiln::Trainer t(model(), config(), failing, 5);
  const fs::path path = dir.path / "model.ckpt";
  t.save_checkpoint(path, "first");
  std::vector<int32_t> in, tg;
  batch(0, in, tg);
  t.step(in, tg);
  failing->budget = 1;  // the master weights download, then the moments fail
  auto [status, message] = error_of([&] { t.save_checkpoint(path, "second"); });
  CHECK(status == kiln::Status::cuda_error);
  failing->budget = 1 << 30;
  const kiln::CheckpointInfo info = kiln::read_checkpoint(path, nullptr);
  CHECK(info.step == 0);
  CHECK(info.data_state == "first");
  // No temporary file is left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    (void)e;
    ++files;
  }
  CHECK(files == 1);
  // A save into a directory that does not exist is an io_error.
  CHECK(error_of([&] { t.save_checkpoint(dir.path / "no" / "such.ckpt"); }).first ==
        kiln::Status::io_error);
}
