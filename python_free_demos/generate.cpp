// generate: samples text from a trained model with a KV cache.
//
//   generate --checkpoint ckpt/latest.ckpt --prompt "The meaning of life" --length 200
//   generate --safetensors gpt2/model.safetensors --tokenizer gpt2 --prompt "Hello" --top-k 40
//   generate --hf SmolLM2-135M/ --prompt "Once upon a time"
//   generate --hf exported/ --prompt-ids 1,2,3 --logits-out kiln_logits.json   (hf_crosscheck.py)
//
// The model comes from a kiln checkpoint (train_gpt --checkpoint-dir), a Hugging Face GPT-2
// `model.safetensors` (its shapes give the sizes; the head count comes from config.json beside it,
// or --heads) or a Hugging Face Llama / Qwen2 folder (its config, weights and tokenizer.json).
// Text streams to stdout as it is generated. --logits-out writes the logits of every prompt
// position instead of sampling, for comparison with another implementation.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_checks.hpp"
#include "demo_options.hpp"
#include "kiln/kiln.hpp"

namespace fs = std::filesystem;

namespace {

struct Options {
  std::string checkpoint, safetensors, hf;
  bool add_bos = false, no_add_bos = false;  // --hf: override tokenizer_config.json's choice
  int64_t max_seq_len = 0;
  bool print_ids = false;
  std::string prompt_ids, logits_out;
  int64_t heads = 0;
  std::string prompt = "\n";
  int64_t length = 200;
  demo_cli::Sampling sampling;
  uint64_t seed = 42;
  std::string tokenizer = "auto", vocab_dir = "data/gpt2";
  std::string backend = "auto";
  int device = 0, threads = 0;
  bool ignore_eot = false;
};

std::shared_ptr<kiln::Backend> choose_backend(const Options& o) {
  std::string why;
  auto backend = kiln::make_backend(o.backend, o.device, o.threads, &why);
  if (!why.empty()) {
    std::fprintf(stderr, "backend: no CUDA device (%s); generating on the cpu backend\n",
                 why.c_str());
  }
  return backend;
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::string item;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] != ',' && text[i] != ' ') {
      item += text[i];
      continue;
    }
    if (item.empty()) continue;
    std::size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
    }
    if (used != item.size() || v < 0 || v > kiln::limits::kMaxVocab) {
      throw kiln::Error(kiln::Status::invalid_argument,
                        "--prompt-ids: '" + item + "' is not a token id");
    }
    ids.push_back(static_cast<int32_t>(v));
    item.clear();
  }
  if (ids.empty()) throw kiln::Error(kiln::Status::invalid_argument, "--prompt-ids: no ids");
  return ids;
}

// The logits after every prompt position (fed one at a time through the cache), as JSON.
void write_logits(kiln::Generator& gen, const std::vector<int32_t>& ids, int64_t vocab,
                  const std::string& path) {
  nlohmann::json rows = nlohmann::json::array();
  for (const int32_t id : ids) {
    const int32_t one[1] = {id};
    const std::vector<float> logits = gen.feed(one);
    rows.push_back(std::vector<float>(logits.begin(), logits.begin() + vocab));
  }
  const nlohmann::json j{{"ids", ids}, {"vocab_size", vocab}, {"logits", rows}};
  kiln::write_file_atomically(path, j.dump() + "\n");
}

