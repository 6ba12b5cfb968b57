// kiln::Generator: autoregressive sampling from a decoder with a KV cache (batch 1).
//
// The generator keeps, per layer, the keys and values of every position fed so far (the NKV
// key/value heads only: a GQA model's cache is NH / NKV times smaller than its queries would
// need); feeding n new tokens runs the model on those n rows only (rotary positions from the
// context length on), their queries attending to every cached key.
// Its buffers (the cache for max_seq_len positions and the activations of up to max_seq_len rows)
// are planned and allocated once, at construction.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "kiln/backend.hpp"
#include "kiln/export.h"
#include "kiln/model.hpp"
#include "kiln/plan.hpp"

namespace kiln {

class Trainer;

struct SamplingConfig {
  double temperature = 1.0;  // logits / temperature; 0 picks the most likely token (greedy)
  int64_t top_k = 0;         // > 0: only the k most likely tokens
  double top_p = 1.0;        // < 1: only the smallest set of tokens whose probability >= top_p
  uint64_t seed = 42;        // the draws are a function of the seed and the token's index

  // Throws kiln::Error(invalid_argument): negative temperature or top_k, top_p outside (0, 1].
  void validate() const;
};

// The token `logits` (V floats) give under `config` for a uniform draw `u` in [0, 1): the
// inverse of the cumulative distribution of the tempered, top-k / top-p truncated softmax
// (ties broken by the lower id). Deterministic.
KILN_API int32_t sample_token(std::span<const float> logits, const SamplingConfig& config,
                              double u);

class KILN_API Generator {
 public:
  // Samples from a trainer's current weights (read at every call; the trainer must outlive the
  // generator), on the trainer's backend.
  explicit Generator(const Trainer& trainer);
  // Owns a copy of `params` (ParamLayout(model).total() floats: a checkpoint's master weights or
  // an imported Hugging Face model).
  Generator(const ModelConfig& model, std::shared_ptr<Backend> backend,
            std::span<const float> params);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  const ModelConfig& model() const;
  const MemoryPlan& plan() const;
  Backend& backend() const;

  // Forgets the context.
  void reset();
  // Positions in the context (the cache).
  int64_t context_length() const;
  // Appends `tokens` to the context and returns the logits (V floats) that follow the last one.
  // Throws kiln::Error: invalid_argument when tokens is empty or the context would exceed
  // max_seq_len, data_error for an id outside [0, vocab_size) (the context is then unchanged).
  std::vector<float> feed(std::span<const int32_t> tokens);

  // Resets the context, feeds `prompt` (its last max_seq_len - 1 tokens if longer), then samples
  // up to `max_new_tokens` tokens, each fed back. When the context is full it restarts from the
  // last max_seq_len / 2 tokens (a sliding window). `on_token` sees each new token and may stop
  // generation by returning false. Returns the new tokens. An empty prompt is invalid_argument.
  std::vector<int32_t> generate(std::span<const int32_t> prompt, int64_t max_new_tokens,
                                const SamplingConfig& config,
                                const std::function<bool(int32_t)>& on_token = {});

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace kiln
