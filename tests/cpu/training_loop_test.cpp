// The pieces of a training program the runtime holds (kiln/training_loop.hpp, the loader helpers
// of kiln/data.hpp, training_model, the backend by name, the datasheet peaks of MFU).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "kiln/kiln.hpp"
#include "tests/common/files.hpp"

namespace {

double peak(const char* name, int major, int minor) {
  return kiln::datasheet_bf16_flops(name, major, minor);
}

kiln::Status status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return e.status();
  }
  return kiln::Status::ok;
}

}  // namespace

TEST_CASE("MFU's peak comes from the datasheet table by name and compute capability", "[runtime]") {
  // The names the CUDA runtime reports.
  CHECK(peak("NVIDIA H100 80GB HBM3", 9, 0) == 989.4e12);
  CHECK(peak("NVIDIA H100 PCIe", 9, 0) == 756.5e12);
  CHECK(peak("NVIDIA H100 NVL", 9, 0) == 835.5e12);
  CHECK(peak("NVIDIA H200", 9, 0) == 989.4e12);
  CHECK(peak("NVIDIA H200 NVL", 9, 0) == 835.5e12);
  CHECK(peak("NVIDIA GH200 480GB", 9, 0) == 989.4e12);
  CHECK(peak("NVIDIA A100-SXM4-80GB", 8, 0) == 312e12);
  CHECK(peak("NVIDIA A100-PCIE-40GB", 8, 0) == 312e12);
  CHECK(peak("NVIDIA A100 80GB PCIe", 8, 0) == 312e12);
  CHECK(peak("NVIDIA A30", 8, 0) == 165e12);
  CHECK(peak("NVIDIA A10", 8, 6) == 125e12);
  CHECK(peak("NVIDIA L40S", 8, 9) == 362.05e12);
  CHECK(peak("NVIDIA L40", 8, 9) == 181.05e12);
  CHECK(peak("NVIDIA L4", 8, 9) == 121e12);
  CHECK(peak("NVIDIA GeForce RTX 4090", 8, 9) == 165.2e12);
  CHECK(peak("NVIDIA GeForce RTX 3090", 8, 6) == 71e12);
  // Whole words only: relatives with other silicon or clocks get no figure.
  CHECK(peak("NVIDIA A10G", 8, 6) == 0);
  CHECK(peak("NVIDIA RTX A1000", 8, 6) == 0);
  CHECK(peak("NVIDIA GeForce RTX 4090 D", 8, 9) == 0);
  CHECK(peak("NVIDIA GeForce RTX 3090 Ti", 8, 6) == 0);
  CHECK(peak("NVIDIA H100", 9, 0) == 0);  // which H100 is unknown
  CHECK(peak("NVIDIA B200", 10, 0) == 0);
  CHECK(peak("", 9, 0) == 0);
  // A known name with another compute capability is no device of the table.
  CHECK(peak("NVIDIA H100 80GB HBM3", 8, 0) == 0);
  CHECK(peak("nvidia h100 pcie", 9, 0) == 756.5e12);  // case does not matter
  kiln_device_info_t info{};
  std::snprintf(info.name, sizeof info.name, "%s", "NVIDIA L40S");
  info.compute_major = 8;
  info.compute_minor = 9;
  CHECK(kiln::datasheet_bf16_flops(info) == 362.05e12);
}

TEST_CASE("the loader state round-trips through JSON and refuses what is not one", "[runtime]") {
  kiln::DataLoaderState s;
  s.epoch = 2;
  s.step = 7;
  s.fingerprint = 0xFEDCBA9876543210ull;
  s.B = 4;
  s.T = 64;
  s.world_size = 3;
  const kiln::DataLoaderState back =
      kiln::loader_state_from_json(kiln::loader_state_to_json(s), "ck");
  CHECK(back.epoch == 2);
  CHECK(back.step == 7);
  CHECK(back.fingerprint == s.fingerprint);
  CHECK(back.B == 4);
  CHECK(back.T == 64);
  CHECK(back.world_size == 3);
  for (const char* bad : {"", "[1]", "{\"epoch\": 1}",
                          R"({"epoch":-1,"step":0,"fingerprint":0,"B":1,"T":1,"world_size":1})",
                          R"({"epoch":1.5,"step":0,"fingerprint":0,"B":1,"T":1,"world_size":1})"}) {
    INFO(bad);
    try {
      kiln::loader_state_from_json(bad, "ckpt/latest.ckpt");
      FAIL("accepted");
    } catch (const kiln::Error& e) {
      CHECK(e.status() == kiln::Status::data_error);
      CHECK_THAT(e.message(), Catch::StartsWith("checkpoint 'ckpt/latest.ckpt': the data loader "
                                                "state is unreadable ("));
    }
  }
}