int run(const Options& o) {
  kiln::ModelConfig model;
  std::vector<float> weights;
  std::unique_ptr<kiln::Tokenizer> tok;
  if (!o.checkpoint.empty()) {
    model = kiln::read_checkpoint(o.checkpoint, &weights).model;
  } else if (!o.hf.empty()) {
    // Ids and logits alone need no tokenizer (hf_crosscheck.py's folders have none).
    kiln::HfFolder f = kiln::load_hf_folder(o.hf, o.max_seq_len,
                                            o.add_bos      ? 1
                                            : o.no_add_bos ? 0
                                                           : -1);
    model = f.model;
    weights = std::move(f.params);
    tok = std::move(f.tokenizer);
  } else {
    model = kiln::import_hf_gpt2(o.safetensors, o.heads, &weights);
  }
  if (model.kind != kiln::ModelKind::decoder) {
    throw kiln::Error(kiln::Status::invalid_argument,
                      "the model is an encoder; generation needs a decoder");
  }
  std::string kind = "the folder's";
  const bool text = o.prompt_ids.empty() || o.logits_out.empty();
  if (!tok && text) {
    kind = demo_cli::tokenizer_kind(o.tokenizer, model.vocab_size);
    tok = kiln::make_tokenizer(kind, o.vocab_dir);
  }
  if (tok && tok->vocab_size() > model.vocab_size) {
    throw kiln::Error(kiln::Status::invalid_argument,
                      "the " + kind + " tokenizer has " + std::to_string(tok->vocab_size()) +
                          " tokens, more than the model's " + std::to_string(model.vocab_size));
  }
  auto backend = choose_backend(o);
  std::fprintf(stderr, "model: %s, %.2fM parameters, on %s\n", model.describe().c_str(),
               static_cast<double>(model.num_parameters()) / 1e6, backend->description().c_str());
  kiln::Generator gen(model, backend, weights);

  const std::vector<int32_t> prompt =
      o.prompt_ids.empty() ? demo_cli::prompt_tokens(*tok, o.prompt) : parse_ids(o.prompt_ids);
  if (o.print_ids) {
    std::string line = "prompt ids:";
    for (const int32_t id : prompt)
      line += " " + std::to_string(id);
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  if (!o.logits_out.empty()) {
    write_logits(gen, prompt, model.vocab_size, o.logits_out);
    std::fprintf(stderr, "logits of %zu positions -> %s\n", prompt.size(), o.logits_out.c_str());
    return 0;
  }
  const kiln::SamplingConfig sc = o.sampling.config(o.seed);
  if (o.prompt_ids.empty()) std::fputs(o.prompt.c_str(), stdout);
  std::string pending;  // bytes that may end inside a UTF-8 character
  int64_t count = 0;
  const auto start = std::chrono::steady_clock::now();
  gen.generate(prompt, o.length, sc, [&](int32_t t) {
    ++count;
    if (t == tok->eot_token()) {
      if (!o.ignore_eot) return false;
      // The end of one document: mark it and go on with the next.
      std::fwrite(pending.data(), 1, pending.size(), stdout);
      pending.clear();
      std::fputs("\n--\n", stdout);
      return true;
    }
    // Rows past the tokenizer's vocabulary (Qwen2.5 pads its embedding) print nothing.
    if (t >= tok->vocab_size() || tok->is_special(t)) return true;
    const int32_t one[1] = {t};
    pending += tok->decode(one);
    const std::size_t n = kiln::utf8_complete_prefix(pending);
    std::fwrite(pending.data(), 1, n, stdout);
    std::fflush(stdout);
    pending.erase(0, n);
    return true;
  });
  std::fwrite(pending.data(), 1, pending.size(), stdout);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("\n");
  std::fflush(stdout);
  std::fprintf(stderr, "%lld tokens in %.2f s (%.1f tokens/s)\n", static_cast<long long>(count), s,
               static_cast<double>(count) / s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "generate: sample text from a kiln checkpoint or a Hugging Face GPT-2 / Llama model"};
  app.get_formatter()->column_width(30);
  auto* ck = app.add_option("--checkpoint", o.checkpoint, "A kiln checkpoint (train_gpt)");
  auto* st = app.add_option("--safetensors", o.safetensors,
                            "A Hugging Face GPT-2 model.safetensors (config.json beside it gives "
                            "the head count)");
  auto* hf = app.add_option("--hf", o.hf,
                            "A Hugging Face Llama / Qwen2 folder (config.json, weights, and "
                            "tokenizer.json when it has one)");
  ck->excludes(st);
  ck->excludes(hf);
  st->excludes(ck);
  st->excludes(hf);
  hf->excludes(ck);
  hf->excludes(st);
  auto* bos = app.add_flag("--add-bos", o.add_bos,
                           "--hf: start the prompt with the BOS token (default: as the folder's "
                           "tokenizer_config.json says, add_bos_token)");
  auto* no_bos = app.add_flag("--no-add-bos", o.no_add_bos, "--hf: no BOS token");
  bos->excludes(no_bos);
  no_bos->excludes(bos);
  app.add_option("--max-seq-len", o.max_seq_len,
                 "--hf: positions the generator plans for (default: the config's, at most 4096)")
      ->check(demo_cli::integer(1, kiln::limits::kMaxSeqLen));
  app.add_flag("--print-ids", o.print_ids, "Print the prompt's token ids (stderr)");
  app.add_option("--prompt-ids", o.prompt_ids, "Token ids instead of --prompt, e.g. 1,2,3");
  app.add_option("--logits-out", o.logits_out,
                 "Write the logits after every prompt position (JSON) instead of sampling");
  app.add_option("--heads", o.heads, "Attention heads of a safetensors model without config.json")
      ->check(demo_cli::integer(1, kiln::limits::kMaxHeads));
  app.add_option("--prompt", o.prompt, "Text to continue");
  app.add_option("--length", o.length, "Tokens to generate")
      ->capture_default_str()
      ->check(demo_cli::integer(0, kiln::limits::kMaxSeqLen));
  demo_cli::add_sampling_options(app, o.sampling);
  app.add_flag("--ignore-eot", o.ignore_eot,
               "Go on past the end-of-text token (printed as a line \"--\") instead of stopping");
  app.add_option("--seed", o.seed, "Seed of the draws (same seed, same text)")
      ->capture_default_str()
      ->check(demo_cli::unsigned64());
  app.add_option("--tokenizer", o.tokenizer,
                 "auto (byte for vocabularies <= 257, else gpt2), byte, gpt2")
      ->check(CLI::IsMember({"auto", "byte", "gpt2"}))
      ->capture_default_str();
  demo_cli::add_vocab_dir_option(app, o.vocab_dir);
  demo_cli::add_backend_option(app, o.backend);
  app.add_option("--device", o.device, "CUDA device ordinal")
      ->capture_default_str()
      ->check(demo_cli::integer(0, 4095));
  demo_cli::add_threads_option(app, o.threads);
  app.final_callback([&] {
    using demo_cli::refuse_given;
    refuse_given(app, "--device", o.backend == "cpu", "with --backend cpu");
    refuse_given(app, "--threads", o.backend == "cuda", "with --backend cuda");
    refuse_given(app, "--heads", !o.checkpoint.empty(),
                 "with --checkpoint (the checkpoint gives the head count)");
    refuse_given(app, "--heads", !o.hf.empty(), "with --hf (config.json gives the head count)");
    refuse_given(app, "--add-bos", o.hf.empty(), "without --hf");
    refuse_given(app, "--no-add-bos", o.hf.empty(), "without --hf");
    refuse_given(app, "--max-seq-len", o.hf.empty(), "without --hf");
  });
  CLI11_PARSE(app, argc, argv);
  if (o.checkpoint.empty() && o.safetensors.empty() && o.hf.empty()) {
    std::fprintf(stderr, "generate: give --checkpoint, --safetensors or --hf (see --help)\n");
    return 2;
  }
  try {
    return run(o);
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "generate: %s\n", e.message().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
  }
  return 1;
}
