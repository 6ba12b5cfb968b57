#include "kiln/limits.hpp"

#include <algorithm>

#include "errors/check.hpp"
#include "kiln/model.hpp"

namespace kiln {

int64_t checked_mul(int64_t a, int64_t b, std::string_view what) {
  int64_t r = 0;
  KILN_CHECK_ARG(!__builtin_mul_overflow(a, b, &r), what, " overflows (", a, " x ", b, ")");
  return r;
}

int64_t checked_add(int64_t a, int64_t b, std::string_view what) {
  int64_t r = 0;
  KILN_CHECK_ARG(!__builtin_add_overflow(a, b, &r), what, " overflows (", a, " + ", b, ")");
  return r;
}

namespace {

void check_dim(const char* field, int64_t value, int64_t cap) {
  KILN_CHECK_ARG(value <= cap, "model: ", field, " ", value, " exceeds kiln's limit ", cap);
}

// Elements of one parameter tensor rounded up to the layout's alignment.
int64_t aligned(int64_t n) {
  const int64_t a = ParamLayout::kAlign;
  return checked_add(n, a - 1, "model: parameter count") / a * a;
}

}  // namespace

void check_model_limits(const ModelConfig& m) {
  check_dim("n_layer", m.n_layer, limits::kMaxLayers);
  check_dim("n_head", m.n_head, limits::kMaxHeads);
  check_dim("n_embd", m.n_embd, limits::kMaxChannels);
  check_dim("vocab_size", m.vocab_size, limits::kMaxVocab);
  check_dim("padded_vocab", m.padded_vocab, limits::kMaxVocab);
  check_dim("max_seq_len", m.max_seq_len, limits::kMaxSeqLen);
  check_dim("n_kv_head", m.n_kv_head, limits::kMaxHeads);
  check_dim("intermediate_size", m.intermediate_size, limits::kMaxIntermediate);
  // The flat buffer as ParamLayout lays it out, every part present (an upper bound for any set
  // of parts): embeddings, then per layer 2 norms, QKV (at most 3C wide: kv heads <= heads),
  // projection, the MLP's up (F = max(4C, 2I) wide) and down with biases; the final norm and an
  // untied head.
  const char* what = "model: parameter count";
  const int64_t C = m.n_embd, Vp = std::max(m.vocab_size, m.padded_vocab);
  const int64_t CC = checked_mul(C, C, what);
  const int64_t F = std::max(4 * C, checked_mul(2, m.intermediate_size, what));
  const int64_t FC = checked_mul(F, C, what);
  int64_t layer = 0;
  for (int64_t n : {C, C, 3 * CC, 3 * C, CC, C, C, C, FC, F, FC, C})
    layer = checked_add(layer, aligned(n), what);
  const int64_t vocab = aligned(checked_mul(Vp, C, what));
  int64_t total = checked_add(vocab, aligned(checked_mul(m.max_seq_len, C, what)), what);
  total = checked_add(total, checked_mul(m.n_layer, layer, what), what);
  total = checked_add(total, 2 * aligned(C), what);
  if (!m.tied_embeddings) total = checked_add(total, vocab, what);
  KILN_CHECK_ARG(total <= limits::kMaxParameters, "model: ", total,
                 " parameter elements exceed kiln's limit ", limits::kMaxParameters, " (",
                 m.describe(), ")");
}

void check_training_limits(const ModelConfig& m, int64_t batch, int64_t seq_len) {
  const char* what = "train: activation size";
  const int64_t C = m.n_embd, Vp = std::max(m.vocab_size, m.padded_vocab);
  const int64_t BT = checked_mul(batch, seq_len, what);
  // Per position: about 16 C values (SwiGLU: and 3 I) and a few statistics per layer, the logits
  // and some rows of C for the final norm and the gradients (runtime/plan.cpp); 24 C + 3 I + 8
  // per layer bounds them.
  const int64_t per_layer = checked_add(
      checked_add(checked_mul(24, C, what), checked_mul(3, m.intermediate_size, what), what),
      8 + m.n_head, what);
  int64_t per_position = checked_mul(m.n_layer, per_layer, what);
  per_position = checked_add(per_position, checked_add(Vp, checked_mul(8, C, what), what), what);
  const int64_t total = checked_mul(BT, per_position, what);
  KILN_CHECK_ARG(total <= limits::kMaxActivations, "train: batch ", batch, " x seq_len ", seq_len,
                 " needs about ", total, " activation elements, beyond kiln's limit ",
                 limits::kMaxActivations);
}

void check_generation_limits(const ModelConfig& m) {
  const char* what = "generation: cache size";
  const int64_t C = m.n_embd, Vp = std::max(m.vocab_size, m.padded_vocab);
  // The KV cache (at most 2 C per layer and position), the new rows' q/k/v (3 C) and one
  // position's activations (SwiGLU: 3 I more) per position; 3 C per layer bounds the cache.
  const int64_t per_position = checked_add(
      checked_mul(m.n_layer, checked_mul(3, C, what), what),
      checked_add(Vp,
                  checked_add(checked_add(checked_mul(16, C, what),
                                          checked_mul(3, m.intermediate_size, what), what),
                              m.n_head + 8, what),
                  what),
      what);
  const int64_t total = checked_mul(m.max_seq_len, per_position, what);
  KILN_CHECK_ARG(total <= limits::kMaxActivations, "generation: max_seq_len ", m.max_seq_len,
                 " needs about ", total, " cache and activation elements, beyond kiln's limit ",
                 limits::kMaxActivations);
}

void check_thread_count(int64_t threads, std::string_view who) {
  KILN_CHECK_ARG(threads >= 0 && threads <= limits::kMaxThreads, who, ": threads must lie in [0, ",
                 limits::kMaxThreads, "] (got ", threads, "; 0: the hardware's concurrency)");
}

}  // namespace kiln