TEST_CASE("a loader state moves to another batch or world size at the same window", "[runtime]") {
  kiln::DataLoaderState s;
  s.epoch = 1;
  s.step = 3;
  s.B = 4;
  s.world_size = 2;  // 24 windows read
  s.T = 16;
  s.fingerprint = 99;
  const auto same = kiln::rebase_loader_state(s, 10, 4, 2);
  CHECK((same.step == 3 && same.epoch == 1 && same.B == 4 && same.world_size == 2));
  const auto one = kiln::rebase_loader_state(s, 10, 8, 1);  // 24 / 8 = 3
  CHECK((one.step == 3 && one.epoch == 1 && one.B == 8 && one.world_size == 1));
  const auto up = kiln::rebase_loader_state(s, 10, 5, 1);  // ceil(24 / 5) = 5
  CHECK((up.step == 5 && up.epoch == 1 && up.B == 5 && up.world_size == 1));
  const auto next = kiln::rebase_loader_state(s, 5, 5, 1);  // step 5 of 5: the next epoch
  CHECK((next.step == 0 && next.epoch == 2));
  CHECK((next.T == 16 && next.fingerprint == 99));
}

TEST_CASE("next_batches cuts micro-batches of windows into inputs and next-token targets",
          "[runtime]") {
  kiln::test::TempDir dir;
  std::vector<int32_t> tokens(200);
  std::iota(tokens.begin(), tokens.end(), 0);
  kiln::write_token_shard(dir / "train_000000.bin", tokens, 256);
  kiln::DataLoaderConfig c;
  c.shards = {dir / "train_000000.bin"};
  c.B = 2;
  c.T = 5;
  c.shuffle = false;
  kiln::DataLoader loader(c);
  std::vector<int32_t> in, tg;
  kiln::next_batches(loader, 3, in, tg);
  REQUIRE(in.size() == 3 * 2 * 5);
  REQUIRE(tg.size() == in.size());
  // In file order, window w holds tokens [5w, 5w + 6).
  for (std::size_t k = 0; k < in.size(); ++k) {
    const auto w = static_cast<int32_t>(k / 5), t = static_cast<int32_t>(k % 5);
    CHECK(in[k] == 5 * w + t);
    CHECK(tg[k] == 5 * w + t + 1);
  }
  CHECK(loader.step() == 3);
}

TEST_CASE("training_model applies the command line's parts over a preset", "[runtime]") {
  const kiln::ModelConfig plain = kiln::training_model("tiny", 256, 128);
  CHECK(plain.vocab_size == 256);
  CHECK(plain.max_seq_len == 128);  // grown from the preset's 64
  CHECK(plain.padded_vocab == 256);
  kiln::ModelOverrides o;
  o.mlp = kiln::parse_mlp_kind("swiglu");
  o.norm = kiln::parse_norm_kind("rmsnorm");
  o.positions = kiln::parse_position_kind("rotary");
  o.bias = kiln::parse_bias_kind("none");
  o.tied_embeddings = false;
  o.n_kv_head = 2;
  o.max_seq_len = 32;
  o.rope_scaling = kiln::parse_rope_scaling("llama3");
  o.rope_theta = 5e5;
  const kiln::ModelConfig llama = kiln::training_model("tiny", 256, 16, o);
  CHECK(llama.intermediate_size == 192);  // 8 x 64 / 3 rounded up to 64
  CHECK(llama.norm == kiln::NormKind::rmsnorm);
  CHECK(llama.positions == kiln::PositionKind::rotary);
  CHECK(llama.bias == kiln::BiasKind::none);
  CHECK_FALSE(llama.tied_embeddings);
  CHECK(llama.n_kv_head == 2);
  CHECK(llama.max_seq_len == 32);
  CHECK(llama.rope.scaling == kiln::RopeScaling::llama3);
  CHECK(llama.rope.theta == 5e5);
  CHECK_NOTHROW(llama.validate());
  // A GELU MLP over a SwiGLU preset drops its intermediate size.
  kiln::ModelOverrides gelu;
  gelu.mlp = kiln::MlpKind::gelu;
  CHECK(kiln::training_model("llama-tiny", 256, 16, gelu).intermediate_size == 0);
  kiln::ModelOverrides enc;
  enc.encoder = true;
  const kiln::ModelConfig bert = kiln::training_model("tiny", 256, 16, enc);
  CHECK(bert.kind == kiln::ModelKind::encoder);
  CHECK(bert.vocab_size == 257);
  CHECK(bert.mask_token_id == 256);
  CHECK(status_of([] { kiln::parse_norm_kind("batchnorm"); }) == kiln::Status::invalid_argument);
  CHECK(status_of([] { kiln::training_model("nope", 256, 16); }) == kiln::Status::invalid_argument);
}

