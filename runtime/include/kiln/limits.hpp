// The sizes kiln accepts, in one place. A model, a training shape or a thread count beyond these
// is refused with kiln::Error(invalid_argument) before anything is allocated or built, whether it
// came from options, code or a file (checkpoint metadata, Hugging Face config): a hostile or
// corrupt file cannot make kiln allocate without bound, loop for hours or overflow an integer.
// The caps sit far above every real model (GPT-3 175B: L 96, C 12288, 1.75e11 parameters) and
// low enough that every size kiln derives from them (parameter offsets, activation and cache
// element counts, byte counts) fits an int64 with room to spare.
#pragma once

#include <cstdint>
#include <string_view>

#include "kiln/export.h"

namespace kiln {

struct ModelConfig;

namespace limits {
inline constexpr int64_t kMaxLayers = int64_t{1} << 14;        // n_layer
inline constexpr int64_t kMaxHeads = int64_t{1} << 12;         // n_head
inline constexpr int64_t kMaxChannels = int64_t{1} << 18;      // n_embd
inline constexpr int64_t kMaxIntermediate = int64_t{1} << 24;  // intermediate_size (SwiGLU)
inline constexpr int64_t kMaxSeqLen = int64_t{1} << 24;        // max_seq_len, seq_len
inline constexpr int64_t kMaxVocab = (int64_t{1} << 31) - 1;   // token ids are int32
// Parameter elements of the flat buffer (alignment gaps included): 2^40, 4 TiB in fp32.
inline constexpr int64_t kMaxParameters = int64_t{1} << 40;
// Elements of one rank's activations (training) or of the KV cache and activations (generation).
inline constexpr int64_t kMaxActivations = int64_t{1} << 42;
// Threads of the cpu backend, and in-process ranks.
inline constexpr int kMaxThreads = 1024;
}  // namespace limits

// a * b and a + b of non-negative sizes; throws kiln::Error(invalid_argument) "<what> overflows"
// when the result does not fit an int64.
KILN_API int64_t checked_mul(int64_t a, int64_t b, std::string_view what);
KILN_API int64_t checked_add(int64_t a, int64_t b, std::string_view what);

// Every dimension within its cap and the parameter total (computed without overflow) within
// kMaxParameters; the message names the field, its value and the cap. ModelConfig::validate()
// calls it.
KILN_API void check_model_limits(const ModelConfig& model);
// One rank's activations for (batch, seq_len) within kMaxActivations.
KILN_API void check_training_limits(const ModelConfig& model, int64_t batch, int64_t seq_len);
// A generator's KV cache and activations (max_seq_len positions) within kMaxActivations.
KILN_API void check_generation_limits(const ModelConfig& model);
// A thread count in [0, kMaxThreads] (0: the hardware's), else throws naming `who`.
KILN_API void check_thread_count(int64_t threads, std::string_view who);

}  // namespace kiln
