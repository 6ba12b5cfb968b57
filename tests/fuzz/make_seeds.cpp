// kiln_fuzz_seeds OUTDIR: the fuzz targets' seed corpora, made by kiln's own writers, one folder
// per target (OUTDIR/fuzz_checkpoint/, ...). Small models, so that each seed is a few KB.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kiln/communicator.hpp"
#include "kiln/data.hpp"
#include "kiln/io.hpp"
#include "kiln/safetensors.hpp"
#include "kiln/trainer.hpp"
#include "runtime/hf_llama_config.hpp"
#include "runtime/model_json.hpp"
#include "tests/common/hf_tokenizer_json.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace fs = std::filesystem;

namespace {

fs::path g_out;

void seed(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(g_out / target);
  std::ofstream(g_out / target / name, std::ios::binary) << bytes;
}

kiln::ModelConfig small(kiln::ModelKind kind = kiln::ModelKind::decoder) {
  kiln::ModelConfig c;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_embd = 8;
  c.vocab_size = 11;
  c.max_seq_len = 4;
  c.kind = kind;
  if (kind == kiln::ModelKind::encoder) c.mask_token_id = 10;
  return c.resolved();
}

kiln::TrainConfig train(bool zero1 = false) {
  kiln::TrainConfig t;
  t.batch = 1;
  t.seq_len = 4;
  t.zero1 = zero1;
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: kiln_fuzz_seeds OUTDIR\n");
    return 2;
  }
  g_out = argv[1];
  try {
    const fs::path tmp = g_out / "work";
    fs::create_directories(tmp);
    auto backend = kiln::make_cpu_backend(kiln::DType::f32, 1);
    // Whole checkpoints, a decoder and an encoder.
    for (auto kind : {kiln::ModelKind::decoder, kiln::ModelKind::encoder}) {
      kiln::Trainer t(small(kind), train(), backend, 1);
      t.save_checkpoint(tmp / "w.ckpt", R"({"epoch":0,"step":0})");
      seed("fuzz_checkpoint", kiln::model_kind_name(kind), kiln::read_file(tmp / "w.ckpt"));
    }
    // A sharded checkpoint of two ranks: index, shard 0, shard 1.
    kiln::CommOptions o;
    kiln::run_in_process(2, kiln::BackendKind::cpu, o, [&](kiln::Communicator& c) {
      kiln::Trainer t(small(), train(true), kiln::make_cpu_backend(kiln::DType::f32, 1), 1, &c);
      t.save_checkpoint(tmp / "z.ckpt", "{}");
    });
    const std::string z = (tmp / "z.ckpt").string();
    seed("fuzz_sharded_checkpoint", "zero1",
         kiln_fuzz::join({kiln::read_file(z),
                          kiln::read_file(z + ".step00000000.rank00000-of-00002"),
                          kiln::read_file(z + ".step00000000.rank00001-of-00002")}));
    // Token shards of both widths.
    std::vector<int32_t> tokens{1, 2, 3, 0, 5, 4, 3, 2};
    kiln::write_token_shard(tmp / "a.bin", tokens, 6, 0);
    seed("fuzz_token_shard", "u16", kiln::read_file(tmp / "a.bin"));
    tokens.push_back(70000);
    kiln::write_token_shard(tmp / "b.bin", tokens, 70001);
    seed("fuzz_token_shard", "u32", kiln::read_file(tmp / "b.bin"));
    // safetensors: every float dtype, a scalar, metadata.
    const std::vector<float> v{1, -2, 3.5f, 0, 1e-3f, 7};
    std::vector<kiln::SafetensorsEntry> st{{"a", kiln::SafeDtype::F32, {2, 3}, v, {}},
                                           {"b", kiln::SafeDtype::F16, {6}, v, {}},
                                           {"c", kiln::SafeDtype::BF16, {3, 2}, v, {}},
                                           {"d", kiln::SafeDtype::F64, {1}, {v.data(), 1}, {}}};
    kiln::write_safetensors(tmp / "m.safetensors", st, {{"format", "pt"}});
    seed("fuzz_safetensors", "dtypes", kiln::read_file(tmp / "m.safetensors"));
    // GPT-2 vocabulary files and texts for the encoder.
    const auto [enc, bpe] = kiln_fuzz::synthetic_vocab();
    seed("fuzz_gpt2_vocab", "synthetic", kiln_fuzz::join({enc, bpe}));
    seed("fuzz_gpt2_encode", "text", "the thing and the rings, 123 times: it's 'ok'\n\n  x");
    seed("fuzz_gpt2_encode", "utf8",
         "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 \xFF\xFE");
    seed("fuzz_gpt2_encode", "special", "<|endoftext|>the<|endoftext|>");
    // Hugging Face tokenizer.json files (Llama 3's, Qwen2's and SmolLM2's pre-tokenizers) with
    // texts.
    {
      namespace t = kiln::test;
      const std::string text = "The thing's 12345 caf\xC3\xA9 \xE6\x97\xA5 <|endoftext|>\n\n  \xFF";
      t::HfSpec llama;
      llama.merges = {{"t", "h"}, {"th", "e"}, {"a", "n"}, {"an", "d"}, {" ", "t"}};
      llama.added = {{"<|endoftext|>", true}, {"<|begin_of_text|>", true}};
      llama.ignore_merges = true;
      llama.pre_tokenizer = {
          {"type", "Sequence"},
          {"pretokenizers", {t::split_step(t::kLlama3Regex), t::byte_level_step(false)}}};
      seed("fuzz_hf_tokenizer", "llama3", kiln_fuzz::join({t::make_hf_json(llama).dump(), text}));
      t::HfSpec qwen = llama;
      qwen.ignore_merges = false;
      qwen.array_merges = true;
      qwen.pre_tokenizer = {
          {"type", "Sequence"},
          {"pretokenizers", {t::split_step(t::kQwen2Regex), t::byte_level_step(false)}}};
      seed("fuzz_hf_tokenizer", "qwen2", kiln_fuzz::join({t::make_hf_json(qwen).dump(), text}));
      t::HfSpec smol = llama;
      smol.ignore_merges = false;
      smol.added.clear();
      smol.leading = {{"<|endoftext|>", true}};
      smol.pre_tokenizer = {
          {"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Digits"}, {"individual_digits", true}}, t::byte_level_step(true)}}};
      seed("fuzz_hf_tokenizer", "smollm2", kiln_fuzz::join({t::make_hf_json(smol).dump(), text}));
    }
    // Configs as checkpoint metadata holds them.
    for (auto kind : {kiln::ModelKind::decoder, kiln::ModelKind::encoder}) {
      const nlohmann::json j{{"model", kiln::impl::model_to_json(small(kind))},
                             {"train", kiln::impl::train_to_json(train())}};
      seed("fuzz_model_json", kiln::model_kind_name(kind), j.dump());
    }
    // Hugging Face configs as the exporter writes them: Llama with Llama 3 scaling, Qwen2.
    for (const char* preset : {"llama-tiny", "qwen2.5-0.5b"}) {
      kiln::HfExportOptions hf_options;
      hf_options.bos_token_id = 1;
      hf_options.eos_token_id = 2;
      seed("fuzz_hf_llama_config", preset,
           kiln::impl::hf_llama_config_to_json(kiln::model_preset(preset, 11), hf_options).dump(1));
    }
    fs::remove_all(tmp);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