TEST_CASE("the throughput meter smooths step times; MFU only against a known peak", "[runtime]") {
  kiln::ThroughputMeter meter(2e12, 2, 1, 10e12);
  CHECK(std::isnan(meter.seconds_left(5)));
  kiln::Throughput f = meter.add(1.0, 100);
  CHECK(f.step_s == 1.0);
  CHECK(f.tokens_per_s == 200.0);
  CHECK(f.mfu == Approx(0.2));
  f = meter.add(2.0, 100);
  CHECK(f.step_s == Approx(1.1));
  CHECK(f.tokens_per_s == Approx(200.0 / 1.1));
  CHECK(meter.seconds_left(10) == Approx(11.0));
  // Four logical ranks on one device: its throughput is theirs together.
  kiln::ThroughputMeter shared(1e12, 4, 4, 10e12);
  CHECK(shared.add(1.0, 10).mfu == Approx(0.4));
  kiln::ThroughputMeter unknown(1e12, 1, 1, 0);
  CHECK_FALSE(unknown.mfu_known());
  CHECK(std::isnan(unknown.add(1.0, 10).mfu));
}

TEST_CASE("resume paths, backends by name and a stop every rank takes", "[runtime]") {
  kiln::test::TempDir dir;
  CHECK(kiln::resume_path("", dir.path()).empty());
  CHECK(kiln::resume_path("auto", "").empty());
  CHECK(kiln::resume_path("auto", dir.path()).empty());
  kiln::test::write_bytes(dir / "latest.ckpt", "x");
  CHECK(kiln::resume_path("auto", dir.path()) == dir / "latest.ckpt");
  CHECK(kiln::resume_path("a.ckpt", dir.path()) == "a.ckpt");

  CHECK(kiln::resolve_backend_kind("cpu") == kiln::BackendKind::cpu);
  CHECK(kiln::resolve_backend_kind("cuda") == kiln::BackendKind::cuda);
  CHECK(status_of([] { kiln::resolve_backend_kind("tpu"); }) == kiln::Status::invalid_argument);
  std::string why = "stale";
  int count = 0;
  if (kiln_device_count(&count) == KILN_STATUS_OK && count > 0) {
    CHECK(kiln::resolve_backend_kind("auto", &why) == kiln::BackendKind::cuda);
    CHECK(why.empty());
  } else {
    CHECK(kiln::resolve_backend_kind("auto", &why) == kiln::BackendKind::cpu);
    CHECK_THAT(why, Catch::StartsWith("no CUDA device"));
    CHECK(kiln::make_backend("auto", 0, 1, &why)->kind() == kiln::BackendKind::cpu);
  }
  CHECK(kiln::make_backend("cpu", 0, 1)->device_ordinal() == -1);

  kiln::SingleRankCommunicator one;
  CHECK(kiln::any_rank(one, true));
  CHECK_FALSE(kiln::any_rank(one, false));
}

TEST_CASE("evaluate_loss is the mean of the trainer's losses over the first batches", "[runtime]") {
  kiln::test::TempDir dir;
  std::vector<int32_t> tokens(600);
  for (std::size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = static_cast<int32_t>((i * 7 + i / 3) % 64);
  kiln::write_token_shard(dir / "val_000000.bin", tokens, 64);
  kiln::DataLoaderConfig c;
  c.shards = {dir / "val_000000.bin"};
  c.B = 2;
  c.T = 16;
  c.shuffle = false;
  kiln::DataLoader val(c);
  const kiln::ModelConfig model = kiln::training_model("tiny", 64, 16);
  kiln::TrainConfig tc;
  tc.batch = 2;
  tc.seq_len = 16;
  kiln::Trainer trainer(model, tc, kiln::make_cpu_backend(kiln::DType::f32, 1), 1);
  kiln::SingleRankCommunicator one;
  val.next();  // evaluate_loss starts from the beginning whatever the loader's place
  const kiln::EvalResult e = kiln::evaluate_loss(trainer, val, 3, one);
  CHECK(e.batches == 3);
  val.reset();
  std::vector<int32_t> in, tg;
  double sum = 0;
  for (int64_t i = 0; i < 3; ++i) {
    kiln::next_batches(val, 1, in, tg);
    sum += trainer.evaluate(in, tg, i);
  }
  CHECK(e.loss == sum / 3);
  // More batches than the split holds: one pass over it.
  CHECK(kiln::evaluate_loss(trainer, val, 1000, one).batches == val.steps_per_epoch());
}
