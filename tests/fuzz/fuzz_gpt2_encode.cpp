// The GPT-2 and byte tokenizers' encoders on any bytes: every text round-trips, every id is in
// range and never special. The vocabulary is the synthetic one of fuzz_common.hpp.
#include <memory>
#include <string_view>

#include "kiln/tokenizer.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static const std::unique_ptr<kiln::Tokenizer> gpt2 = [] {
    const auto [enc, bpe] = kiln_fuzz::synthetic_vocab();
    return std::make_unique<kiln::Gpt2Tokenizer>(kiln_fuzz::put("encoder.json", enc),
                                                 kiln_fuzz::put("vocab.bpe", bpe));
  }();
  static const kiln::ByteTokenizer bytes;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const kiln::Tokenizer* tok : {static_cast<const kiln::Tokenizer*>(gpt2.get()),
                                     static_cast<const kiln::Tokenizer*>(&bytes)}) {
    const auto ids = tok->encode(text);
    for (int32_t id : ids) {
      if (id < 0 || id >= tok->vocab_size() || tok->is_special(id)) __builtin_trap();
    }
    if (tok->decode(ids) != text) __builtin_trap();
  }
  kiln::Gpt2Tokenizer::split(text);
  kiln::utf8_complete_prefix(text);
  return 0;
}
